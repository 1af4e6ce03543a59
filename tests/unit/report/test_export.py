"""Export of an output's pairs: JSONL formats that round-trip, and the Hub push's calls (no network)."""

import json

import pytest
import yaml
from support.report_output import write_output

from prefgen.dataset import export as ex
from prefgen.cli import main
from prefgen.output.storage import storage


@pytest.fixture
def output(tmp_path):
    return write_output(tmp_path / "out")


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_jsonl_keeps_messages_ratings_and_provenance(output, tmp_path):
    target, n, selection = ex.export(output["uri"], "jsonl", str(tmp_path / "x" / "pairs.jsonl"))
    back = read_jsonl(target)
    assert n == 2 == len(back) and selection is None  # committed pairs only, all of them
    assert back == [{k: v for k, v in p.items() if k != "candidates"} for p in output["pairs"]]
    assert back[1]["chosen_candidate_id"] == "b/g2/0/e1" and back[1]["chosen_rating"] == 4.0


def test_trl_strings_are_the_texts(output, tmp_path):
    target, _, _ = ex.export(output["uri"], "trl-strings", str(tmp_path / "trl.jsonl"))
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
    assert sent == {"pairs": 2, "rejects": 1, "files": sorted(files), "selection": None}


def margin_pairs(margins):
    return [{"pair_id": f"p{i}", "chosen_rating": 1.0 + m, "rejected_rating": 1.0} for i, m in enumerate(margins)]


def test_top_margin_keeps_the_largest_margins_in_their_order_and_says_what_it_cut():
    pairs = margin_pairs([1, 4, 2, 3, 1, 2, 4, 1, 3, 2])
    kept, sel = ex.select_by_margin(pairs, top_margin=0.3)
    assert [p["pair_id"] for p in kept] == ["p1", "p3", "p6"]  # margins 4, 3, 4: input order kept
    assert (sel["pairs"], sel["kept"], sel["cut"], sel["threshold"]) == (10, 3, 7, 3.0)
    assert sel["cut_at_threshold"] == 1  # p8 (margin 3) lost the tie to p3 by pair id
    floor, sel = ex.select_by_margin(pairs, min_margin=3)
    assert [p["pair_id"] for p in floor] == ["p1", "p3", "p6", "p8"] and (sel["kept"], sel["cut"]) == (4, 6)
    both, sel = ex.select_by_margin(pairs, top_margin=0.5, min_margin=2)  # the floor first, then the top share
    assert len(both) == 4 and sel["threshold"] == 3.0
    assert ex.select_by_margin(pairs, top_margin=0.01)[1]["kept"] == 1  # at least one pair
    for bad in ({"top_margin": 0}, {"top_margin": 1.5}, {"min_margin": -1}):
        with pytest.raises(ValueError, match="margin"):
            ex.select_by_margin(pairs, **bad)
        with pytest.raises(ex.ExportError, match="margin"):
            ex.selected(pairs, bad.get("top_margin"), bad.get("min_margin"))


def test_export_with_a_margin_selection_writes_the_kept_pairs_and_reports_the_cut(output, tmp_path, capsys):
    target = tmp_path / "top.jsonl"
    assert main(["export", output["uri"], "--to", str(target), "--top-margin", "0.5"]) == 0
    [kept] = read_jsonl(target)
    assert kept["pair_id"] == max(output["pairs"], key=lambda p: p["chosen_rating"] - p["rejected_rating"])["pair_id"]
    said = capsys.readouterr().out
    assert "1 pairs written" in said and "kept 1 of 2" in said and "cut 1" in said and "margin >=" in said
    record = json.loads((tmp_path / "top.selection.json").read_text())
    assert (record["kept"], record["cut"], record["top_margin"]) == (1, 1, 0.5)


def test_the_card_names_the_margin_selection_next_to_the_margin_plot(output):
    from prefgen.dataset.report import build_report

    plain = build_report(storage(output["uri"])).card
    assert "--top-margin" in plain  # the card says how to select by margin, under the histogram
    _, sel = ex.select_by_margin(output["pairs"], top_margin=0.5)
    card = build_report(storage(output["uri"]), selection=sel).card
    note = card[card.index("margins.png") - 400:card.index("margins.png")]
    assert "kept 1 of 2 pairs" in note and "margin >=" in note


def test_push_to_hub_with_a_margin_selection_pushes_the_kept_pairs_and_says_so(output, monkeypatch):
    import datasets
    import huggingface_hub

    pushed, commits = [], []
    monkeypatch.setattr(datasets.Dataset, "push_to_hub", lambda self, repo_id, **kw: pushed.append(self.num_rows))
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit",
                        lambda self, repo_id, operations, **kw: commits.append(
                            {op.path_in_repo: op.path_or_fileobj for op in operations}))
    sent = ex.push_to_hub(output["uri"], "me/prefs", token="t", top_margin=0.5)
    assert pushed == [1, 1] and sent["selection"]["cut"] == 1  # one pair of two, and the one reject
    assert "kept 1 of 2 pairs" in commits[0]["README.md"].decode()
