"""The storage object on local disk and on real S3 and GCS API servers (moto and fake-gcs-server on
loopback): every operation, the conditional writes the lease and the commits rely on, the requests a committed
batch costs, and the commit log, lease and compaction running against `s3://`. No Ray, no engine."""

import pickle
import platform
import sys
import threading

import pytest
from support.flaky_storage import crash_after_first_shard_delete
from support.output_rows import pair, reject

import prefgen.output.runstate
from prefgen.output.commits import COMMITS_DIR, FANOUT, CommitLog
from prefgen.output.compaction import compact
from prefgen.input.read import read_parquet
from prefgen.output.storage import Conflict, storage
from prefgen.report.summary import batch_counts
from prefgen.output.compaction import committed_shards
from prefgen.output.lease import LEASE_FILE, StaleLease
from prefgen.output.manifest import ResumeRefused
from prefgen.output.runstate import RunState
from prefgen.output.writer import write_rows

pytestmark = pytest.mark.timeout(120)


# GCS's server comes in a wheel for x86_64 Linux only (pyproject.toml's dev group says the same)
BACKENDS = ["local", "file", "s3"] + (["gcs"] if sys.platform == "linux" and platform.machine() == "x86_64" else [])


@pytest.fixture(params=BACKENDS)
def root(request, tmp_path) -> str:
    """A fresh folder URI on each backend (a local path, a file:// URI, the loopback S3 and GCS servers)."""
    if request.param in ("s3", "gcs"):
        return request.getfixturevalue(request.param)
    return str(tmp_path / "out") if request.param == "local" else f"file://{tmp_path}/out"


def opened(uri) -> RunState:
    state = RunState(storage(uri))
    state.open({}, "cfg", "in", False, log=lambda m: None)
    return state


def write_batches(state, uri, batches: int, rows: int = 4) -> list[str]:
    """Committed batches with both shards (one reject each); returns every id."""
    ids = []
    for b in range(batches):
        batch = [f"r{b:03d}-{i}" for i in range(rows)]
        pairs, rejects = [pair(i) for i in batch[1:]], [reject(batch[0])]
        state.commit(write_rows(storage(uri), state.token, [{"id": i} for i in batch], pairs, rejects))
        ids += batch
    return ids


def followed_ids(uri) -> list[str]:
    """The ids a reader following the commit records sees (pairs and rejects)."""
    store = storage(uri)
    return [i for kind in ("pairs", "rejects") for key in committed_shards(store, kind)
            for i in read_parquet(store, key, columns=["id"])["id"].to_pylist()]


def test_every_operation(root):
    store = storage(root)
    assert store.read_versioned("a/b.json") is None and store.head("a/b.json") is None and not store.exists("a")
    version = store.put("a/b.json", b'{"x": 1}')
    assert store.read("a/b.json") == b'{"x": 1}' and store.read_json("a/b.json") == {"x": 1}
    assert store.read_versioned("a/b.json") == (b'{"x": 1}', version)
    assert store.head("a/b.json").size == 8 and store.exists("a/b.json")
    assert store.kind("a/b.json") == "file" and store.kind("a") == "folder" and store.kind("nothing") is None
    store.put("a/c/d.bin", b"\x00" * 10)
    objects, folders = store.list("a")
    assert [(e.key, e.name, e.size) for e in objects] == [("a/b.json", "b.json", 8)] and folders == ["a/c"]
    assert [e.key for e in store.list_all("a")] == ["a/b.json", "a/c/d.bin"]
    assert store.list("missing") == ([], [])
    store.delete("a/b.json")
    store.delete("a/b.json")  # gone already: no error
    assert not store.exists("a/b.json")
    assert store.delete_prefix("a") == 1 and store.list_all("a") == []
    with pytest.raises(FileNotFoundError, match=f"{root}/a/b.json does not exist"):
        store.read("a/b.json")  # the error names the object
    assert pickle.loads(pickle.dumps(store)).read_versioned("a/b.json") is None  # sent to a Ray worker


def test_put_if_absent_is_refused_the_second_time(root):
    store = storage(root)
    store.put_if_absent("_commits/k.json", b"first")
    with pytest.raises(Conflict, match="k.json exists already"):
        store.put_if_absent("_commits/k.json", b"second")
    assert store.read("_commits/k.json") == b"first"


def test_put_if_match_is_refused_on_a_stale_version(root):
    store = storage(root)
    old = store.put(LEASE_FILE, b"one")
    new = store.put_if_match(LEASE_FILE, b"two", old)
    with pytest.raises(Conflict):
        store.put_if_match(LEASE_FILE, b"three", old)  # someone wrote since `old` was read
    assert store.read_versioned(LEASE_FILE) == (b"two", new)
    store.delete(LEASE_FILE)
    with pytest.raises(Conflict):
        store.put_if_match(LEASE_FILE, b"four", new)  # gone
    assert not store.exists(LEASE_FILE)


def test_two_runs_taking_the_lease_at_once_exactly_one_wins(root, monkeypatch):
    opened(root).fail("killed")  # a resumable folder with a lease
    both_read = threading.Barrier(2)
    take = prefgen.output.runstate.take_lease

    def after_both_read(store, token, seen):
        both_read.wait(timeout=30)  # each has read the same lease version
        return take(store, token, seen)

    monkeypatch.setattr(prefgen.output.runstate, "take_lease", after_both_read)
    outcomes = []

    def resume():
        try:
            outcomes.append(opened(root).token)
        except ResumeRefused as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=resume) for _ in range(2)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    won = [o for o in outcomes if isinstance(o, str)]
    lost = [o for o in outcomes if isinstance(o, ResumeRefused)]
    assert len(won) == 1 and len(lost) == 1 and "at the same time" in str(lost[0])
    assert storage(root).read_json(LEASE_FILE)["token"] == won[0]


def test_a_run_whose_lease_was_taken_cannot_claim_it_again(root):
    first = opened(root)
    storage(root).delete(LEASE_FILE)  # its driver looked dead...
    second = opened(root)  # ...and another run took the folder
    with pytest.raises(StaleLease):
        first.claim("/tmp/ray/session_x")
    second.claim("/tmp/ray/session_y")  # the owner rewrites its own lease
    assert storage(root).read_json(LEASE_FILE)["token"] == second.token


def test_a_second_commit_of_a_batch_keeps_the_first(root):
    state = opened(root)
    rows = [reject("a")]
    first = batch_counts("k", rows, [], rows)
    state.commit(first)
    other = CommitLog.read(storage(root))
    other.keys.clear()  # another driver that never saw it
    assert other.add(dict(first, pairs=99)) == first  # refused: the stored commit stands
    assert CommitLog.read(storage(root)).commits() == [first]


def test_a_committed_batch_on_s3_costs_three_puts_and_no_copy(s3):
    state = opened(s3)
    requests = storage(s3).requests
    requests.reset()
    ids = write_batches(state, s3, 1)
    calls = requests.snapshot()["requests"]
    assert calls == {"PUT": 3, "GET": 1, "LIST": 0, "DELETE": 0, "COPY": 0, "HEAD": 0}  # 1 GET: the lease, read once
    keys = [e.key for e in storage(s3).list_all()]
    assert not [k for k in keys if k.endswith("/") or "tmp" in k]  # no marker, no temporary object
    batch = state.commits[0]["key"]
    assert sorted(keys) == sorted([f"{COMMITS_DIR}/{batch}.json", LEASE_FILE, "manifest.json",
                                   f"pairs/part-{batch}.parquet", f"rejects/part-{batch}.parquet"])
    assert sorted(followed_ids(s3)) == sorted(ids)


def test_batches_on_s3_cost_three_puts_each_and_a_resume_reads_only_live_commit_objects(s3):
    state = opened(s3)
    requests = storage(s3).requests
    requests.reset()
    ids = write_batches(state, s3, FANOUT + 2)  # the 16th commit is written as a segment holding the first 16
    assert requests.snapshot()["requests"] == {"PUT": 3 * (FANOUT + 2), "GET": 1, "LIST": 0, "DELETE": 0, "COPY": 0,
                                               "HEAD": 0}
    names = [e.name for e in storage(s3).list(COMMITS_DIR)[0]]
    assert sum(n.startswith("seg-1-") for n in names) == 1 and len(names) == FANOUT + 2  # 15 covered, not deleted yet
    storage(s3).delete(LEASE_FILE)  # the driver died
    requests.reset()
    resumed = opened(s3)
    assert resumed.done_ids == set(ids)
    assert requests.in_folder("GET", f"{s3}/{COMMITS_DIR}") == 3  # the segment and the two commits after it
    assert requests.calls["DELETE"] == 1  # the covered 15, in one bulk request
    assert requests.in_folder("LIST", f"{s3}/pairs") == requests.in_folder("LIST", f"{s3}/rejects") == 0
    assert len(storage(s3).list(COMMITS_DIR)[0]) == 3
    requests = storage(s3).requests
    requests.reset()
    resumed.finish({}, target_bytes=10**9)
    assert requests.calls["COPY"] == 0
    pairs = [e.name for e in storage(s3).list("pairs")[0]]
    assert len(pairs) == 1 and pairs[0].startswith("part-merged-")
    assert sorted(followed_ids(s3)) == sorted(ids)
    store = storage(s3)
    plain = [i for e in store.list_all() if e.name.endswith(".parquet")
             for i in read_parquet(store, e.key, columns=["id"])["id"].to_pylist()]
    assert sorted(plain) == sorted(ids)  # a complete folder: each row once, in plain listing too
    assert not storage(s3).exists(LEASE_FILE)


class Crash(Exception):
    pass


@pytest.mark.parametrize("step", ["written", "recorded", "deleted one"])
def test_a_crash_in_a_merge_on_s3_leaves_every_row_once(s3, monkeypatch, step):
    state = opened(s3)
    ids = write_batches(state, s3, 4)

    def crash(at):
        if at == step:
            raise Crash(at)

    monkeypatch.setattr(prefgen.output.runstate, "compact", lambda *a, **k: compact(*a, **k, after_step=crash))
    if step == "deleted one":
        crash_after_first_shard_delete(monkeypatch, Crash(step))
    with pytest.raises(Crash):
        state.finish({}, target_bytes=10**9)
    assert sorted(followed_ids(s3)) == sorted(ids)
    monkeypatch.undo()
    storage(s3).delete(LEASE_FILE)
    resumed = opened(s3)  # finishes a recorded merge, sweeps an unrecorded one
    assert sorted(followed_ids(s3)) == sorted(ids)
    resumed.finish({}, target_bytes=10**9)
    assert sorted(followed_ids(s3)) == sorted(ids)
    assert len(storage(s3).list("pairs")[0]) == 1


def test_datasets_loads_pairs_straight_from_s3(s3, tmp_path):
    """`datasets` reads s3:// through s3fs, which finds the server through AWS_ENDPOINT_URL too."""
    import datasets

    state = opened(s3)
    ids = write_batches(state, s3, 2)
    state.finish({})
    loaded = datasets.load_dataset("parquet", data_files=f"{s3}/pairs/*.parquet", split="train",
                                   cache_dir=str(tmp_path / "cache"))
    assert sorted(loaded["id"]) == sorted(i for i in ids if not i.endswith("-0"))


def test_report_and_export_read_and_write_on_s3(s3):
    """`prefgen report` and `prefgen export` on an output on S3: committed shards only, card, plots, JSONL."""
    import json

    from support.report_output import write_output

    from prefgen.dataset.report import write_report
    from prefgen.dataset.export import export

    output = write_output(s3)
    report = write_report(storage(s3))
    store = storage(s3)
    assert store.read("README.md").decode() == report.card and report.plots
    assert sorted(e.name for e in store.list("plots")[0]) == sorted(report.plots)
    target, n, selection = export(s3, "trl-strings")
    assert target == f"{s3}/export/pairs.trl.jsonl" and n == len(output["pairs"]) == 2 and selection is None  # not the uncommitted shard
    lines = store.read("export/pairs.trl.jsonl").splitlines()
    assert [json.loads(line)["prompt"] for line in lines] == ["Say A.", "Say B."]
    assert store.requests.calls["COPY"] == 0


def test_the_report_command_in_another_process_finds_the_server_through_the_environment(s3):
    """A subprocess (as a Ray worker or a user's shell) reaches the server through AWS_ENDPOINT_URL alone."""
    import subprocess
    import sys

    from support.report_output import write_output

    write_output(s3)
    done = subprocess.run([sys.executable, "-m", "prefgen.cli", "report", s3], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert storage(s3).read("README.md").startswith(b"---")


def test_a_store_without_conditional_writes_is_checked_by_a_read_first(s3, monkeypatch, capsys):
    from prefgen.output.object_store import ObjectBackend
    from prefgen.output.storage import Storage

    monkeypatch.setenv("AWS_CONDITIONAL_PUT", "disabled")  # what obstore is told for such a store
    store = Storage(s3, ObjectBackend(f"s3://{s3.split('/')[2]}"))
    version = store.put_if_absent(LEASE_FILE, b"one")
    with pytest.raises(Conflict):
        store.put_if_absent(LEASE_FILE, b"two")
    store.put_if_match(LEASE_FILE, b"three", version)
    with pytest.raises(Conflict):
        store.put_if_match(LEASE_FILE, b"four", version)
    assert store.read(LEASE_FILE) == b"three"
    assert "does not do conditional writes" in capsys.readouterr().out


def test_input_files_are_read_from_s3(s3):
    """JSONL, CSV and Parquet input on S3, read through the same storage object; a missing one is named."""
    import pyarrow as pa

    from prefgen.config import InputConfig
    from prefgen.input.read import InputError, read_instructions
    from prefgen.output.files import parquet_bytes

    store = storage(s3)
    store.put("in.jsonl", b'{"instruction": "one"}\n{"instruction": ""}\n')
    store.put("in.csv", b"instruction\none\n")
    store.put("in.parquet", parquet_bytes(pa.table({"instruction": ["one", "two"]})))
    got = {name: read_instructions(InputConfig(path=f"{s3}/{name}")) for name in ("in.jsonl", "in.csv", "in.parquet")}
    assert {name: (len(g.rows), len(g.rejects)) for name, g in got.items()} == {
        "in.jsonl": (1, 1), "in.csv": (1, 0), "in.parquet": (2, 0)}
    with pytest.raises(InputError, match=f"input {s3}/nope.jsonl does not exist"):
        read_instructions(InputConfig(path=f"{s3}/nope.jsonl"))


RACE = """
import sys, time
import prefgen.output.local_store as local
from prefgen.output.storage import Conflict, storage
real = local.version_of
local.version_of = lambda data: (time.sleep(0.3), real(data))[1]  # a slow compare: a wide window
store, version, start = storage(sys.argv[1]), sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))
try:
    store.put_if_match("_lease.json", sys.argv[4].encode(), version)
    print("won")
except Conflict:
    print("lost")
"""


def test_processes_racing_put_if_match_on_local_disk_one_wins(tmp_path):
    """The local guarantee holds between processes (the lock is `flock`, not a thread lock)."""
    import subprocess
    import sys
    import time

    store = storage(str(tmp_path))
    version = store.put(LEASE_FILE, b"old")
    start = time.time() + 3  # both processes are up by then and write at the same instant
    racers = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), version, str(start), f"run{i}"],
                               stdout=subprocess.PIPE, text=True) for i in range(4)]
    results = [r.communicate(timeout=60)[0].strip() for r in racers]
    assert sorted(results) == ["lost", "lost", "lost", "won"]
    assert store.read(LEASE_FILE).decode() == f"run{results.index('won')}"


@pytest.mark.parametrize("scheme, env, allowed", [
    ("s3", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}, True),  # a MinIO or a test server
    ("s3", {"AWS_ENDPOINT_URL": "https://minio.example.com"}, False),
    ("s3", {}, False),
    ("gs", {"GOOGLE_ALLOW_HTTP": "true"}, True),  # a GCS emulator
    ("gs", {"AWS_ALLOW_HTTP": "true"}, False),  # another store's variable
    ("az", {"AZURE_ALLOW_HTTP": "1"}, True),
    ("gs", {"ALLOW_HTTP": "true"}, True),
    ("gs", {"GOOGLE_ALLOW_HTTP": "false"}, False),
])
def test_plain_http_follows_the_stores_own_variables(monkeypatch, scheme, env, allowed):
    """prefgen passes obstore client options (the timeout), which hide obstore's own reading of
    `*_ALLOW_HTTP`: prefgen reads them instead, per store."""
    from prefgen.output.object_store import _allow_http

    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ALLOW_HTTP", "GOOGLE_ALLOW_HTTP",
                 "AZURE_ALLOW_HTTP", "ALLOW_HTTP"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _allow_http(scheme) is allowed


@pytest.mark.parametrize("store, requests", [("s3", 1)] + ([("gcs", 3)] if "gcs" in BACKENDS else []))
def test_a_bulk_delete_is_counted_as_the_requests_each_store_sends(request, store, requests):
    """S3: one DeleteObjects for 3 keys; GCS has no bulk delete in the API obstore speaks: 3 DELETEs."""
    from prefgen.output.object_store import ObjectBackend

    uri = request.getfixturevalue(store)
    scheme, _, path = uri.partition("://")
    backend = ObjectBackend(f"{scheme}://{path.split('/')[0]}")
    keys = [f"{path}/d/{i}" for i in range(3)]
    for key in keys:
        backend.put(key, b"x", key)
    backend.requests.reset()
    backend.delete_many(keys)
    assert backend.requests.snapshot()["requests"]["DELETE"] == requests
    assert not backend.list_all(f"{path}/d")
