"""A reward model as a judge, without vLLM: config, plan, the task on a scripted scorer, the combine rule."""

import math

import pytest

from prefgen.config import ConfigError, RewardModel, VllmModel, parse_config
from prefgen.engines.engine import AsyncVllmEngine
from prefgen.report.health import batch_health
from prefgen.roles.pair import split_rows
from prefgen.roles.plan import engine_factory, expected_calls, plan_stages
from prefgen.roles.judge.reward import (
    REWARD_ASPECT,
    RewardEngine,
    RewardTask,
    Score,
    combine_row,
    reward_overrides,
    to_jury_scale,
)
from prefgen.schema import REJECT_MARGIN, WORK_ROW, candidate, to_table
from prefgen.engines.calls import CountingEngine
from prefgen.output.storage import storage

# --- config -------------------------------------------------------------------------------------


def config(tmp_path, judge=None, jury=(), **extra):
    return parse_config({
        "models": {"rm": {"kind": "reward_model", "source": str(tmp_path)}, "chat": {}},
        "generators": [{"model": "chat", "num_completions": 2}],
        "evolution": {"enabled": False},
        "judge": judge or {"model": "rm"},
        "jury": list(jury),
        **extra,
    })


def test_a_declaration_without_kind_is_a_vllm_model_and_kind_selects_the_class(tmp_path):
    cfg = config(tmp_path)
    assert isinstance(cfg.models["chat"], VllmModel) and isinstance(cfg.models["rm"], RewardModel)
    assert isinstance(cfg.model_of(cfg.judge), RewardModel)
    same_source = parse_config({"models": {"a": {"source": str(tmp_path)},
                                           "b": {"kind": "reward_model", "source": str(tmp_path)}},
                                "generators": [{"model": "a", "num_completions": 2}], "evolution": {"enabled": False},
                                "judge": {"model": "b"}})
    assert same_source.models["a"].engine_key() != same_source.models["b"].engine_key()
    assert [s.name for s in plan_stages(same_source)] == ["a", "b"]


@pytest.mark.parametrize("key, value", [
    ("aspects", ["honesty"]), ("permutations", 3), ("mode", "single"), ("rationales", False), ("guided", False),
    ("combine", "min"), ("max_retries", 0), ("sampling", {"temperature": 0.5}),
])
def test_judge_keys_of_llm_prompts_are_refused_on_a_reward_model(tmp_path, key, value):
    with pytest.raises(ConfigError, match=rf"jury\.0\.{key}: does not apply to a judge whose model \('rm'\) is a reward"):
        config(tmp_path, judge={"model": "chat"}, jury=[{"model": "rm", key: value}])


def test_judge_keys_at_their_defaults_are_accepted_on_a_reward_model(tmp_path):
    cfg = config(tmp_path, judge={"model": "rm", "aspects": ["overall"], "permutations": 2, "guided": True})
    assert cfg.judge.model == "rm"


@pytest.mark.parametrize("role", ["generators", "evolution"])
def test_only_judges_may_use_a_reward_model(tmp_path, role):
    data = {"generators": [{"model": "rm"}]} if role == "generators" else {"evolution": {"model": "rm"}}
    key = "generators.0" if role == "generators" else "evolution"
    with pytest.raises(ConfigError, match=rf"{key}\.model: 'rm' is a reward model; only judge and jury"):
        config(tmp_path, **data)


def test_a_reward_model_needs_a_source_and_not_the_embedded_chat_model(tmp_path):
    with pytest.raises(ConfigError, match="source: Field required"):
        parse_config({"models": {"rm": {"kind": "reward_model"}}})
    with pytest.raises(ConfigError, match="is a chat model, not a reward model"):
        parse_config({"models": {"rm": {"kind": "reward_model", "source": "embedded://SmolLM2-135M-Instruct"}}})


def test_min_margin_warning_only_for_a_lone_reward_judge_with_the_default_margin(tmp_path):
    assert any("pairing.min_margin" in w for w in config(tmp_path).warnings())
    assert not any("pairing.min_margin" in w for w in config(tmp_path, pairing={"min_margin": 0.05}).warnings())
    jury = config(tmp_path, judge={"model": "chat"}, jury=[{"model": "rm", "name": "rm"}])
    assert not any("pairing.min_margin" in w for w in jury.warnings())


# --- plan -----------------------------------------------------------------------------------------


def test_reward_judges_run_after_llm_judges_whatever_the_declared_order(tmp_path):
    cfg = config(tmp_path, judge={"model": "rm", "name": "rm"}, jury=[{"model": "chat", "name": "llm"}])
    stages = plan_stages(cfg)
    # the chat model generates, then judges as llm; the reward model comes last
    assert [(s.name, s.roles) for s in stages] == [("chat", ["generate:gen0", "judge:llm"]), ("rm", ["judge:rm"])]
    task = stages[-1].tasks[0]
    assert isinstance(task, RewardTask) and task.reward_judges == {"rm"} and task.jury_size == 2


def test_engine_factory_by_kind(tmp_path):
    cfg = config(tmp_path)
    reward, chat = engine_factory(cfg.models["rm"], "cpu"), engine_factory(cfg.models["chat"], "cpu")
    assert reward.func is RewardEngine and reward.args == (str(tmp_path), cfg.models["rm"].engine, "cpu")
    assert chat.func is AsyncVllmEngine


def test_a_reward_judge_makes_one_request_per_candidate(tmp_path):
    cfg = config(tmp_path, generators=[{"model": "chat", "num_completions": 3}])
    assert expected_calls(cfg)["judge:judge"] == {"requests": 3, "outputs": 3}


# --- the task on a scripted scorer ---------------------------------------------------------------


class ScriptedScorer:
    """Scores a conversation with score_of(response text): a number, or an error string."""

    def __init__(self, score_of):
        self.score_of, self.calls = score_of, []

    def score(self, conversations):
        self.calls.append(conversations)
        out = []
        for conv in conversations:
            value = self.score_of(conv[-1]["content"])
            out.append(Score(error=value) if isinstance(value, str) else Score(value))
        return out


def rows_of(*texts_per_row):
    rows = []
    for r, texts in enumerate(texts_per_row):
        cands = [candidate(candidate_id=f"r{r}/g/{k}", text=t, model="m", generator="g", origin="generated",
                           judgments=[]) for k, t in enumerate(texts)]
        rows.append({"id": f"r{r}", "instruction": f"question {r}", "source": "s", "line": r + 1,
                     "candidates": cands, "output_tokens": 0, "reject_reason": None, "reject_detail": None})
    return rows


SCORES = {"short": -1.25, "medium": 0.5, "long": 2.25, "other": 0.75}


def test_every_candidate_is_scored_once_and_recorded_as_a_judgment():
    rows = rows_of(["short", "long"], ["medium", "other", "long"])
    scorer = ScriptedScorer(SCORES.get)
    RewardTask("rm", "/m", {"rm"}, 1).run(rows, scorer)
    assert len(scorer.calls) == 1
    assert [(c[0]["content"], c[1]["content"]) for c in scorer.calls[0]] == [
        ("question 0", "short"), ("question 0", "long"), ("question 1", "medium"), ("question 1", "other"),
        ("question 1", "long")]
    for cand in (c for row in rows for c in row["candidates"]):
        (j,) = cand["judgments"]
        assert (j["judge"], j["aspect"], j["rating"], j["rationale"], j["error"]) == (
            "rm", REWARD_ASPECT, SCORES[cand["text"]], None, None)
        assert cand["rating"] == SCORES[cand["text"]]  # alone: the raw score
        assert cand["judge_error"] is None
    to_table(rows, WORK_ROW)  # the judgments fit the Arrow schema


def test_a_failed_or_non_finite_score_leaves_the_candidate_unrated_with_the_reason():
    rows = rows_of(["short", "too long", "nan"])
    RewardTask("rm", "/m", {"rm"}, 1).run(rows, ScriptedScorer(
        lambda t: "conversation has 3000 tokens" if t == "too long" else math.nan if t == "nan" else SCORES[t]))
    short, long_, nan = rows[0]["candidates"]
    assert short["rating"] == SCORES["short"]
    assert long_["rating"] is None and "3000 tokens" in long_["judge_error"]
    assert nan["rating"] is None and "not a finite number" in nan["judge_error"]


def test_through_the_stage_wrapper_requests_are_counted():
    counting = CountingEngine(ScriptedScorer(SCORES.get))
    RewardTask("rm", "/m", {"rm"}, 1).run(rows_of(["short", "long"], ["medium"]), counting)
    assert counting.requests == 3


def test_pairs_follow_raw_scores_and_the_margin_is_in_the_models_units():
    rows = rows_of(["short", "medium", "long"], ["medium", "other"])
    RewardTask("rm", "/m", {"rm"}, 1).run(rows, ScriptedScorer(SCORES.get))
    pairs, rejects = split_rows(rows, "best_vs_worst", min_margin=0.5)
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [("long", "short")]
    assert [(r["id"], r["reason"]) for r in rejects] == [("r1", REJECT_MARGIN)]  # 0.75 - 0.5 < 0.5
    assert all(p["chosen_rating"] > p["rejected_rating"] for p in pairs)


def test_health_statistics_accept_raw_scores():
    rows = rows_of(["short", "medium", "long"])
    RewardTask("rm", "/m", {"rm"}, 1).run(rows, ScriptedScorer(SCORES.get))
    stats = batch_health(rows, [])
    assert sum(stats["ratings"].values()) == 0 and stats["length"]["n"] == 3


# --- the combine rule ------------------------------------------------------------------------------


def test_jury_scale_maps_a_row_onto_one_to_five_keeping_order_and_gaps():
    assert to_jury_scale({"a": -1.0, "b": 0.0, "c": 3.0}) == {"a": 1.0, "b": 2.0, "c": 5.0}
    assert to_jury_scale({"a": 0.3, "b": 0.3}) == {"a": 3.0, "b": 3.0}
    assert to_jury_scale({}) == {}


def llm_judgment(judge, rating):
    return {"judge": judge, "aspect": "overall", "permutation": 0, "position": 0, "label": "A", "order_seed": 1,
            "rating": rating, "not_applicable": False, "rationale": "why", "raw": "{}", "error": None,
            "attempts": 1, "retried_because": None, "max_tokens": 512, "truncated": False, "truncated_answers": 0}


def test_in_a_jury_reward_scores_are_rescaled_per_row_then_averaged_with_llm_ratings():
    rows = rows_of(["short", "medium", "long"])
    for cand, rating in zip(rows[0]["candidates"], (4.0, 2.0, 3.0)):
        cand["judgments"].append(llm_judgment("llm", rating))
    RewardTask("rm", "/m", {"rm"}, 2, {"llm": "mean", "rm": "mean"}).run(rows, ScriptedScorer(SCORES.get))
    short, medium, long_ = rows[0]["candidates"]
    # reward -1.25, 0.5, 2.25 -> 1, 3, 5 on 1-5; averaged with 4, 2, 3
    assert short["rating"] == pytest.approx((4 + 1) / 2)
    assert medium["rating"] == pytest.approx((2 + 3) / 2)
    assert long_["rating"] == pytest.approx((3 + 5) / 2)
    assert long_["judge_agreement"] == pytest.approx(2.0)
    assert [j["rating"] for j in long_["judgments"] if j["judge"] == "rm"] == [2.25]  # the raw score is kept


def test_alone_nothing_is_rescaled_and_a_failed_llm_judgment_still_unrates():
    rows = rows_of(["short", "long"])
    assert reward_overrides(rows[0]["candidates"], {"rm"}, 1) == {}
    bad = llm_judgment("llm", None) | {"error": "no JSON"}
    rows[0]["candidates"][0]["judgments"].append(bad)
    rows[0]["candidates"][1]["judgments"].append(llm_judgment("llm", 5.0))
    RewardTask("rm", "/m", {"rm"}, 2).run(rows, ScriptedScorer(SCORES.get))
    short, long_ = rows[0]["candidates"]
    assert short["rating"] is None and "llm/overall: no JSON" in short["judge_error"]
    assert long_["rating"] == pytest.approx((5 + 5) / 2)  # long is the row's top reward score


def test_combine_row_rescales_every_reward_judge_of_the_row():
    rows = rows_of(["short", "long"])
    for cand, (a, b) in zip(rows[0]["candidates"], ((10.0, 0.1), (20.0, 0.3))):
        cand["judgments"] += [{**llm_judgment("rm1", a), "aspect": REWARD_ASPECT},
                              {**llm_judgment("rm2", b), "aspect": REWARD_ASPECT}]
    combine_row(rows[0]["candidates"], {}, {"rm1", "rm2"}, 2)
    assert [c["rating"] for c in rows[0]["candidates"]] == [1.0, 5.0]


def test_the_stage_serves_a_reward_scorer_to_its_task(tmp_path):
    """A reward model's engine has `score`, not `chat`: the async stage hands it to the task as is
    (one call at a time), and the scores land on the candidates."""
    import asyncio

    from prefgen.schema import WORK_ROW, to_table
    from prefgen.engines.stage import ModelStage

    scorer = ScriptedScorer(lambda text: float(len(text)))
    (tmp_path / "_stats").mkdir()
    st = ModelStage(lambda: scorer, [RewardTask("rm", "m", {"rm"}, 1)], "rm", storage(str(tmp_path)), batches_in_flight=2)
    table = to_table(rows_of(["a", "bbb"], ["cc", "d"]), WORK_ROW)
    out = asyncio.run(st(table)).to_pylist()
    assert [[c["rating"] for c in row["candidates"]] for row in out] == [[1.0, 3.0], [2.0, 1.0]]
    assert len(scorer.calls) == 1
