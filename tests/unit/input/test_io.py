"""Reading input: every row ends up usable or rejected with its reason and line; ids are stable."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefgen.config import InputConfig
from prefgen.input.read import InputError, read_instructions
from prefgen.output.files import write_shard
from prefgen.schema import REJECT_ROW
from prefgen.output.storage import storage


def write_lines(path, lines: list[bytes]):
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_jsonl_bad_lines_each_get_a_reason(tmp_path):
    path = write_lines(
        tmp_path / "in.jsonl",
        [
            json.dumps({"instruction": "What is synthetic data?"}).encode(),  # 1 ok
            b'{"instruction": "unterminated',  # 2
            b"\xff\xfe not utf-8",  # 3
            json.dumps({"prompt": "wrong field"}).encode(),  # 4
            json.dumps({"instruction": 42}).encode(),  # 5
            json.dumps({"instruction": "   "}).encode(),  # 6
            b"",  # 7 blank: not a row
            json.dumps(["a", "list"]).encode(),  # 8
            json.dumps({"instruction": "What is  synthetic data?"}).encode(),  # 9 duplicate of 1
            json.dumps({"instruction": "Why is the sky blue?"}).encode(),  # 10 ok
            json.dumps({"instruction": None}).encode(),  # 11
        ],
    )
    got = read_instructions(InputConfig(path=str(path)))
    assert [(r["line"], r["instruction"]) for r in got.rows] == [(1, "What is synthetic data?"), (10, "Why is the sky blue?")]
    reasons = {r["line"]: r["reason"] for r in got.rejects}
    assert reasons == {
        2: "malformed_json",
        3: "invalid_utf8",
        4: "missing_field",
        5: "instruction_not_string",
        6: "empty_instruction",
        8: "malformed_json",
        9: "duplicate_instruction",
        11: "instruction_not_string",
    }
    assert got.total == 10
    assert all(r["source"] == str(path) for r in got.rejects)
    details = {r["line"]: r["detail"] for r in got.rejects}
    assert "line 1" in details[9]
    assert (details[5], details[11]) == ("instruction is int, not text", "instruction is null, not text")


def test_ids_are_stable_and_distinct(tmp_path):
    path = write_lines(tmp_path / "in.jsonl", [json.dumps({"instruction": f"q{i}"}).encode() for i in range(5)])
    first = [r["id"] for r in read_instructions(InputConfig(path=str(path))).rows]
    second = [r["id"] for r in read_instructions(InputConfig(path=str(path))).rows]
    assert first == second and len(set(first)) == 5


def test_limit_counts_input_rows(tmp_path):
    path = write_lines(tmp_path / "in.jsonl", [b"{bad", *[json.dumps({"instruction": f"q{i}"}).encode() for i in range(5)]])
    got = read_instructions(InputConfig(path=str(path), limit=3))
    assert got.total == 3 and len(got.rows) == 2


def test_parquet_and_csv_and_custom_field(tmp_path):
    pq.write_table(pa.table({"question": ["a?", None, "b?"]}), tmp_path / "in.parquet")
    got = read_instructions(InputConfig(path=str(tmp_path / "in.parquet"), field="question"))
    assert [r["instruction"] for r in got.rows] == ["a?", "b?"]
    assert [(r["line"], r["reason"]) for r in got.rejects] == [(2, "missing_field")]

    (tmp_path / "in.csv").write_text('question,x\n"multi\nline?",1\n,2\nc?,3\n')
    got = read_instructions(InputConfig(path=str(tmp_path / "in.csv"), field="question"))
    assert [(r["line"], r["instruction"]) for r in got.rows] == [(3, "multi\nline?"), (5, "c?")]
    assert [(r["line"], r["reason"]) for r in got.rejects] == [(4, "empty_instruction")]


def test_a_byte_order_mark_is_skipped_in_jsonl_and_csv(tmp_path):
    bom = b"\xef\xbb\xbf"
    lines = [json.dumps({"instruction": "First?"}).encode(), json.dumps({"instruction": "Second?"}).encode()]
    marked = read_instructions(InputConfig(path=str(write_lines(tmp_path / "in.jsonl", [bom + lines[0], lines[1]]))))
    assert marked.rejects == [] and [(r["line"], r["instruction"]) for r in marked.rows] == [(1, "First?"), (2, "Second?")]

    (tmp_path / "excel.csv").write_bytes(bom + "question,x\r\nWhy?,1\r\n".encode())
    got = read_instructions(InputConfig(path=str(tmp_path / "excel.csv"), field="question"))
    assert got.rejects == [] and [(r["line"], r["instruction"]) for r in got.rows] == [(2, "Why?")]


def test_csv_that_is_not_utf8_names_the_line(tmp_path):
    (tmp_path / "latin.csv").write_bytes(b"question\nok?\ncaf\xe9?\n")
    with pytest.raises(InputError, match="latin.csv: line 3 is not UTF-8"):
        read_instructions(InputConfig(path=str(tmp_path / "latin.csv"), field="question"))


def test_datasets_folder(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"instruction": ["x?", "y?"]}).save_to_disk(str(tmp_path / "ds"))
    got = read_instructions(InputConfig(path=str(tmp_path / "ds")))
    assert [r["instruction"] for r in got.rows] == ["x?", "y?"]


def test_unusable_input_fails_up_front(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_instructions(InputConfig(path=str(tmp_path / "nope.jsonl")))
    pq.write_table(pa.table({"q": ["a"]}), tmp_path / "in.parquet")
    with pytest.raises(InputError, match="no column 'instruction'"):
        read_instructions(InputConfig(path=str(tmp_path / "in.parquet")))
    (tmp_path / "in.txt").write_text("x")
    with pytest.raises(InputError, match="set input.format"):
        read_instructions(InputConfig(path=str(tmp_path / "in.txt")))


def test_bundled_sample_is_the_default():
    got = read_instructions(InputConfig())
    assert got.total >= 10 and not got.rejects


def test_shard_written_atomically_through_a_uri(tmp_path):
    uri = f"file://{tmp_path}/out"
    (tmp_path / "out" / "rejects").mkdir(parents=True)
    row = {"id": "a", "instruction": "q", "source": "s", "line": 1, "reason": "r", "detail": None, "candidates": []}
    shard = write_shard(storage(uri), "rejects", "k1", [row], REJECT_ROW)
    assert shard.endswith("rejects/part-k1.parquet") and pq.read_table(shard).num_rows == 1

    def refuse():
        raise RuntimeError("lost the lease")

    with pytest.raises(RuntimeError):
        write_shard(storage(uri), "rejects", "k2", [row], REJECT_ROW, before_visible=refuse)
    assert sorted(p.name for p in (tmp_path / "out" / "rejects").iterdir()) == ["part-k1.parquet"]


def _folder_not_saved_by_datasets(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "notes.jsonl").write_text('{"instruction": "x?"}\n')  # a folder, but no save_to_disk layout
    return folder, "datasets"


def _corrupt_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    pq.write_table(pa.table({"instruction": ["x?", "y?"]}), path)
    path.write_bytes(path.read_bytes()[:-20] + b"\0" * 20)  # the footer overwritten
    return path, "Parquet"


def _not_parquet(tmp_path):
    path = tmp_path / "text.parquet"
    path.write_text("instruction\nx?\n")
    return path, "Parquet"


@pytest.mark.parametrize("make", [_folder_not_saved_by_datasets, _corrupt_parquet, _not_parquet])
def test_an_unreadable_folder_or_parquet_file_is_an_input_error_naming_it(tmp_path, make, capsys):
    from prefgen.cli import main

    path, kind = make(tmp_path)
    with pytest.raises(InputError, match=f"{path}.*{kind}"):
        read_instructions(InputConfig(path=str(path)))
    assert main(["run", "--input", str(path), "--output", str(tmp_path / "out")]) == 2  # bad input, no traceback
    assert str(path) in capsys.readouterr().err
