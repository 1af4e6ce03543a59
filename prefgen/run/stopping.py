"""Stopping a run on request: SIGTERM (`ray job stop`, a spot node's notice, a scheduler) or SIGINT (Ctrl-C).

The first signal asks for a stop: the driver tells the engine stages to take no new batch (a
batch reaching a stage after that passes through untouched and is not committed), keeps
committing the batches that finish, and stops when the dataset has drained or the grace period
(`ray.stop_grace_s`) has passed, whichever comes first. A second signal stops at once. Either
way the run ends with `StopRequested`: the manifest says `stopped`, the command exits with
`EXIT_STOPPED`, and the same command resumes (a stop at once is like a crash: uncommitted
shards are swept by the next run).

Under `ray job stop`, Ray's job supervisor sends SIGTERM to the driver (and its child
processes) and SIGKILLs them `RAY_JOB_STOP_WAIT_TIME_S` seconds later (default 3 in Ray 2.60,
read in the supervisor's environment, which the driver inherits). Inside a Ray job the grace
is therefore cut to end `JOB_STOP_MARGIN_S` before that SIGKILL, so that the driver still
writes the manifest; set `RAY_JOB_STOP_WAIT_TIME_S` on the cluster (in the environment of
`ray start` on the head) to give in-flight batches longer.

The signal handling and the deadline are plain logic (`StopSignals`, unit-tested without Ray);
the stages learn of a stop through a key in Ray's internal key-value store, named after the
attempt (`engines/stop_flag.py`).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from prefgen.engines.stop_flag import STOP_REQUESTED

EXIT_STOPPED = 4  # `prefgen run` stopped on request; the output resumes (0 done, 2 bad input, 3 stopped by a fault)
RAY_JOB_STOP_WAIT_S = 3.0  # Ray 2.60's job supervisor: SIGTERM, then SIGKILL after this (RAY_JOB_STOP_WAIT_TIME_S)
JOB_STOP_MARGIN_S = 1.5  # left, inside a Ray job, between the grace's end and the supervisor's SIGKILL
# The same signal again this soon is one signal delivered twice: to the process group and forwarded by a
# parent such as `uv run` (which forwards SIGINT when it has no terminal), not a second request.
DUPLICATE_S = 1.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(RuntimeError):
    """The run was stopped by a signal; what was committed stays and the same command resumes."""


def job_stop_wait_s(environ: Mapping[str, str]) -> float | None:
    """Seconds Ray's job supervisor waits between its SIGTERM and its SIGKILL if this process is
    a Ray job's driver (the supervisor sets RAY_JOB_CONFIG_JSON_ENV_VAR for it), else None."""
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" not in environ:
        return None
    try:
        return float(environ.get("RAY_JOB_STOP_WAIT_TIME_S", RAY_JOB_STOP_WAIT_S))
    except ValueError:
        return RAY_JOB_STOP_WAIT_S


def grace_for(grace_s: float, environ: Mapping[str, str]) -> float:
    """The grace period to use: `grace_s`, cut inside a Ray job to end before the supervisor's SIGKILL."""
    wait = job_stop_wait_s(environ)
    if wait is None:
        return grace_s
    return max(0.0, min(grace_s, wait - JOB_STOP_MARGIN_S))


class StopSignals:
    """SIGINT/SIGTERM turned into a stop request with a grace period.

    `handle` is the signal handler: the first signal records the request (`requested`); a second
    raises `StopRequested` where the main thread is (the same signal within `DUPLICATE_S` counts once). `check()`, called by the driver while the
    dataset runs, tells the workers once (`on_request`, with a log line) and raises
    `StopRequested` once the grace has passed. `install()` may be called again after Ray's
    `ray.init`, which sets a SIGTERM handler of its own; `restore()` puts back the handlers the
    last `install` replaced."""

    def __init__(self, grace_s: float, clock: Callable[[], float] = time.monotonic, log=print):
        self.grace_s, self.clock, self.log = grace_s, clock, log
        self.signal_name: str | None = None
        self.requested_at: float | None = None
        self.on_request: Callable[[], None] = lambda: None
        self.told = False
        self.ending = False  # a StopRequested was made: later signals change nothing
        self.rows_done: Callable[[], int] = lambda: 0
        self._replaced: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def handle(self, signum: int, frame=None) -> None:
        name = signal.Signals(signum).name
        if self.ending:
            return  # the stop is under way: the manifest is being written
        if self.requested:
            if name == self.signal_name and self.clock() - self.requested_at < DUPLICATE_S:
                return
            raise self._stop(f"a second signal ({name}) stopped it at once")
        self.signal_name, self.requested_at = name, self.clock()

    def check(self) -> None:
        """Tell the workers of a new request; raise `StopRequested` once the grace has passed."""
        if not self.requested:
            return
        if not self.told:
            self.told = True
            self.log(f"[prefgen] {self.signal_name} received: stopping. No new batch is started; the batches that "
                     f"finish within {self.grace_s:g} s are committed (a second signal stops at once)")
            try:
                self.on_request()
            except Exception as exc:  # noqa: BLE001 - the stages keep taking batches; the grace still ends it
                self.log(f"[prefgen] warning: the engine stages could not be told to stop ({exc!r})")
        if self.clock() - self.requested_at >= self.grace_s:
            raise self._stop(f"the grace period of {self.grace_s:g} s passed")

    def stop_if_requested(self, how: str) -> None:
        """Raise `StopRequested` now if a stop was asked for (between steps where no batch is in flight)."""
        if self.requested:
            raise self._stop(how)

    def stopped(self) -> StopRequested:
        """The error to end the run with once the batches in flight are in (the dataset drained)."""
        return self._stop("the batches in flight were committed")

    def _stop(self, how: str) -> StopRequested:
        self.ending = True
        return StopRequested(f"stopped on request ({self.signal_name}): {how}; {self.rows_done()} input rows are "
                             "done and committed. Run the same command again to resume")

    def install(self) -> bool:
        """Handle SIGINT and SIGTERM from now on; False (and nothing done) outside the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        self._replaced = {s: signal.signal(s, self.handle) for s in SIGNALS}
        return True

    def restore(self) -> None:
        for signum, handler in self._replaced.items():
            signal.signal(signum, handler)
        self._replaced = {}


def until_stopped(reports: Iterable[dict], stop: StopSignals) -> Iterator[dict]:
    """The writers' reports, less those of batches a stage passed through after a stop request;
    when they end after a request (the dataset drained), `StopRequested` instead of the end, so
    that the driver neither runs the rows left again nor rejects them."""
    for report in reports:
        if report.get("stop") != STOP_REQUESTED:
            yield report
    if stop.requested:
        raise stop.stopped()
