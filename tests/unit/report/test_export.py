"""Export of an output's pairs: JSONL formats that round-trip, and the Hub push's calls (no network)."""

import json

import pytest
import yaml
from support.report_output import write_output

from prefgen import export as ex
from prefgen.cli import main


@pytest.fixture
def output(tmp_path):
    return write_output(tmp_path / "out")


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_jsonl_keeps_messages_ratings_and_provenance(output, tmp_path):
    target, n = ex.export(output["uri"], "jsonl", str(tmp_path / "x" / "pairs.jsonl"))
    back = read_jsonl(target)
    assert n == 2 == len(back)  # committed pairs only
    assert back == [{k: v for k, v in p.items() if k != "candidates"} for p in output["pairs"]]
    assert back[1]["chosen_candidate_id"] == "b/g2/0/e1" and back[1]["chosen_rating"] == 4.0


def test_trl_strings_are_the_texts(output, tmp_path):
    target, _ = ex.export(output["uri"], "trl-strings", str(tmp_path / "trl.jsonl"))
    assert read_jsonl(target) == [{"prompt": "Say A.", "chosen": "a" * 50, "rejected": "a" * 20},
                                  {"prompt": "Say B.", "chosen": "b" * 100, "rejected": "b" * 30}]


def test_trl_strings_refuse_a_conversation_they_cannot_hold(output):
    pair = dict(output["pairs"][0], prompt=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    with pytest.raises(ex.ExportError, match="a-0.*'system', 'user'.*--format jsonl"):
        ex.export_rows([pair], "trl-strings")
    with pytest.raises(ex.ExportError, match="unknown format"):
        ex.export_rows([pair], "csv")


def test_export_command_writes_under_the_output_by_default(output, capsys):
    assert main(["export", output["uri"], "--format", "trl-strings"]) == 0
    assert len(read_jsonl(f"{output['uri']}/export/pairs.trl.jsonl")) == 2
    assert "2 pairs written" in capsys.readouterr().out


def test_push_to_hub_sends_pairs_rejects_card_and_plots(output, monkeypatch):
    import datasets
    import huggingface_hub

    pushed, commits = [], []

    def fake_push(self, repo_id, **kwargs):
        pushed.append((repo_id, self.num_rows, self.column_names, kwargs))

    def fake_commit(self, repo_id, operations, **kwargs):
        commits.append((repo_id, {op.path_in_repo: op.path_or_fileobj for op in operations}, kwargs))

    monkeypatch.setattr(datasets.Dataset, "push_to_hub", fake_push)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", fake_commit)
    sent = ex.push_to_hub(output["uri"], "me/prefs", private=True, token="t")
    assert [(repo, rows, kw["config_name"], kw["split"], kw["private"], kw["token"]) for repo, rows, _, kw in pushed] == [
        ("me/prefs", 2, "default", "train", True, "t"), ("me/prefs", 1, "rejects", "train", True, "t")]
    assert {"prompt", "chosen", "rejected", "candidates"} <= set(pushed[0][2])
    (repo, files, kwargs), = commits
    assert repo == "me/prefs" and kwargs["repo_type"] == "dataset"
    assert "plots/judge_health.png" in files and files["plots/judge_health.png"].startswith(b"\x89PNG")
    meta = yaml.safe_load(files["README.md"].decode().split("---\n")[1])
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*"}]  # push_to_hub's layout
    assert sent == {"pairs": 2, "rejects": 1, "files": sorted(files)}
