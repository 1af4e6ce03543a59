"""The last stage's writes, and what the driver makes of batches that never came back.

A batch's shards are written with retries: a storage error (an `OSError`, see `prefgen.output.storage`) is
retried with growing pauses, since object stores and network filesystems fail transiently.
A lost lease (`StaleLease`) is not a storage error and is never retried. A write that still
fails does not fail the writer task: it returns a report naming the batch's ids as not
written, with the error, so the driver rejects them as `write_failed` and says so, instead of
Ray Data skipping the task and the rows passing for an engine fault. A shard the failed write
may already have put in place has no commit, and the run sweeps it before it ends.

A batch an endpoint stopped (its rows marked STOPPED: an error that would fail every row, see
`engines/endpoint.py`) is neither written nor committed: its report says why and the driver stops the
run with `RunStopped`, the folder resumable.

Likewise a batch whose pairing raised is reported, its rows `stage_error`. Rows missing from
every report are the ones whose batch Ray Data skipped after its engine actors died on every
retry: the pipeline runs them again, and those still missing are `worker_failed`.

Rejects for a fault (`schema.FAULT_REASONS`: `worker_failed`, `write_failed`, `request_failed`)
are never written with a batch's other rows: the writer reports them (`faults`), and the driver
writes them as batches of their own whose commits say `fault`, so that a rerun of the same
command can retire those commits and redo their rows (`commits.py`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable

import pyarrow as pa

from prefgen.engines.ray_context import current_node_id
from prefgen.output.files import PAIRS_DIR, REJECTS_DIR, write_shard
from prefgen.output.storage import WRITE_ATTEMPTS, WRITE_PAUSE_S, Storage
from prefgen.output.storage import with_retries as retrying
from prefgen.roles.pair import split_rows
from prefgen.report.summary import batch_counts
from prefgen.output.lease import LEASE_CHECK_S, StaleLease, check_lease
from prefgen.output.runstate import RunState, batch_key
from prefgen.schema import (
    FAULT_REASONS,
    PAIR_ROW,
    REJECT_REQUEST_FAILED,
    REJECT_ROW,
    REJECT_STAGE_ERROR,
    REJECT_WORKER_FAILED,
    REJECT_WRITE_FAILED,
    STOPPED,
    reject_row,
)


class RunStopped(RuntimeError):
    """An endpoint error that would fail every row stopped the run; the folder stays resumable."""


def with_retries(write: Callable[[], str], attempts: int = WRITE_ATTEMPTS, pause_s: float = WRITE_PAUSE_S,
                 sleep: Callable[[float], None] = time.sleep, log=print) -> str:
    """Call `write` until it succeeds; retry storage errors (OSError) with doubling pauses, never a lost lease."""
    return retrying(write, attempts, pause_s, sleep, log, no_retry=(StaleLease,))


def write_rows(output: Storage, token: str, rows: list[dict], pairs: list[dict], rejects: list[dict], tag: str = "",
               sleep: Callable[[float], None] = time.sleep) -> dict:
    """Write one batch's shards (fenced by the run's lease token, retried) and return its report.

    The shard key derives from the batch's ids (and `tag`, for batches the driver writes), so
    a retried writer rewrites the same files instead of adding new ones."""
    key = batch_key([tag, *(r["id"] for r in rows)] if tag else [r["id"] for r in rows])
    for kind, items, schema in ((PAIRS_DIR, pairs, PAIR_ROW), (REJECTS_DIR, rejects, REJECT_ROW)):
        if items:
            with_retries(lambda: write_shard(output, kind, key, items, schema,
                                             before_visible=lambda: check_lease(output, token, LEASE_CHECK_S)),
                        sleep=sleep)
    return batch_counts(key, rows, pairs, rejects)


def write_batch(batch: pa.Table, output: Storage, token: str, pairing: dict, seed: int,
                sleep: Callable[[float], None] = time.sleep) -> pa.Table:
    """Last stage: pair the batch, write its shards, return its report as one row.

    `pairing`: the config's `pairing` as a dict, plus `verifies`: whether the pair check ran (its
    `auto` resolved, `config/checks.py` verifies), so that its verdicts decide which pairs stay.

    A batch an endpoint stopped is reported as `stop`, unwritten. A batch this stage cannot
    finish is reported instead, its ids under `failed` with the
    reason its rows get: `write_failed` (storage, after every try) or `stage_error` (pairing
    raised), so that the driver does not take them for an engine fault."""
    rows = batch.to_pylist()
    stopped = next((r["reject_detail"] for r in rows if r["reject_reason"] == STOPPED), None)
    if stopped:
        return pa.Table.from_pylist([{"report": json.dumps({"stop": stopped})}])
    ids = sorted(r["id"] for r in rows)
    try:
        on_fail = pairing["verification"]["on_fail"] if pairing.get("verifies") else None  # the check ran
        pairs, rejects = split_rows(rows, pairing["strategy"], pairing["min_margin"], pairing["length_matched"], seed,
                                    pairing["allow_truncated_chosen"], on_fail)
    except Exception as exc:  # noqa: BLE001 - a bug in pairing: the rows say so
        report = {"failed": ids, "reason": REJECT_STAGE_ERROR, "error": f"pairing: {exc!r}"}
        return pa.Table.from_pylist([{"report": json.dumps(report)}])
    faults = {r["id"]: [r["reason"], r["detail"]] for r in rejects if r["reason"] in FAULT_REASONS}
    kept = [r for r in rows if r["id"] not in faults]
    report = {}
    if kept:
        try:
            report = write_rows(output, token, kept, pairs, [r for r in rejects if r["id"] not in faults], sleep=sleep)
            report["node"] = current_node_id()  # its commit says where it was written (None outside Ray)
        except OSError as exc:
            report = {"failed": sorted(r["id"] for r in kept), "reason": REJECT_WRITE_FAILED,
                      "error": f"its shards could not be written after {WRITE_ATTEMPTS} tries: "
                               f"{type(exc).__name__}: {exc}"}
    if faults:
        report["faults"] = faults
    return pa.Table.from_pylist([{"report": json.dumps(report)}])  # JSON: reports differ in shape


def commit_reports(state: RunState, reports: Iterable[dict], todo: list[dict], max_batch_retries: int,
                   log=print) -> tuple[list[dict], dict[str, tuple[str, str]]]:
    """Commit the writers' reports as they come, then reject the rows none of them finished.

    Returns this attempt's commits and the rows the writers reported as failed
    (id -> (reason, detail))."""
    commits, failed = take_reports(state, reports, log)
    commits += reject_leftovers(state, todo, failed, max_batch_retries, log)
    return commits, failed


def commit_rounds(state: RunState, reports: Callable[[list[dict]], Iterable[dict]], todo: list[dict], retries: int,
                  log=print) -> tuple[list[dict], dict[str, tuple[str, str]]]:
    """Run the rows through the dataset (`reports(rows)`) and commit what comes back; rows lost with
    their batches (Ray Data gave up on them: their engine actor, or its node, died on every try)
    go through a fresh dataset again, whose new actors Ray places on the nodes left, up to
    `retries` times; only the rows still lost then are rejected as `worker_failed`."""
    commits, failed, rows = [], {}, todo
    for attempt in range(retries + 1):
        if attempt:
            log(f"[prefgen] {len(rows)} rows were lost with their batches (an engine actor or its node died); "
                f"running them again on the nodes left ({attempt}/{retries})")
        done, lost = take_reports(state, reports(rows), log)
        commits += done
        failed.update(lost)
        rows = [r for r in rows if r["id"] not in state.done_ids and r["id"] not in failed]
        if not rows:
            break
    return commits + reject_leftovers(state, todo, failed, retries, log), failed


def take_reports(state: RunState, reports: Iterable[dict], log=print) -> tuple[list[dict], dict[str, tuple[str, str]]]:
    """Commit the writers' reports as they come; returns the commits and the rows reported as
    failed or rejected for a fault (id -> (reason, detail)), which no commit holds yet."""
    commits: list[dict] = []
    failed: dict[str, tuple[str, str]] = {}
    for report in reports:
        if "stop" in report:
            raise RunStopped(f"{report['stop']}. Nothing of the batch was committed; the output stays "
                             "resumable: fix the cause and run the same command again")
        failed.update((i, tuple(why)) for i, why in report.get("faults", {}).items())
        if "failed" in report:
            failed.update(dict.fromkeys(report["failed"], (report["reason"], report["error"])))
            log(f"[prefgen] {len(report['failed'])} rows failed in the writer ({report['reason']}): {report['error']}")
        if "ids" not in report:
            continue
        with_retries(lambda: state.commit(report), log=log)
        commits.append(report)
    return commits, failed


def reject_leftovers(state: RunState, todo: list[dict], failed: dict[str, tuple[str, str]], max_batch_retries: int,
                     log=print) -> list[dict]:
    """Write and commit the rejects of the rows no commit finished; a fault's commit says `fault`."""
    commits = []
    for tag, rows, rejects in leftover_rejects(todo, state.done_ids, failed, max_batch_retries):
        # tagged with the attempt: an uncommitted shard of the failed batch (same ids) must not become
        # committed, nor may the key of a fault batch an earlier attempt retired (commits.py) come back
        commit = write_rows(state.store, state.token, rows, [], rejects, tag=f"{tag}-{state.token[:12]}")
        commit["fault"] = rejects[0]["reason"] in FAULT_REASONS
        commits.append(commit)
        with_retries(lambda: state.commit(commit), log=log)
        log(f"[prefgen] {len(rows)} rows rejected as {rejects[0]['reason']}"
            + (" (a rerun of the same command redoes them)" if commit["fault"] else ""))
    return commits


def failed_warning(failed: dict[str, tuple[str, str]]) -> str | None:
    """The summary's closing word on rows the writer could not finish, if any."""
    # an endpoint's failed requests are in its own figures (summary, manifest), not a storage warning
    failed = {i: why for i, why in failed.items() if why[0] != REJECT_REQUEST_FAILED}
    if not failed:
        return None
    counts = Counter(reason for reason, _ in failed.values())
    first = next(iter(failed.values()))[1]
    return (f"{sum(counts.values())} rows could not be written and were rejected "
            f"({', '.join(f'{n} {r}' for r, n in sorted(counts.items()))}; first error: {first})"
            + ("; check the output storage" if REJECT_WRITE_FAILED in counts else ""))


def leftover_rejects(todo: list[dict], done_ids: set[str], failed: dict[str, tuple[str, str]],
                     max_batch_retries: int) -> list[tuple[str, list[dict], list[dict]]]:
    """The rows no commit finished, as (tag, rows, rejects) batches for the driver to write.

    Rows a writer reported as failed get its reason and detail; the others never reached a
    writer: their batch failed in an engine stage on every retry (`worker_failed`)."""
    left = [r for r in todo if r["id"] not in done_ids]
    batches = []
    for reason in sorted({failed[r["id"]][0] for r in left if r["id"] in failed}):
        rows = [r for r in left if r["id"] in failed and failed[r["id"]][0] == reason]
        batches.append((reason, rows, [reject_row(r, reason, failed[r["id"]][1]) for r in rows]))
    lost = [r for r in left if r["id"] not in failed]
    if lost:
        detail = (f"its batch was lost on every try ({max_batch_retries} retries on a restarted actor, then "
                  f"{max_batch_retries} runs again on new ones): its engine actor or its node died")
        batches.append(("lost", lost, [reject_row(r, REJECT_WORKER_FAILED, detail) for r in lost]))
    return batches
