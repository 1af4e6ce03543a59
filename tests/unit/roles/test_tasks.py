"""Task logic around the engine (ids, tagging, retries, errors), driven by a scripted engine.

These check the bookkeeping only; that the stages work on a real model is the integration
test's job.
"""

from support.scripted_engine import ScriptedEngine

from prefgen.engines.engine import Result
from prefgen.roles.evolve.task import EvolveTask, pick_criterion
from prefgen.roles.generate.task import GenerateTask
from prefgen.schema import candidate


def row(rid, instruction="What is synthetic data?", cands=None):
    return {"id": rid, "instruction": instruction, "source": "s", "line": 1, "candidates": cands or [],
            "output_tokens": 0, "reject_reason": None, "reject_detail": None}


def test_generate_appends_tagged_candidates_and_counts_tokens():
    engine = ScriptedEngine(lambda req: [f"answer {i}" for i in range(req.n)])
    rows = [row("r1"), row("r2")]
    GenerateTask("warm", "m-a", system_prompt="Be brief.", num_completions=2).run(rows, engine)
    req = engine.calls[0][0]
    assert req.messages[0] == {"role": "system", "content": "Be brief."} and req.n == 2
    assert [c["candidate_id"] for c in rows[0]["candidates"]] == ["r1/warm/0", "r1/warm/1"]
    assert {c["origin"] for c in rows[1]["candidates"]} == {"generated"}
    assert rows[0]["output_tokens"] == 20


def test_generate_rejects_a_row_whose_prompt_does_not_fit():
    engine = ScriptedEngine(lambda req: Result(error="prompt has 9000 tokens"))
    rows = [row("r1")]
    GenerateTask("g", "m").run(rows, engine)
    assert rows[0]["reject_reason"] == "prompt_too_long" and "9000" in rows[0]["reject_detail"]


def gen(rid, k, text):
    return candidate(candidate_id=f"{rid}/g/{k}", text=text, model="m", generator="g", origin="generated")


def test_evolve_chains_rounds_with_parent_and_criterion():
    counter = iter(range(100))
    engine = ScriptedEngine(lambda req: [f"# Improved Response\nbetter {next(counter)}"])
    rows = [row("r1", cands=[gen("r1", 0, "short answer")])]
    EvolveTask("m-e", ["details", "creativity"], num_evolutions=2, seed=7).run(rows, engine)
    cands = rows[0]["candidates"]
    assert [c["candidate_id"] for c in cands] == ["r1/g/0", "r1/g/0/e1", "r1/g/0/e1/e2"]
    assert [c["parent_id"] for c in cands] == [None, "r1/g/0", "r1/g/0/e1"]
    assert cands[1]["criterion"] == pick_criterion(["details", "creativity"], 7, "r1/g/0", 1)
    assert all(not c["text"].startswith("#") for c in cands)
    assert len(engine.calls) == 2


def test_evolve_drops_empty_rewrites_and_can_drop_originals():
    engine = ScriptedEngine(lambda req: [""] if "keep" in req.messages[0]["content"] else ["rewritten"])
    rows = [row("r1", cands=[gen("r1", 0, "keep me"), gen("r1", 1, "other")])]
    EvolveTask("m", ["details"], keep_original=False).run(rows, engine)
    assert [c["candidate_id"] for c in rows[0]["candidates"]] == ["r1/g/1/e1"]


def test_generated_answers_are_counted_when_only_their_rewrites_are_kept():
    from prefgen.report.summary import batch_counts

    counter = iter(range(100))
    engine = ScriptedEngine(lambda req: [f"rewrite {next(counter)}"])
    rows = [row("r1", cands=[gen("r1", 0, "one"), gen("r1", 1, "two")]), row("r2", cands=[gen("r2", 0, "three")])]
    EvolveTask("m", ["details"], num_evolutions=2, keep_original=False).run(rows, engine)
    assert {c["origin"] for r in rows for c in r["candidates"]} == {"evolved"}
    counts = batch_counts("k", rows, [], [])
    assert counts["generated"] == 3 and counts["evolved"] == 6


def test_criterion_draw_is_stable_and_uses_every_criterion():
    crits = ["helpfulness", "relevance", "deepening", "creativity", "details"]
    draws = [pick_criterion(crits, 0, f"id{i}", 1) for i in range(200)]
    assert draws == [pick_criterion(crits, 0, f"id{i}", 1) for i in range(200)]
    assert set(draws) == set(crits)


def test_outputs_that_add_no_candidate_are_counted_by_reason():
    def reply(req):
        content = req.messages[-1]["content"]
        if "too long" in content:
            return Result(error="prompt has 5000 tokens")
        return ["   "] if "blank" in content else ["same"] if "same" in content else ["new text"]

    engine = ScriptedEngine(reply)
    rows = [row("r1", cands=[gen("r1", 0, "too long"), gen("r1", 1, "blank"), gen("r1", 2, "same"), gen("r1", 3, "x")])]
    task = EvolveTask("m", ["details"])
    task.run(rows, engine)
    assert task.dropped == {"prompt_too_long": 1, "empty": 1, "unchanged": 1}
    assert [c["candidate_id"] for c in rows[0]["candidates"] if c["origin"] == "evolved"] == ["r1/g/3/e1"]

    generator = GenerateTask("g", "m", num_completions=3)
    generator.run([row("r2")], ScriptedEngine(lambda req: ["a", "", "  \n"]))
    assert generator.dropped == {"empty": 2}


def test_summary_sums_per_role_figures_over_actors():
    from dataclasses import asdict

    from prefgen.report.summary import RunSummary

    def actor(dropped, tokens=40):
        return {"stage": "m", "engine_start_s": 3.0, "busy_s": 2.0, "roles": {  # as written: keys sorted
            "evolve": {"rows": 4, "requests": 8, "output_tokens": tokens, "busy_s": 1.5, "dropped": dropped},
            "generate:g": {"rows": 4, "requests": 4, "output_tokens": 10, "busy_s": 0.5, "dropped": {}}}}

    summary = RunSummary(output="out")
    summary.add_stage_stats([actor({"empty": 1}), actor({"empty": 2, "unchanged": 1}), actor({})],
                            [("m", ["generate:g", "evolve"])])
    assert summary.stages["m"]["roles"] == ["generate:g", "evolve"] == list(summary.roles)  # the plan's order
    assert summary.roles["evolve"]["dropped"] == {"empty": 3, "unchanged": 1}
    assert asdict(summary)["roles"]["evolve"]["dropped"] == {"empty": 3, "unchanged": 1}  # as the manifest gets it
    assert summary.roles["evolve"]["requests"] == 24 and summary.roles["generate:g"]["rows"] == 12
    assert summary.stages["m"]["replicas"] == 3 and summary.stages["m"]["output_tokens"] == 150
    lines = [line.strip() for line in summary.lines()]
    assert "engine m (3 actor(s)): start 3 s, busy 6 s, 150 tokens (25 tok/s busy)" in lines
    assert "evolve: 12 rows, 24 requests, 120 tokens in 4 s; outputs dropped: 4 (empty=3, unchanged=1)" in lines


# --- outputs cut off at max_tokens ----------------------------------------------------------------


def test_generate_marks_each_completion_cut_off_at_max_tokens():
    engine = ScriptedEngine(lambda req: Result(texts=["done.", "and then the"], finish_reasons=["stop", "length"]))
    rows = [row("r1")]
    GenerateTask("g", "m", num_completions=2).run(rows, engine)
    assert [(c["candidate_id"], c["truncated"]) for c in rows[0]["candidates"]] == [("r1/g/0", False), ("r1/g/1", True)]
    plain = [row("r2")]
    GenerateTask("g", "m").run(plain, ScriptedEngine(lambda req: ["an answer"]))  # no finish reasons: not cut off
    assert plain[0]["candidates"][0]["truncated"] is False


def test_evolve_keeps_a_cut_off_rewrite_flagged_and_rewrites_it_next_round():
    replies = iter([Result(texts=["a longer rewrite that stops mid"], finish_reasons=["length"]),
                    Result(texts=["a finished rewrite."], finish_reasons=["stop"])])
    engine = ScriptedEngine(lambda req: next(replies))
    rows = [row("r1", cands=[gen("r1", 0, "short answer")])]
    task = EvolveTask("m-e", ["details"], num_evolutions=2)
    task.run(rows, engine)
    cands = rows[0]["candidates"]
    assert [(c["candidate_id"], c["truncated"]) for c in cands] == [
        ("r1/g/0", None), ("r1/g/0/e1", True), ("r1/g/0/e1/e2", False)
    ]
    assert "stops mid" in engine.calls[1][0].messages[-1]["content"]  # round 2 rewrote the cut-off text
    assert not task.dropped


def test_batch_counts_and_summary_count_truncated_candidates():
    from prefgen.report.summary import RunSummary, batch_counts

    cands = [gen("r1", 0, "a"), gen("r1", 1, "b"), gen("r1", 2, "c")]
    cands[1]["truncated"], cands[2]["truncated"] = True, False
    counts = batch_counts("k", [row("r1", cands=cands)], [], [])
    assert counts["truncated"] == 1 and counts["truncated_answers"] == 0
    summary = RunSummary(output="out")
    summary.add(counts)
    summary.add(counts)
    assert summary.candidates["truncated"] == 2
    assert any(line.startswith("candidates:") and "truncated=2" in line for line in summary.lines())
    assert any(line.startswith("judging:") and "truncated_answers=0" in line for line in summary.lines())
    old = {k: v for k, v in counts.items() if k not in ("truncated", "truncated_answers")}  # a commit from before
    summary.add(old)
    assert summary.candidates["truncated"] == 2
