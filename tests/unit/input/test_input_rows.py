"""Input rows that provide responses or are conversations: each shape read, each bad value rejected
with its reason and the key or turn it names, ids that follow the content."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefgen.config import InputConfig, PipelineConfig
from prefgen.config.checks import candidates_per_row
from prefgen.input.read import InputError, prompt_text, read_instructions
from prefgen.output.storage import storage

CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name a colour."}]


def read(tmp_path, records, **keys):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return read_instructions(InputConfig(path=str(path), **keys))


def only_row(got):
    assert not got.rejects, got.rejects
    (row,) = got.rows
    return row


def reasons(got):
    return [(r["line"], r["reason"], r["detail"]) for r in got.rejects]


def test_a_list_column_of_strings_and_model_objects_gives_provided_candidates(tmp_path):
    row = only_row(read(tmp_path, [{"instruction": "Name a fruit.",
                                    "completions": ["An apple.", {"model": "m-big", "text": "A banana."}]}],
                        responses=["completions"]))
    cands = row["candidates"]
    assert [(c["text"], c["model"], c["generator"], c["origin"]) for c in cands] == [
        ("An apple.", None, "completions", "provided"), ("A banana.", "m-big", "completions", "provided")]
    assert [c["candidate_id"] for c in cands] == [f"{row['id']}/input.completions/0", f"{row['id']}/input.completions/1"]
    assert row["messages"] == [{"role": "user", "content": "Name a fruit."}]


def test_several_response_columns_each_give_a_candidate(tmp_path):
    row = only_row(read(tmp_path, [{"instruction": "q", "a": "first", "b": {"content": "second", "model": "x"}}],
                        responses=["a", "b"]))
    assert [(c["generator"], c["text"], c["model"]) for c in row["candidates"]] == [("a", "first", None),
                                                                                   ("b", "second", "x")]


def test_trl_preference_rows_in_string_and_message_form():
    got = read_instructions(InputConfig(path="prefgen/data/sample_preferences.jsonl", preference=True))
    assert not got.rejects and len(got.rows) == 3
    first, _, multi = got.rows
    assert [c["text"] for c in first["candidates"]] == ["The capital of France is Paris.",
                                                        "The capital of France is Berlin."]
    assert [c["generator"] for c in multi["candidates"]] == ["chosen", "rejected"]
    assert multi["candidates"][1]["text"] == "Mars is bright green."
    assert [m["role"] for m in multi["messages"]] == ["user", "assistant", "user"]


def test_preference_keys_default_and_can_be_overridden():
    assert (InputConfig(preference=True).field, InputConfig(preference=True).responses) == ("prompt",
                                                                                          ["chosen", "rejected"])
    cfg = InputConfig(preference=True, field="question", responses=["good", "bad"])
    assert (cfg.field, cfg.responses) == ("question", ["good", "bad"])


def test_a_conversation_is_the_prompt_whole(tmp_path):
    row = only_row(read(tmp_path, [{"messages": CONVERSATION}], field="messages"))
    assert row["messages"] == CONVERSATION
    assert row["instruction"] == "System: Be brief.\n\nUser: Hi.\n\nAssistant: Hello!\n\nUser: Name a colour."
    assert prompt_text(row) == "Hi.\n\nName a colour."
    assert prompt_text({"instruction": "plain", "messages": None}) == "plain"


def test_a_one_turn_conversation_reads_like_a_plain_instruction(tmp_path):
    conv = only_row(read(tmp_path, [{"messages": [{"role": "user", "content": "Why?"}]}], field="messages"))
    plain = only_row(read(tmp_path, [{"messages": "Why?"}], field="messages"))
    assert conv["instruction"] == plain["instruction"] == "Why?" and conv["id"] == plain["id"]


@pytest.mark.parametrize("messages, reason, detail", [
    ([], "malformed_conversation", "messages is an empty list"),
    (["hi"], "malformed_conversation", "messages[0] is str"),
    ([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}], "malformed_conversation",
     "messages[1].role is 'tool'"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, {"role": "user", "content": "c"}],
     "malformed_conversation", "messages[1].role: a system turn may only come first"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "malformed_conversation",
     "messages[1].role is 'user' after a 'user' turn"),
    ([{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}], "malformed_conversation",
     "messages[0].role is 'assistant' at the start"),
    ([{"role": "user", "content": 3}], "malformed_conversation", "messages[0].content is int"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "last_turn_not_user",
     "messages[1].role is 'assistant'"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}, {"role": "user", "content": "c"}],
     "empty_turn", "messages[1].content is empty"),
])
def test_a_malformed_conversation_is_rejected_naming_the_turn(tmp_path, messages, reason, detail):
    got = read(tmp_path, [{"messages": CONVERSATION}, {"messages": messages}], field="messages")
    assert len(got.rows) == 1
    [(line, got_reason, got_detail)] = reasons(got)
    assert (line, got_reason) == (2, reason) and got_detail.startswith(detail), got_detail


@pytest.mark.parametrize("value, reason, detail", [
    (None, "missing_response", "the response column 'completions' is null"),
    ("absent", "missing_response", "the response column 'completions' is missing"),
    ([], "empty_response", "completions is an empty list"),
    (["ok", None], "missing_response", "completions[1] is null"),
    (["ok", 7], "response_not_text", "completions[1] is int"),
    (["ok", "  "], "empty_response", "completions[1] is empty"),
    ([{"model": 3, "text": "x"}], "response_not_text", "completions[0].model is int"),
    ([{"model": "m", "text": ""}], "empty_response", "completions[0].text is empty"),
    ([{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}], "response_not_text",
     "completions[1].role is 'user'"),
    (12, "response_not_text", "completions is int"),
])
def test_a_bad_provided_response_rejects_its_row(tmp_path, value, reason, detail):
    bad = {"instruction": "q2"} | ({} if value == "absent" else {"completions": value})
    got = read(tmp_path, [{"instruction": "q1", "completions": ["a", "b"]}, bad], responses=["completions"])
    assert len(got.rows) == 1
    [(line, got_reason, got_detail)] = reasons(got)
    assert (line, got_reason) == (2, reason) and got_detail.startswith(detail), got_detail
    assert got.rejects[0]["instruction"] == "q2"


def test_the_id_follows_the_responses_and_the_conversation(tmp_path):
    def row_id(record, **keys):
        return only_row(read(tmp_path, [record], **keys))["id"]

    plain = row_id({"instruction": "q", "r": "a"})
    assert row_id({"instruction": "q", "r": "a"}, responses=["r"]) != plain
    assert row_id({"instruction": "q", "r": "a"}, responses=["r"]) != row_id({"instruction": "q", "r": "b"},
                                                                              responses=["r"])
    assert row_id({"messages": CONVERSATION}, field="messages") != row_id(
        {"messages": CONVERSATION[:2] + [{"role": "assistant", "content": "Hey!"}] + CONVERSATION[3:]},
        field="messages")
    # a plain instruction keeps the id it had before responses and conversations were read
    assert plain == row_id({"instruction": "q"})


def test_same_prompt_with_other_responses_is_no_duplicate(tmp_path):
    got = read(tmp_path, [{"instruction": "q", "r": ["a", "b"]}, {"instruction": "q", "r": ["a", "c"]},
                          {"instruction": " q ", "r": ["a", "b"]}], responses=["r"])
    assert len(got.rows) == 2
    assert reasons(got) == [(3, "duplicate_instruction", "same prompt and responses as line 1")]


def test_rows_with_too_few_candidates_are_rejected(tmp_path):
    cfg = PipelineConfig(generators=[], evolution={"enabled": False}, input={"responses": ["r"]})
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [{"instruction": "q1", "r": ["a", "b"]},
                                                         {"instruction": "q2", "r": ["only one"]}]))
    got = read_instructions(InputConfig(path=str(path), responses=["r"]), lambda p: candidates_per_row(cfg, p))
    assert [r["instruction"] for r in got.rows] == ["q1"]
    assert reasons(got) == [(2, "too_few_candidates", "1 provided response(s) give 1 candidate(s); a pair needs two")]
    assert got.rejects[0]["candidates"][0]["text"] == "only one"


def test_parquet_list_and_message_columns(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"messages": CONVERSATION, "completions": ["Blue.", "Red."]},
        {"messages": CONVERSATION[:3], "completions": ["x", "y"]},
    ]), path)
    got = read_instructions(InputConfig(path=str(path), field="messages", responses=["completions"]))
    assert [c["text"] for c in only_row_of(got)["candidates"]] == ["Blue.", "Red."]
    assert reasons(got)[0][:2] == (2, "last_turn_not_user")
    with pytest.raises(InputError, match="no column 'answers' named in input.responses"):
        read_instructions(InputConfig(path=str(path), field="messages", responses=["answers"]))


def only_row_of(got):
    (row,) = got.rows
    return row


def test_csv_response_columns(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("instruction,a,b\nq1,yes,no\nq2,yes,\n")
    got = read_instructions(InputConfig(path=str(path), responses=["a", "b"]))
    assert [c["text"] for c in only_row_of(got)["candidates"]] == ["yes", "no"]
    assert reasons(got) == [(3, "empty_response", "b is empty or whitespace")]


@pytest.mark.parametrize("keys, message", [
    ({"responses": ["a", "a"]}, "input.responses: columns given twice"),
    ({"responses": ["instruction"]}, "input.responses: 'instruction' is the prompt's column"),
    ({"responses": ["a", ""]}, r"input.responses: a column name cannot be empty \(item 1\)"),
    ({"preference": True, "responses": ["prompt", "b"]}, "input.field: 'prompt' is also a response column"),
])
def test_response_keys_are_checked_up_front(keys, message):
    from prefgen.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=message):
        parse_config({"input": keys})


def test_config_checks_count_provided_responses():
    from prefgen.config import ConfigError, parse_config

    judge_only = {"generators": [], "evolution": {"enabled": False}}
    assert candidates_per_row(parse_config(judge_only | {"input": {"preference": True}})) == 2
    with pytest.raises(ConfigError, match="every row gets 0 candidate .*add a response column"):
        parse_config(judge_only)
    one_column = parse_config(judge_only | {"input": {"responses": ["completions"]}})  # it may hold a list
    assert any("a list of two or more" in w for w in one_column.warnings())
    assert not any("a list of two" in w for w in parse_config(judge_only | {"input": {"preference": True}}).warnings())
    evolved = parse_config({"generators": [], "input": {"responses": ["a"]},
                            "evolution": {"num_evolutions": 2, "keep_original": True}})
    assert candidates_per_row(evolved) == 3 and candidates_per_row(evolved, 2) == 6


def test_input_keys_are_guarded_by_the_input_digest_not_the_config_digest(tmp_path):
    """input.responses / preference / field change what is judged; they change the row ids, so the
    input digest (sorted ids, see runstate) refuses a resume, while the config digest leaves input.* out."""
    from prefgen.config import parse_config
    from prefgen.output.manifest import input_digest

    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"instruction": "q", "a": "x", "b": "y"}) + "\n")
    digests, configs = set(), set()
    for keys in ({"responses": ["a", "b"]}, {"responses": ["a"]}, {"responses": ["b", "a"]}):
        cfg = parse_config({"input": {"path": str(path), **keys}})
        got = read_instructions(cfg.input)
        digests.add(input_digest(sorted(r["id"] for r in got.rows + got.rejects)))
        configs.add(cfg.digest())
    assert len(digests) == 3 and len(configs) == 1


def test_a_resume_over_other_provided_responses_is_refused(tmp_path):
    from prefgen.config import parse_config
    from prefgen.output.manifest import ResumeRefused, input_digest
    from prefgen.output.runstate import RunState

    path, out = tmp_path / "in.jsonl", str(tmp_path / "out")

    def open_run(answer):
        path.write_text(json.dumps({"instruction": "q", "a": "x", "b": answer}) + "\n")
        cfg = parse_config({"input": {"path": str(path), "responses": ["a", "b"]}})
        got = read_instructions(cfg.input)
        state = RunState(storage(out))
        state.open(cfg.model_dump(mode="json"), cfg.digest(), input_digest(sorted(r["id"] for r in got.rows)),
                   False, log=lambda m: None, digest_parts=cfg.digest_parts())
        state.claim(None)
        return state

    open_run("y").fail("killed")
    open_run("y").fail("killed again")  # the same responses: resumes
    with pytest.raises(ResumeRefused, match="another input"):
        open_run("z")
