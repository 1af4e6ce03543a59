"""The report of an output: figures of its rows (worked out by hand), plots, the dataset card."""

import os
import re

import pytest
import yaml
from support.report_output import rows, split, write_output

from prefgen.report import figures as figs
from prefgen.report import plots
from prefgen.report.card import TRAINING_SNIPPET, size_category, training_snippet
from prefgen.cli import main
from prefgen.dataset.report import build_report, read_output, write_report, write_report_safely
from prefgen.output.storage import storage
from support.paths import REPO

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def output(tmp_path):
    return write_output(tmp_path / "out")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One output, its report written once (drawing the plots takes seconds), and its card as for the Hub."""
    out = write_output(tmp_path_factory.mktemp("report") / "out")
    report = write_report(storage(out["uri"]))
    return {**out, "report": report, "card": report.card, "hub_card": build_report(storage(out["uri"]), repo_id="me/prefs").card}


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_histogram_bins_follow_the_ratings_grid():
    assert figs.histogram([1, 2, 2, 5]) == {"edges": [0.5, 1.5, 2.5, 3.5, 4.5, 5.5], "counts": [1, 2, 0, 0, 1]}
    assert figs.histogram([1.5, 2, 3])["counts"] == [1, 1, 0, 1]  # half points: one bin each
    cont = figs.histogram([0.1, 0.5, 0.9])  # raw scores: equal bins, the maximum in the last one
    assert len(cont["counts"]) == figs.HIST_BINS and sum(cont["counts"]) == 3 and cont["counts"][-1] == 1
    assert figs.histogram([]) == {"edges": [], "counts": []}


def test_ratings_per_model_and_origin():
    pairs, rejects = split(rows())
    r = figs.rating_histograms(figs.row_candidates(pairs, rejects))
    assert r["n"] == 8  # every candidate once, the rejected instruction's included
    assert r["edges"][0] == 1.25 and len(r["edges"]) == 9  # 1.5 .. 5 in half points
    assert r["by_model"]["org/m1"] == {"n": 5, "mean": 3.3, "counts": [1, 0, 0, 2, 0, 1, 0, 1]}
    assert r["by_model"]["m2"]["counts"] == [0, 1, 1, 1, 0, 0, 0, 0]
    assert r["by_origin"]["evolved"]["counts"] == [0, 0, 0, 1, 0, 1, 0, 0]
    assert r["by_origin"]["generated"]["n"] == 6


def test_margins_lengths_and_win_rates():
    pairs, _ = split(rows())
    m = figs.margins(pairs)
    assert (m["n"], m["mean"], m["counts"]) == (2, 2.75, [1, 1])
    ln = figs.lengths(pairs)
    assert (ln["chosen"], ln["rejected"]) == ([50, 100], [20, 30])
    w = figs.win_rates(pairs)
    assert w["by_model"]["org/m1"] == {"wins": 2, "losses": 1, "rate": 2 / 3}
    assert w["by_model"]["m2"] == {"wins": 0, "losses": 1, "rate": 0.0}
    assert w["by_writer"] == {"g1": {"wins": 1, "losses": 1, "rate": 0.5}, "g2": {"wins": 0, "losses": 1, "rate": 0.0},
                              "g2 rewritten": {"wins": 1, "losses": 0, "rate": 1.0}}


def test_chosen_position_per_shown_order_against_chance():
    pairs, _ = split(rows())
    pos = figs.chosen_positions(pairs)
    assert pos["n"] == 4
    first, second = pos["orders"]["order 1"], pos["orders"]["order 2"]
    assert first["counts"] == [2, 0, 0] and second["counts"] == [0, 0, 2]  # the mirror of the first order
    assert first["expected"] == pytest.approx([2 / 3] * 3)  # two calls of three answers


def test_evolved_vs_parent_per_criterion_adds_up_to_the_health_figure(output):
    ev = figs.evolved_vs_parent(figs.row_candidates(output["pairs"], output["rejects"]))
    assert ev["by_criterion"] == {"creativity": {"wins": 1, "ties": 0, "losses": 0},
                                  "details": {"wins": 0, "ties": 0, "losses": 1}}
    health = output["manifest"]["health"]["evolved_beat_parent"]  # computed once, in prefgen.report.health
    assert ev["n"] == health["n"] and ev["total"]["wins"] / ev["n"] == health["win_share"]


def test_only_committed_shards_are_read(output):
    assert read_output(storage(output["uri"]), "pairs").num_rows == 2  # not the uncommitted copy
    assert read_output(storage(output["uri"]), "rejects").column("reason").to_pylist() == ["all_tied"]


def test_plots_are_written_as_pngs_and_empty_ones_left_out(written):
    assert sorted(written["report"].plots) == sorted(plots.PLOTS)
    for name in plots.PLOTS:
        data = open(f"{written['uri']}/plots/{name}", "rb").read()
        assert data.startswith(PNG) and len(data) > 5000, name
    no_evolution = figs.dataset_figures([], [])
    assert plots.evolved_vs_parent(no_evolution) is None and plots.chosen_position(no_evolution) is None
    assert plots.judge_health({}) is None


def test_card_metadata_parses_with_the_data_files(written):
    card = written["card"]
    meta = front_matter(card)
    assert meta["license"] == "unknown" and "TODO" in card.split("\n")[2]
    assert meta["task_categories"] == ["text-generation"] and {"dpo", "preference"} <= set(meta["tags"])
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"] == [  # an uncommitted pairs shard is there: the committed ones by name
        {"config_name": "default", "default": True, "data_files": [{"split": "train", "path": ["pairs/part-k1.parquet"]}]},
        {"config_name": "rejects", "data_files": [{"split": "train", "path": "rejects/part-*.parquet"}]},
    ]
    hub = front_matter(written["hub_card"])
    assert [c["data_files"][0]["path"] for c in hub["configs"]] == ["data/train-*", "rejects/train-*"]


def test_data_files_are_a_glob_once_every_shard_is_committed(output):
    from prefgen.dataset.report import data_files

    assert data_files(storage(output["uri"]), "pairs") == ["pairs/part-k1.parquet"]
    os.remove(f"{output['uri']}/pairs/part-uncommitted.parquet")  # what a finished run's sweep does
    assert data_files(storage(output["uri"]), "pairs") == "pairs/part-*.parquet"


def test_size_categories():
    assert [size_category(n) for n in (0, 999, 1000, 99_999, 100_000, 5_000_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "n>1B"]


def test_card_says_what_made_the_data(written):
    card = written["card"]
    for words in ("`org/m1`", "generator g1", "generator **g2** (m2)", "evolver", "judge judge", "criteria: creativity, "
                  "details", "best_vs_worst, minimum margin 1.0", "`0123456789abcdef`", "prefgen 0.1.0",
                  "| `all_tied` | 1 |", "- pairs: 2", "a test warning", "](plots/judge_health.png)",
                  "https://huggingface.co/org/m1", "the terms of the API at https://api.example.com/v1"):
        assert words in card, words
    local = training_snippet(f'"parquet", data_files="{written["uri"]}/pairs/part-*.parquet"')
    assert local in card
    assert 'load_dataset("me/prefs", split="train")' in written["hub_card"]


def test_the_card_loads_the_folder_with_datasets(written):
    import datasets

    cache = f"{written['uri']}-hf-cache"  # datasets caches a folder by its name: this test's own cache
    pairs = datasets.load_dataset(written["uri"], split="train", cache_dir=cache)  # through the card's configs
    assert pairs.num_rows == 2 and pairs[0]["prompt"] == written["pairs"][0]["prompt"]
    rejects = datasets.load_dataset(written["uri"], "rejects", split="train", cache_dir=cache)
    assert rejects["reason"] == ["all_tied"]


def test_a_plot_that_fails_is_named_and_the_rest_written(output, monkeypatch):
    monkeypatch.setattr(plots, "margins", lambda figures: 1 / 0)
    report = write_report(storage(output["uri"]))
    assert "margins.png" not in report.plots and len(report.plots) == len(plots.PLOTS) - 1
    assert report.failed_plots[0].startswith("margins.png: ZeroDivisionError") and "ZeroDivisionError" in report.card


def test_a_report_that_fails_at_the_end_of_a_run_warns(tmp_path):
    said = []
    assert write_report_safely(storage(str(tmp_path / "nothing")), log=said.append) is None
    assert "could not be written" in said[0] and "prefgen report" in said[0]


def test_report_command(written, capsys):
    assert main(["report", written["uri"]]) == 0
    assert "README.md and 8 plot(s)" in capsys.readouterr().out
    assert main(["report", written["uri"] + "/missing"]) == 2
    assert "holds no manifest.json" in capsys.readouterr().err


def test_figures_need_none_of_the_long_texts_left_out(output):
    from prefgen.dataset.report import slim

    full = read_output(storage(output["uri"]), "pairs")
    slimmed = slim(full)
    assert "raw" not in str(slimmed.schema) and "text" not in str(slimmed.schema.field("candidates").type)
    assert figs.dataset_figures(slimmed.to_pylist(), []) == figs.dataset_figures(full.to_pylist(), [])


def test_the_cards_training_block_is_the_one_readme_shows_and_the_dpo_test_runs():
    readme = (REPO / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "DPOTrainer(" in b]
    snippet = training_snippet('"parquet", data_files="prefgen-output/pairs/*.parquet"')
    assert snippet.split("\n", 1)[1] == block  # the card's first line sets MODEL, which README leaves to the reader
    assert TRAINING_SNIPPET.startswith('MODEL = "{model}"')


def test_card_shows_the_pair_checks_verified_share_and_flip_rate():
    from support.report_output import CONFIG

    from prefgen.report.card import counts_section, health_section, what_made_it
    from prefgen.report.health import empty_health, health_figures
    from prefgen.roles.verify.verdicts import verification_figures

    counts = {"pairs_checked": 10, "verified": 6, "flipped": 3, "contradicted": 1, "failed": 0, "flagged": 0,
              "verify_calls": 20, "verify_retries": 0, "verdicts_decided": 20, "first_shown_wins": 13}
    config = CONFIG | {"pairing": CONFIG["pairing"] | {"verification": {"enabled": "auto", "on_fail": "reject"}}}
    manifest = {"config": config, "verification": counts,
                "health": health_figures(empty_health()) | {"pair_verification": verification_figures(counts)}}
    card = "\n".join(what_made_it(manifest) + counts_section(manifest, {"rejects": {}, "instructions": 6, "pairs": 6})
                     + health_section(manifest))
    assert "- pair check: the judge named the better answer of each pair in both orders" in card and "was rejected" in card
    assert "- pair check: 10 pairs checked in both orders, 60% verified, flip rate 30%" in card
    assert ("pair check (both orders): 60% of 10 pairs verified, verdict flipped with the order in 30%, against the "
            "ratings in 10%, no verdict in 0%; answer shown first won 65% of 20 verdicts") in card
    off = what_made_it({"config": CONFIG})
    assert "- pair check: off (no pair was checked in both orders)" in off
