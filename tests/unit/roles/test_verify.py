"""The pair check (roles/verify/task.py): each pair shown to the judge in both orders; only pairs that hold stay."""

import json

import pyarrow.parquet as pq
import pytest
from support.judges import checking_judge, is_pair_check, row, truthful_judge
from support.scripted_engine import ScriptedEngine

from prefgen.config import PipelineConfig
from prefgen.engines.engine import Result
from prefgen.roles.judge.task import JudgeTask
from prefgen.roles.pair import split_rows
from prefgen.report.summary import RunSummary
from prefgen.output.runstate import RunState
from prefgen.schema import PAIR_ROW, REJECT_ROW, REJECT_UNVERIFIED, WORK_ROW, to_table
from prefgen.roles.verify.verdicts import verification_counts
from prefgen.roles.verify.task import VerdictError, VerifyTask, parse_verdict
from prefgen.output.writer import write_batch
from prefgen.output.storage import storage

PAIRING = {"strategy": "best_vs_worst", "min_margin": 1.0, "length_matched": False, "allow_truncated_chosen": False}

# three candidates a row; the true rating grows with the text's length, so the chosen is the longest
ROWS = [("r0", ["a", "bb", "ccc"]), ("r1", ["d", "ee", "fff"]), ("r2", ["g", "hh", "iii"]), ("r3", ["j", "kk", "lll"])]
TRUTH = {t: len(t) + 1 for _, texts in ROWS for t in texts}


def first_shown(shown):  # prefers whatever it sees first
    return "A"


def better_by_truth(shown):
    return max(shown, key=lambda label: TRUTH[shown[label]])


def worse_by_truth(shown):  # the head to head goes against the ratings
    return min(shown, key=lambda label: TRUTH[shown[label]])


def judged(pick, on_fail="reject", rows=None):
    """Rows rated truthfully, checked with `pick`, then split by the writer's rule."""
    rows = rows or [row(rid, texts) for rid, texts in ROWS]
    engine = ScriptedEngine(checking_judge(pick, truthful_judge(TRUTH, lambda labels: None)))
    JudgeTask("judge", "m", permutations=2).run(rows, engine)
    VerifyTask("judge", "m", PAIRING).run(rows, engine)
    pairs, rejects = split_rows(rows, **PAIRING, on_fail=on_fail)
    return rows, pairs, rejects, engine


def test_a_judge_that_prefers_the_first_shown_flips_every_pair_and_no_row_is_paired():
    rows, pairs, rejects, _ = judged(first_shown)
    assert pairs == [] and [r["reason"] for r in rejects] == [REJECT_UNVERIFIED] * len(ROWS)
    for reject in rejects:
        assert [v["order"] for v in reject["verdicts"]] == [0, 1]  # both verdicts in the reject's column
        assert [v["better"] == v["first_shown"] for v in reject["verdicts"]] == [True, True]
        assert reject["detail"].startswith("flipped: ")
        assert "order 0 (chosen first): A, the chosen" in reject["detail"]
        assert "order 1 (rejected first): A, the rejected" in reject["detail"]
    counts = verification_counts(rows, pairs)
    assert counts | {"pairs_checked": 4, "flipped": 4, "verified": 0, "verify_calls": 8, "first_shown_wins": 8} == counts


def test_a_truthful_judge_verifies_every_pair_in_both_orders():
    rows, pairs, rejects, engine = judged(better_by_truth)
    assert rejects == [] and len(pairs) == len(ROWS)
    for p in pairs:
        assert p["verified"] is True and [v["order"] for v in p["verdicts"]] == [0, 1]
        assert {v["better"] for v in p["verdicts"]} == {p["chosen_candidate_id"]}
        assert [v["first_shown"] for v in p["verdicts"]] == [p["chosen_candidate_id"], p["rejected_candidate_id"]]
    checks = [req for call in engine.calls for req in call if is_pair_check(req)]
    assert len(checks) == 2 * len(ROWS)  # one pair a row, two orders
    counts = verification_counts(rows, pairs)
    assert counts | {"pairs_checked": 4, "verified": 4, "flipped": 0, "first_shown_wins": 4} == counts


def test_a_judge_contradicting_the_ratings_leaves_the_pairs_unverified():
    rows, pairs, rejects, _ = judged(worse_by_truth)
    assert pairs == [] and {r["reason"] for r in rejects} == {REJECT_UNVERIFIED}
    assert all(r["detail"].startswith("contradicted: ") for r in rejects)
    assert verification_counts(rows, pairs)["contradicted"] == 4


def test_flag_keeps_the_pairs_that_did_not_hold_marked():
    rows, pairs, rejects, _ = judged(first_shown, on_fail="flag")
    assert rejects == [] and len(pairs) == len(ROWS) and {p["verified"] for p in pairs} == {False}
    assert verification_counts(rows, pairs)["flagged"] == 4


def test_without_the_check_pairs_say_not_checked():
    rows = [row(rid, texts) for rid, texts in ROWS]
    JudgeTask("judge", "m").run(rows, ScriptedEngine(truthful_judge(TRUTH, lambda labels: None)))
    pairs, _ = split_rows(rows, **PAIRING)
    assert {p["verified"] for p in pairs} == {None} and verification_counts(rows, pairs)["pairs_checked"] == 0


def test_a_row_the_check_never_reached_is_a_loud_error_not_a_verified_pair():
    rows = [row("r0", ["a", "bb"])]
    JudgeTask("judge", "m").run(rows, ScriptedEngine(truthful_judge(TRUTH, lambda labels: None)))
    with pytest.raises(ValueError, match="row r0: pairing.verification is on but the row carries no verdicts"):
        split_rows(rows, **PAIRING, on_fail="reject")


def test_an_answer_without_a_verdict_is_asked_again_then_counts_as_failed():
    rows = [row(rid, texts) for rid, texts in ROWS[:2]]
    JudgeTask("judge", "m").run(rows, ScriptedEngine(truthful_judge(TRUTH, lambda labels: None)))
    engine = ScriptedEngine(lambda req: ['{"reason": "both fine", "better": "both"}'])
    VerifyTask("judge", "m", PAIRING, max_retries=1).run(rows, engine)
    assert len(engine.calls) == 2 and all(len(call) == 4 for call in engine.calls)  # asked, then once more
    pairs, rejects = split_rows(rows, **PAIRING, on_fail="reject")
    assert pairs == [] and all(r["detail"].startswith("failed: ") for r in rejects)
    verdict = rejects[0]["verdicts"][0]
    assert verdict["better"] is None and verdict["attempts"] == 2 and "not one of A, B" in verdict["error"]
    assert verification_counts(rows, pairs)["failed"] == 2


def test_a_failed_endpoint_request_rejects_the_row_as_in_judging():
    rows = [row("r0", ["a", "bb"])]
    JudgeTask("judge", "m").run(rows, ScriptedEngine(truthful_judge(TRUTH, lambda labels: None)))
    VerifyTask("judge", "m", PAIRING).run(rows, ScriptedEngine(lambda req: Result(texts=[], failed="HTTP 500")))
    assert rows[0]["reject_reason"] == "request_failed" and "verify:judge: HTTP 500" in rows[0]["reject_detail"]


@pytest.mark.parametrize("text, label", [('{"reason": "clearer", "better": "B"}', "B"), ("A", "A"),
                                         ("Response b", "B"), ('{"better": " a "}', "A")])
def test_verdicts_are_read_from_json_or_a_bare_label(text, label):
    assert parse_verdict(text)[0] == label


@pytest.mark.parametrize("text", ['{"reason": "x"}', '{"better": "C"}', "A or B, hard to say", ""])
def test_answers_naming_neither_label_are_refused(text):
    with pytest.raises(VerdictError):
        parse_verdict(text)


def test_counts_add_up_through_the_writer_every_row_in_pairs_or_rejects(tmp_path):
    """Half the rows get a judge that flips: each input row ends once, paired or `unverified`, and the
    report, summed like the run's commits, says how many pairs held."""
    rows = [row(rid, texts) for rid, texts in ROWS]
    honest = {"r0", "r1"}

    def pick(shown):  # truthful on r0/r1's texts, first-shown on the others
        return better_by_truth(shown) if set(shown.values()) <= {"a", "bb", "ccc", "d", "ee", "fff"} else "A"

    engine = ScriptedEngine(checking_judge(pick, truthful_judge(TRUTH, lambda labels: None)))
    JudgeTask("judge", "m").run(rows, engine)
    VerifyTask("judge", "m", PAIRING).run(rows, engine)
    out = tmp_path / "out"
    state = RunState(storage(str(out)))
    state.open({}, "d", "i", False, lambda m: None)
    batch = to_table(rows, WORK_ROW)
    pairing = PAIRING | {"verification": {"enabled": "auto", "on_fail": "reject"}, "verifies": True}
    report = json.loads(write_batch(batch, storage(str(out)), state.token, pairing, 0).to_pylist()[0]["report"])
    assert report["ids"] == sorted(r["id"] for r in rows)
    assert report["paired_rows"] == 2 and report["rejects"] == {REJECT_UNVERIFIED: 2}
    assert report["verification"] | {"pairs_checked": 4, "verified": 2, "flipped": 2} == report["verification"]
    written = pq.read_table(next((out / "pairs").glob("*.parquet")), schema=PAIR_ROW).to_pylist()
    assert {p["id"] for p in written} == honest and all(len(p["verdicts"]) == 2 for p in written)
    rejected = pq.read_table(next((out / "rejects").glob("*.parquet")), schema=REJECT_ROW).to_pylist()
    assert {r["id"] for r in rejected} == {"r2", "r3"} and all(len(r["verdicts"]) == 2 for r in rejected)
    summary = RunSummary(output=str(out), input_rows=4)
    summary.add(report)
    assert summary.done_rows == 4 and summary.verification["verified"] == 2
    assert summary.health["pair_verification"]["verified_share"] == 0.5
    assert summary.health["pair_verification"]["flip_rate"] == 0.5
    assert any(line.startswith("  pair check (both orders): 50% of 4 pairs verified") for line in summary.lines())


def test_the_default_plan_checks_pairs_with_the_judges_sampling():
    from prefgen.roles.plan import plan_stages

    (stage,) = plan_stages(PipelineConfig())
    task = stage.tasks[-1]
    assert isinstance(task, VerifyTask) and task.role == "verify:judge" and task.sampling.temperature == 0.0
    assert task.pairing["strategy"] == PAIRING["strategy"] and task.guided


def test_judge_health_warns_when_verdicts_follow_the_order():
    from prefgen.roles.verify.verdicts import verification_figures, verification_warnings

    base = {"pairs_checked": 10, "contradicted": 0, "failed": 0, "verdicts_decided": 20}
    flips = verification_figures(base | {"verified": 6, "flipped": 4, "first_shown_wins": 14})
    (warning,) = verification_warnings(flips)
    assert warning.startswith("the pair check's verdict changed with the order in 40% of 10 pairs")
    assert verification_warnings(verification_figures(base | {"verified": 8, "flipped": 2, "first_shown_wins": 12})) == []
    first = verification_figures({"pairs_checked": 20, "verified": 20, "verdicts_decided": 40, "first_shown_wins": 34})
    assert first["first_shown_wins"]["share"] == 0.85 and first["first_shown_wins"]["z"] > 3
    assert any("the answer shown first won 85% of 40 verdicts" in w for w in verification_warnings(first))


@pytest.mark.parametrize("value, message", [
    ({"on_fail": "drop"}, "pairing.verification.on_fail"),
    ({"enabled": "sometimes"}, "pairing.verification.enabled"),
    ({"retries": 3}, "pairing.verification.retries: Extra inputs are not permitted"),
])
def test_bad_verification_keys_are_named(value, message):
    from prefgen.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config({"pairing": {"verification": value}})


def test_a_cut_off_verdict_is_asked_with_more_room_and_a_limit_that_does_not_fit_goes_back():
    rows = [row("r0", ["a", "bb"])]
    JudgeTask("judge", "m").run(rows, ScriptedEngine(truthful_judge(TRUTH, lambda labels: None)))
    limits = []

    def reply(req):
        limits.append(req.sampling.max_tokens)
        if len(limits) <= 2:  # both orders cut off mid-answer
            return Result(texts=['{"reason": "B is'], finish_reasons=["length"])
        if len(limits) <= 4:  # the doubled limit leaves the prompt no room
            return Result(error="prompt plus max_tokens exceeds max_model_len")
        return Result(texts=['{"reason": "fuller", "better": "A"}'], finish_reasons=["stop"])

    VerifyTask("judge", "m", PAIRING, max_retries=2).run(rows, ScriptedEngine(reply))
    assert limits == [512, 512, 1024, 1024, 512, 512]
    verdicts = rows[0]["verdicts"]
    assert [v["attempts"] for v in verdicts] == [3, 3] and all(v["label"] == "A" for v in verdicts)
