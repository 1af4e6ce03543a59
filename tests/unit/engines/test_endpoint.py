"""The endpoint engine against a small local HTTP server answering faults on cue (no Ray, no vLLM):
429 with Retry-After, 5xx, slow answers (timeouts), 401, 404, a 400 on the schema, a server that
returns fewer choices than `n`, the in-flight limit, a sustained failure rate, the key's path.
"""

import asyncio
import time

import pytest
from support.endpoint_server import Cue, FakeEndpoint, error

from prefgen.config import EndpointModel, SamplingConfig, parse_config, ConfigError
from prefgen.engines.endpoint import EndpointEngine, EndpointStopped
from prefgen.engines.endpoint_rules import backoff_s, classify, redact, retry_after_s
from prefgen.engines.engine import Request
from prefgen.output.storage import storage
from support.paths import DATA, REPO

KEY = "sk-planted-0123456789abcdef"
SCHEMA = {"type": "object", "properties": {"rating": {"type": "integer"}}, "required": ["rating"]}


def spec(url, **kw):
    base = dict(kind="endpoint", base_url=url, model="judge-model", timeout_s=5, retries=3, backoff_s=0.01)
    return EndpointModel(**(base | kw))


def req(n=1, schema=None, text="hi"):
    return Request([{"role": "user", "content": text}], SamplingConfig(max_tokens=16), n, schema)


def chat(engine, requests, *more):
    """The engine's answers to one call (or to several, one after another, in one event loop)."""
    async def main():
        try:
            return [await engine.chat(r) for r in (requests, *more)]
        finally:
            await engine.aclose()
    out = asyncio.run(main())
    return out if more else out[0]


def test_429_is_retried_after_the_servers_retry_after():
    with FakeEndpoint() as srv:
        srv.script = [Cue(429, error("slow down"), {"Retry-After": "1"})]
        engine = EndpointEngine(spec(srv.url), "api")
        started = time.monotonic()
        (result,) = chat(engine, [req()])
        waited = time.monotonic() - started
    assert result.texts == ["ok 0"] and result.failed is None
    assert waited >= 0.9  # the backoff alone (0.01 s) would not wait
    assert engine.usage()["retries"] == 1 and engine.usage()["requests"] == 2
    assert engine.usage()["http_errors"] == {"429": 1}


def test_5xx_is_retried_then_the_answer_counts_tokens():
    with FakeEndpoint() as srv:
        srv.script = [Cue(500, "oops"), Cue(503, error("overloaded"))]
        engine = EndpointEngine(spec(srv.url), "api")
        (result,) = chat(engine, [req(n=2)])
    assert result.texts == ["ok 0", "ok 1"] and result.tokens == 6
    u = engine.usage()
    assert (u["requests"], u["retries"], u["failed"]) == (3, 2, 0)
    assert (u["prompt_tokens"], u["completion_tokens"]) == (10, 6)


def test_a_timeout_is_retried():
    with FakeEndpoint() as srv:
        srv.script = [Cue(delay=1.5)]
        engine = EndpointEngine(spec(srv.url, timeout_s=0.3), "api")
        (result,) = chat(engine, [req()])
    assert result.texts == ["ok 0"]
    assert engine.usage()["retries"] == 1 and engine.usage()["http_errors"] == {"timeout": 1}


def test_a_request_that_still_fails_gives_its_status_not_an_exception():
    with FakeEndpoint(default=Cue(502, error("bad gateway"))) as srv:
        engine = EndpointEngine(spec(srv.url, retries=2), "api")
        (result,) = chat(engine, [req()])
    assert result.failed and "HTTP 502 after 3 attempts" in result.failed and "bad gateway" in result.failed
    assert result.texts == [] and result.error is None
    assert engine.usage()["failed"] == 1 and engine.usage()["requests"] == 3


@pytest.mark.parametrize("status, words", [(401, "API key was refused"), (403, "may not use"), (404, "unknown model")])
def test_errors_that_fail_every_row_stop_the_endpoint(status, words, monkeypatch):
    monkeypatch.setenv("PREFGEN_TEST_KEY", KEY)
    with FakeEndpoint(default=Cue(status, error(f"no: {KEY} is wrong, {KEY[:10]}..."))) as srv:
        engine = EndpointEngine(spec(srv.url, api_key_env="PREFGEN_TEST_KEY"), "api")
        with pytest.raises(EndpointStopped) as stopped:
            chat(engine, [req(), req()])
        sent = len(srv.bodies)
        with pytest.raises(EndpointStopped):  # later calls stop at once, without a request
            chat(engine, [req()])
        assert len(srv.bodies) == sent <= 2
    message = str(stopped.value)
    assert f"HTTP {status}" in message and words in message and "endpoint api (judge-model at" in message
    assert KEY not in message and KEY[:8] not in message  # the server's echo of the key is redacted


def test_a_refused_schema_falls_back_to_json_object_then_to_a_plain_prompt():
    with FakeEndpoint() as srv:
        srv.script = [Cue(400, error("response_format json_schema is not supported")),
                      Cue(400, error("'json_object' is not supported by this model"))]
        engine = EndpointEngine(spec(srv.url), "api")
        (first,), (second,) = chat(engine, [req(schema=SCHEMA)], [req(schema=SCHEMA)])
    assert first.texts == ["ok 0"] and second.texts == ["ok 0"]
    kinds = [b.get("response_format", {}).get("type") for b in srv.bodies]
    assert kinds == ["json_schema", "json_object", None, None]  # the fallback holds for later requests
    assert srv.bodies[0]["response_format"]["json_schema"]["schema"] == SCHEMA
    assert engine.usage()["schema_fallbacks"] == 2 and engine.usage()["retries"] == 0


def test_a_400_without_a_schema_fails_the_request_only():
    with FakeEndpoint(default=Cue(400, error("unknown parameter"))) as srv:
        engine = EndpointEngine(spec(srv.url), "api")
        (result,) = chat(engine, [req()])
    assert result.failed and "HTTP 400" in result.failed and len(srv.bodies) == 1


def test_a_prompt_the_server_finds_too_long_is_a_length_error():
    msg = "This model's maximum context length is 2048 tokens. However, you requested 4000 tokens"
    with FakeEndpoint(default=Cue(400, error(msg))) as srv:
        engine = EndpointEngine(spec(srv.url), "api")
        (result,) = chat(engine, [req(schema=SCHEMA)])
    assert result.error and "maximum context length" in result.error and result.failed is None


def test_fewer_choices_than_n_are_topped_up():
    with FakeEndpoint(default=Cue(choices=1)) as srv:
        engine = EndpointEngine(spec(srv.url), "api")
        (result,) = chat(engine, [req(n=3)])
    assert len(result.texts) == 3 and [b["n"] for b in srv.bodies] == [3, 2, 1]
    assert engine.usage()["top_ups"] == 2


def test_the_in_flight_limit_holds_across_batches():
    with FakeEndpoint(default=Cue(delay=0.2)) as srv:
        engine = EndpointEngine(spec(srv.url, max_in_flight=3), "api")

        async def main():
            try:  # two batches' calls at once, as the stage's batches in flight make them
                return await asyncio.gather(engine.chat([req() for _ in range(6)]), engine.chat([req() for _ in range(6)]))
            finally:
                await engine.aclose()

        results = asyncio.run(main())
    assert sum(len(r) for r in results) == 12
    assert srv.max_open == 3


def test_a_sustained_failure_rate_stops_the_endpoint():
    with FakeEndpoint(default=Cue(422, error("cannot do that"))) as srv:
        engine = EndpointEngine(spec(srv.url, max_in_flight=1), "api")
        with pytest.raises(EndpointStopped, match="11 of the last 11 requests failed"):
            chat(engine, [req() for _ in range(30)])
    assert engine.usage()["failed"] == 11  # the 11th failure of 20 is more than half


def test_the_key_comes_from_the_named_variable_or_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("PREFGEN_TEST_KEY", KEY)
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY + "\n")
    with FakeEndpoint() as srv:
        chat(EndpointEngine(spec(srv.url, api_key_env="PREFGEN_TEST_KEY"), "api"), [req()])
        chat(EndpointEngine(spec(srv.url, api_key_file=str(keyfile)), "api"), [req()])
        chat(EndpointEngine(spec(srv.url), "api"), [req()])
    assert srv.auth == [f"Bearer {KEY}", f"Bearer {KEY}", None]


def test_a_missing_key_stops_with_the_variables_name(monkeypatch):
    monkeypatch.delenv("PREFGEN_NO_SUCH_KEY", raising=False)
    engine = EndpointEngine(spec("http://127.0.0.1:9/v1", api_key_env="PREFGEN_NO_SUCH_KEY"), "api")
    with pytest.raises(EndpointStopped, match="PREFGEN_NO_SUCH_KEY .api_key_env. is not set on this worker"):
        chat(engine, [req()])


def test_config_holds_the_variables_name_never_a_key():
    with pytest.raises(ConfigError, match="api_key_env: sk-... is not the name"):
        parse_config({"models": {"api": {"kind": "endpoint", "base_url": "http://x/v1", "model": "m",
                                         "api_key_env": KEY}}, "judge": {"model": "api"}, "generators": [{}]})
    with pytest.raises(ConfigError, match="give one of them"):
        parse_config({"models": {"api": {"kind": "endpoint", "base_url": "http://x/v1", "model": "m",
                                         "api_key_env": "K", "api_key_file": "/k"}}})


def test_rules():
    assert classify(None, "", False) == "retry" and classify(429, "", False) == "retry"
    assert classify(500, "", True) == "retry" and classify(200, "", True) == "ok"
    assert classify(400, "guided_json is not supported", True) == "simplify"
    assert classify(400, "guided_json is not supported", False) == "failed"
    assert classify(401, "", False) == "fatal" and classify(404, "", False) == "fatal"
    assert retry_after_s("2.5") == 2.5 and retry_after_s("junk") is None and retry_after_s(None) is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412500.0) == 10.0
    assert retry_after_s("100000") == 300.0
    assert [backoff_s(a, 1.0, None) for a in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_s(3, 1.0, 0.5) == 0.5
    assert redact(f"bad key {KEY[:8]}***", KEY) == "bad key [key]***"


def test_choices_are_read_in_index_order_with_their_own_finish_reasons():
    """A server may list its choices in any order: each text keeps its own finish reason."""
    body = {"choices": [{"index": i, "message": {"role": "assistant", "content": f"choice {i}"}, "finish_reason": why}
                        for i, why in ((2, "stop"), (0, "length"), (1, "stop"))],
            "usage": {"prompt_tokens": 10, "completion_tokens": 9}}
    with FakeEndpoint(default=Cue(body=body)) as srv:
        (result,) = chat(EndpointEngine(spec(srv.url), "api"), [req(n=3)])
    assert result.texts == ["choice 0", "choice 1", "choice 2"]
    assert result.finish_reasons == ["length", "stop", "stop"] and result.tokens == 9


def test_calibrate_runs_a_judge_on_an_endpoint(tmp_path):

    from prefgen.roles.judge.calibrate import calibrate

    first_wins = '{"A": {"rationale": "fine", "rating": 5}, "B": {"rationale": "poor", "rating": 1}}'
    body = {"choices": [{"index": 0, "message": {"content": first_wins}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 20}}
    pairs = DATA / "labelled_pairs.jsonl"
    with FakeEndpoint(default=Cue(body=body)) as srv:
        cfg = parse_config({"models": {"api": {"kind": "endpoint", "base_url": srv.url, "model": "judge-model"}},
                            "judge": {"model": "api"}, "generators": [{"model": "api"}]})
        fig = calibrate(cfg, str(pairs), limit=3, log=lambda *_: None)
    assert fig["pairs"] == 3 and fig["first_shown_wins"] == 1.0 and fig["orders_compared"] == 3
    assert {b["model"] for b in srv.bodies} == {"judge-model"}
    assert srv.bodies[0]["response_format"]["type"] == "json_schema"
    rating, checks = srv.bodies[:6], srv.bodies[6:]  # 3 pairs x 2 orders, then the pair check's calls
    assert all('"better"' not in b["messages"][-1]["content"] for b in rating)
    # the endpoint answers ratings to the check too: no verdict, asked 3 times for each pair's 2 orders
    assert len(checks) == 3 * 2 * 3 and all('"better"' in b["messages"][-1]["content"] for b in checks)
    assert fig["verified_pairs"] == 0 and fig["verdict_agreement"] is None


def test_a_stage_runs_tasks_on_the_endpoint_with_batches_in_flight(tmp_path):
    import json
    from functools import partial

    from prefgen.roles.generate.task import GenerateTask
    from prefgen.schema import WORK_ROW, to_table
    from prefgen.engines.stage import ModelStage

    def batch(tag):
        return to_table([{"id": f"{tag}{i}", "instruction": "q", "source": "s", "line": i, "candidates": [],
                          "output_tokens": 0, "reject_reason": None, "reject_detail": None} for i in range(3)],
                        WORK_ROW)

    (tmp_path / "_stats").mkdir()
    with FakeEndpoint(default=Cue(delay=0.1)) as srv:
        stage = ModelStage(partial(EndpointEngine, spec(srv.url, max_in_flight=4), "api"),
                           [GenerateTask("g", "judge-model", num_completions=2)], "api", storage(str(tmp_path)), 2)

        async def main():  # as Ray Data calls an async actor: batches at once in one event loop
            return await asyncio.gather(stage(batch("a")), stage(batch("b")))

        outs = asyncio.run(main())
    rows = [r for out in outs for r in out.to_pylist()]
    assert [len(r["candidates"]) for r in rows] == [2] * 6 and srv.max_open == 4
    (stats,) = (tmp_path / "_stats").rglob("*.json")
    usage = json.loads(stats.read_text())["endpoint"]
    assert (usage["requests"], usage["completion_tokens"], usage["failed"]) == (6, 36, 0)


@pytest.mark.parametrize("message, action", [
    # the server's words about the context: the prompt does not fit
    ("This model's maximum context length is 2048 tokens. However, you requested 2100 tokens", "too_long"),
    ("'max_tokens' or 'max_completion_tokens' is too large: 1500. This model's maximum context length is 2048 "
     "tokens and your request has 600 input tokens (1500 > 2048 - 600)", "too_long"),  # vLLM's server
    ("prompt is too long", "too_long"),
    # about max_tokens alone: the request's limit, not the prompt (a config value, not a long row)
    ("max_tokens is too large: 100000. This model supports at most 16384 completion tokens", "failed"),
    ("max_tokens must be at least 1, got 0", "failed"),
    ("Invalid value for 'max_tokens': expected an integer", "failed"),
])
def test_a_400_about_max_tokens_alone_is_not_a_long_prompt(message, action):
    assert classify(400, message, False) == action


def test_every_retried_status_is_in_the_readme():

    from prefgen.engines.endpoint_rules import RETRY_STATUSES

    readme = REPO.joinpath("README.md").read_text()
    rule = next(bullet for bullet in readme.split("\n  - ") if "are retried up to `retries` times" in bullet)
    assert all(str(status) in rule for status in sorted(RETRY_STATUSES)), rule


def test_request_body_sends_a_repetition_penalty_only_when_one_is_set():
    from prefgen.engines.endpoint_rules import request_body

    messages = [{"role": "user", "content": "hi"}]
    plain = request_body("m", messages, SamplingConfig(), 1, None, "none")
    assert "repetition_penalty" not in plain  # 1.0 is off: servers without the field get what they know
    penalised = request_body("m", messages, SamplingConfig(repetition_penalty=1.15), 2, None, "none")
    assert penalised["repetition_penalty"] == 1.15
    assert penalised["max_tokens"] == 256 and penalised["n"] == 2
