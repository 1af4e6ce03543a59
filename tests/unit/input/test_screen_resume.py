"""The resume guard sees screening decisions: a run whose rows are all screened out needs no engine,
so `run()` is exercised end to end here without Ray."""

import json

import pytest

from prefgen.config import parse_config
from prefgen.run.pipeline import run
from prefgen.output.manifest import ResumeRefused

GSM = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
       "How many clips did Natalia sell altogether in April and May?")


def config(tmp_path, contamination=None, benchmarks=True):
    bench = tmp_path / "gsm8k_test.jsonl"
    bench.write_text(json.dumps({"question": GSM}) + "\n")
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"instruction": GSM}) + "\n" + json.dumps({"instruction": "Solve: " + GSM}) + "\n")
    inp = {"path": str(data), "decontaminate": [str(bench)] if benchmarks else []}
    if contamination:
        inp["contamination"] = contamination
    return parse_config({"input": inp, "output": {"path": str(tmp_path / "out")}})


def test_screened_rows_are_written_as_rejects_and_a_resume_follows_the_decisions(tmp_path):
    logs = []
    summary = run(config(tmp_path), log=logs.append)
    assert summary.input_rows == 2 and summary.rejected_rows == 2 and summary.paired_rows == 0
    assert any("screening: 2 contaminated" in line for line in logs)
    # other settings, same rows rejected: the run resumes (nothing left to do)
    again = run(config(tmp_path, contamination={"ngram": 6}), log=logs.append)
    assert again.rows_skipped == 2
    # other decisions (no benchmark: both rows would go on): refused before any engine starts
    with pytest.raises(ResumeRefused, match="another input.*input.decontaminate"):
        run(config(tmp_path, benchmarks=False), log=logs.append)
