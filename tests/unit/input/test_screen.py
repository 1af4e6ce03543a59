"""Input screening: near-duplicates (MinHash + LSH, source order) and decontamination, without Ray."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from datasketch import LeanMinHash, MinHashLSH

from prefgen.config import ConfigError, InputConfig, parse_config
from prefgen.input.read import InputError, InputRows
from prefgen.input.near_duplicates import band_groups, band_layout, candidates, signatures
from prefgen.input.screen import digest_ids, prepare, screen_input

PHOTO = "Explain how photosynthesis converts sunlight, water and carbon dioxide into glucose and oxygen in plants."
PHOTO_EDITED = "Explain how photosynthesis converts sunlight, water and carbon dioxide into sugar and oxygen in plants."
HAIKU = "Write a haiku about autumn rain falling on an old wooden temple roof at night."
LIBRARY = "List five practical ways a small town library could attract more teenage readers this summer."
GSM = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
       "How many clips did Natalia sell altogether in April and May?")


def rows_of(texts, source="in.jsonl"):
    rows = InputRows(source=source)
    for line, text in enumerate(texts, start=1):
        rows.add(line, {"instruction": text})
    return rows


def screen(texts, **input_cfg):
    rows = rows_of(texts)
    cfg = InputConfig.model_validate(input_cfg)
    counts = screen_input(rows, cfg, prepare(cfg))
    return rows, counts


def by_line(rows):
    return {r["line"]: (r["reason"], r["detail"]) for r in rows.rejects}


def test_an_edited_sentence_is_a_near_duplicate_of_the_first_row_and_an_unrelated_one_is_kept():
    rows, counts = screen([PHOTO, HAIKU, PHOTO_EDITED])
    assert counts == {"contaminated": 0, "near_duplicate": 1}
    assert [r["line"] for r in rows.rows] == [1, 2]
    reason, detail = by_line(rows)[3]
    assert reason == "near_duplicate"
    assert "in.jsonl line 1" in detail


def test_threshold_decides_an_edit_of_jaccard_0_875():
    # one word of 15 changed: true Jaccard of the word sets is 14/16
    assert screen([PHOTO, PHOTO_EDITED], near_duplicates={"threshold": 0.8})[1]["near_duplicate"] == 1
    assert screen([PHOTO, PHOTO_EDITED], near_duplicates={"threshold": 0.97})[1]["near_duplicate"] == 0
    assert screen([PHOTO, PHOTO_EDITED], near_duplicates={"enabled": False})[1]["near_duplicate"] == 0


def test_the_first_row_in_source_order_is_kept_and_decisions_repeat():
    texts = [HAIKU, PHOTO_EDITED, PHOTO, PHOTO_EDITED + " Thanks!", "What is 2 + 2?"]
    first, _ = screen(texts)
    again, _ = screen(texts)
    assert by_line(first) == by_line(again)
    assert {line: detail.split(" (")[0] for line, (_, detail) in by_line(first).items()} == {
        3: "near-duplicate of in.jsonl line 2", 4: "near-duplicate of in.jsonl line 2"}
    flipped, _ = screen([HAIKU, PHOTO, PHOTO_EDITED])  # the other one comes first now, and is kept
    assert list(by_line(flipped)) == [3] and "line 2" in by_line(flipped)[3][1]


def test_a_row_without_words_is_never_a_near_duplicate():
    rows, counts = screen(["???", "!!!", HAIKU])
    assert counts["near_duplicate"] == 0 and len(rows.rows) == 3


def test_lsh_candidates_are_those_of_datasketch_minhashlsh():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(60)]
    base = [list(rng.choice(vocab, 12, replace=False)) for _ in range(30)]
    texts = [" ".join(b) for b in base] + [" ".join(b[:-1] + ["zz"]) for b in base[:10]]
    sigs, valid = signatures(texts, 128, 1)
    bands, rows = band_layout(0.8, 128)
    groups = band_groups(sigs, bands, rows)
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    for i, sig in enumerate(sigs):
        lsh.insert(i, LeanMinHash(seed=1, hashvalues=sig, scheme="affine32"))
    for i, sig in enumerate(sigs):
        theirs = set(lsh.query(LeanMinHash(seed=1, hashvalues=sig, scheme="affine32"))) - {i}
        ours = {j for j in range(len(texts)) if j != i and (groups[:, j] == groups[:, i]).any()}
        assert ours == theirs
    shared = candidates(groups, valid)
    assert shared[30:].sum() >= 3  # some edited copies share a band with their original (J = 11/13)
    assert all(shared[i] == (groups[:, i][:, None] == np.delete(groups, i, axis=1)).any() for i in range(40))


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_contaminated_row_names_the_benchmark_file_and_line(tmp_path):
    bench = write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": HAIKU + " " + LIBRARY}, {"question": GSM}])
    rows, counts = screen([PHOTO, "Please solve: " + GSM.upper(), HAIKU], decontaminate=[bench])
    assert counts == {"contaminated": 1, "near_duplicate": 0}
    reason, detail = by_line(rows)[2]
    assert reason == "contaminated" and f"{bench} line 2" in detail and "100%" in detail
    assert [r["line"] for r in rows.rows] == [1, 3]  # the haiku covers half of item 1: not past 0.5


def test_contamination_threshold_and_short_items(tmp_path):
    words = GSM.split()
    half = " ".join(words[: len(words) * 6 // 10])  # the first 60% of the item's words
    bench = write_jsonl(tmp_path / "b.jsonl", [{"prompt": GSM}, {"prompt": "What is 2 + 2?"}])
    assert screen([half], decontaminate=[bench])[1]["contaminated"] == 1
    assert screen([half], decontaminate=[bench], contamination={"threshold": 0.7})[1]["contaminated"] == 0
    # an item shorter than n words has no n-gram: it matches nothing
    assert screen(["What is 2 + 2?"], decontaminate=[bench])[1]["contaminated"] == 0
    assert screen(["What is 2 + 2?"], decontaminate=[bench], contamination={"ngram": 3})[1]["contaminated"] == 1


def test_contaminated_rows_go_first_so_a_near_duplicate_points_at_a_kept_row(tmp_path):
    """Line 1 is the benchmark item itself; the edit (line 2) shares 10 of its 15 words in 8-grams
    with it (0.67, under a 0.7 threshold), so it is clean, though a near-duplicate of line 1; line 3
    nearly repeats both. Line 1 goes first, so line 2 is kept and line 3 points at line 2, never at
    the removed line 1."""
    bench = write_jsonl(tmp_path / "b.jsonl", [{"prompt": PHOTO}])
    rows, counts = screen([PHOTO, PHOTO_EDITED, PHOTO_EDITED + " Thanks!"], decontaminate=[bench],
                          contamination={"threshold": 0.7})
    assert counts == {"contaminated": 1, "near_duplicate": 1}
    rejected = by_line(rows)
    assert rejected[1][0] == "contaminated" and [r["line"] for r in rows.rows] == [2]
    reason, detail = rejected[3]
    assert reason == "near_duplicate" and "in.jsonl line 2" in detail


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv", "datasets"])
def test_each_benchmark_format_with_default_and_named_field(tmp_path, fmt):
    records = [{"id": 1, "question": HAIKU}, {"id": 2, "question": GSM}]
    if fmt == "jsonl":
        path = write_jsonl(tmp_path / "b.jsonl", records)
    elif fmt == "parquet":
        path = str(tmp_path / "b.parquet")
        pq.write_table(pa.Table.from_pylist(records), path)
    elif fmt == "csv":
        path = str(tmp_path / "b.csv")
        pacsv.write_csv(pa.Table.from_pylist(records), path)
    else:
        import datasets

        path = str(tmp_path / "b_ds")
        datasets.Dataset.from_list(records).save_to_disk(path)
    rows, counts = screen([GSM, PHOTO], decontaminate=[path])
    line = 3 if fmt == "csv" else 2  # the line in the file (CSV: after its header); Parquet/datasets: the row
    assert counts["contaminated"] == 1 and f"{path} line {line} " in by_line(rows)[1][1]
    rows, counts = screen([GSM, PHOTO], decontaminate=[{"path": path, "field": "question"}])
    assert counts["contaminated"] == 1


def test_unusable_benchmark_files_fail_up_front_naming_them(tmp_path):
    def load(bench):
        return prepare(InputConfig.model_validate({"decontaminate": [bench]}))

    with pytest.raises(InputError, match="missing.jsonl.*does not exist"):
        load(str(tmp_path / "missing.jsonl"))
    bench = write_jsonl(tmp_path / "b.jsonl", [{"body": GSM}])
    with pytest.raises(InputError, match="none of the fields prompt, instruction.*fields: body"):
        load(bench)
    with pytest.raises(InputError, match="no field 'query'"):
        load({"path": bench, "field": "query"})
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"prompt": \n')
    with pytest.raises(InputError, match="bad.jsonl line 2"):
        load(str(tmp_path / "bad.jsonl"))


@pytest.mark.parametrize("data, key", [
    ({"near_duplicates": {"threshold": 1.5}}, "input.near_duplicates.threshold"),
    ({"near_duplicates": {"treshold": 0.5}}, "input.near_duplicates.treshold"),
    ({"decontaminate": [{"file": "x.jsonl"}]}, "input.decontaminate.0.path"),
    ({"decontaminate": [{"path": "x.jsonl", "format": "xml"}]}, "input.decontaminate.0.format"),
    ({"contamination": {"threshold": 1}}, "input.contamination.threshold"),
    ({"contamination": {"ngram": 0}}, "input.contamination.ngram"),
])
def test_config_errors_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config({"input": data})


def test_the_input_digest_follows_screening_decisions(tmp_path):
    bench = write_jsonl(tmp_path / "b.jsonl", [{"prompt": GSM}])
    texts = [PHOTO, HAIKU, PHOTO_EDITED, GSM]
    plain = rows_of(texts)
    assert digest_ids(plain) == sorted(r["id"] for r in plain.rows)  # no screening: the ids as before
    default, _ = screen(texts, decontaminate=[bench])
    same, _ = screen(texts, decontaminate=[bench], near_duplicates={"threshold": 0.75})  # the same rows go
    stricter, _ = screen(texts, decontaminate=[bench], near_duplicates={"threshold": 0.97})
    no_bench, _ = screen(texts)
    assert digest_ids(default) == digest_ids(same)
    assert len({tuple(digest_ids(r)) for r in (default, stricter, no_bench, plain)}) == 4


ANSWERS = [("Plants use light to split water and fix carbon dioxide into glucose, releasing oxygen.",
            "Photosynthesis happens in the roots at night."),
           ("Chlorophyll absorbs sunlight; the energy builds sugar from carbon dioxide and water, and oxygen is "
            "given off as a by-product.", "It is how plants breathe in oxygen.")]


def preference_rows(records):
    rows = InputRows(source="prefs.jsonl", prompt_field="prompt", responses=["chosen", "rejected"])
    for line, (prompt, chosen, rejected) in enumerate(records, start=1):
        rows.add(line, {"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def test_rows_sharing_a_prompt_with_other_responses_are_not_near_duplicates():
    # preference data to re-judge: one prompt, several rows of different answers (configs/rejudge.yaml)
    rows = preference_rows([(PHOTO, *ANSWERS[0]), (PHOTO, *ANSWERS[1]), (PHOTO_EDITED, *ANSWERS[0])])
    cfg = InputConfig.model_validate({"preference": True})
    counts = screen_input(rows, cfg, prepare(cfg))
    assert [r["line"] for r in rows.rows] == [1, 2] and counts["near_duplicate"] == 1
    reason, detail = by_line(rows)[3]  # a near-duplicate prompt with the same answers still is one
    assert reason == "near_duplicate" and "prefs.jsonl line 1" in detail and "responses" in detail


def test_the_ray_stage_reads_the_responses_too():
    from prefgen.input.screen import _ray_batch, per_row

    cfg = InputConfig.model_validate({"preference": True})
    texts, answers = [PHOTO, PHOTO], ["\n\n".join(ANSWERS[0]), "\n\n".join(ANSWERS[1])]
    batch = {"position": np.arange(2), "text": np.array(texts, object), "responses": np.array(answers, object)}
    out = _ray_batch(batch, cfg.model_dump(mode="json"), None)
    local = per_row(texts, cfg, None, answers)
    assert (out["rsig"] == local["rsig"]).all() and not (out["rsig"][0] == out["rsig"][1]).all()
