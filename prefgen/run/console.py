"""What `prefgen run` shows a person: one progress display and the summary; everything else in a log.

By default the driver's file descriptors 1 and 2 are pointed at a log file (`<output>/_logs/
driver-<UTC time>.log`; for a URI output a local file, uploaded there when the run ends), so
whatever Ray, Ray Data, vLLM or a C library prints lands there, and the console gets only what
prefgen writes to the terminal it kept: its `[prefgen]` lines, the progress and the summary.
Worker processes' logs stay where Ray keeps them (the session's `logs/` folder), as the summary
says; they are not streamed to the driver. In a terminal the progress is a live bar; in a job
log (stdout not a terminal, e.g. `ray job submit`) it is one line every `interval_s` seconds.
`--verbose` leaves every stream where it was, workers' logs included: the output of before.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

from prefgen.report.progress import RunProgress, due, duration

LOGS_DIR = "_logs"
# job logs: a line this often while rows come in, ten times less often while nothing moves
INTERVAL_S = float(os.environ.get("PREFGEN_PROGRESS_INTERVAL_S", "30"))


def log_file_for(output: str, stamp: str) -> tuple[Path, str | None]:
    """(local log file, URI to upload it to at the end or None) for a run writing to `output`."""
    name = f"driver-{stamp}.log"
    if "://" in output:
        return Path(tempfile.mkdtemp(prefix="prefgen-logs-")) / name, f"{output.rstrip('/')}/{LOGS_DIR}/{name}"
    return Path(output) / LOGS_DIR / name, None


class RunConsole:
    """The console of one run: quiet (a log file takes fd 1 and 2) or verbose (nothing moves)."""

    def __init__(self, verbose: bool, out: TextIO | None = None, err: TextIO | None = None,
                 interval_s: float = INTERVAL_S):
        self.verbose = verbose
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.interval_s = interval_s
        self.log_path: Path | None = None
        self.upload_to: str | None = None
        self._progress: RunProgress | None = None
        self._printed_batches = 0
        self._bar = self._thread = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- streams ---------------------------------------------------------------------------------
    def capture(self, output: str) -> None:
        """Point fd 1 and 2 at the run's log file; keep the terminal for this console."""
        if self.verbose:
            return
        self.log_path, self.upload_to = log_file_for(output, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        self.err = os.fdopen(os.dup(2), "w", buffering=1)
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        sys.stdout.reconfigure(line_buffering=True)
        sys.stderr.reconfigure(line_buffering=True)
        self.say(f"[prefgen] full log: {self.log_path}" + (f" (uploaded to {self.upload_to} at the end)"
                                                           if self.upload_to else ""))

    def log(self, line: str) -> None:
        """A `[prefgen]` line: in the log file, and on the console."""
        if self.verbose:
            print(line, flush=True)
            return
        print(line, flush=True)  # fd 1: the log file
        self.say(line)

    def say(self, line: str, err: bool = False) -> None:
        """Only on the console (above the live bar, if there is one)."""
        with self._lock:
            if self._bar is not None and not err:
                self._bar.console.print(line, highlight=False, markup=False, soft_wrap=True)
            else:
                print(line, file=self.err if err else self.out, flush=True)

    @property
    def interactive(self) -> bool:
        return self.out.isatty()

    # -- progress --------------------------------------------------------------------------------
    def watch(self, progress: RunProgress) -> None:
        """The pipeline's progress hook: called when the run opens, after every committed batch, and when
        the stages' work moves (`progress.StageWatcher`)."""
        if self.verbose:  # the lines of before: one per committed batch (not per move of the stages' work)
            if progress.batches and progress.batches != self._printed_batches:
                self._printed_batches = progress.batches
                print(progress.line(time.monotonic()), flush=True)
            return
        if self._progress is None:
            self._progress = progress
            self._start()

    def _start(self) -> None:
        if self.interactive:  # a live two-line display, redrawn twice a second from the progress object
            from rich.console import Console
            from rich.live import Live

            self._bar = Live(get_renderable=lambda: display(self._progress, time.monotonic()),
                             console=Console(file=self.out), refresh_per_second=2, transient=False)
            self._bar.start()
            return
        self._last_line, self._last_state = time.monotonic(), None
        self._thread = threading.Thread(target=self._tick, name="prefgen-progress", daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            now = time.monotonic()
            if due(self._last_line, now, self.interval_s, changed=self._state() != self._last_state):
                self._render_line(now)

    def _state(self) -> tuple:
        return self._progress.all_done, self._progress.doing

    def _render_line(self, now: float) -> None:
        self._last_line, self._last_state = now, self._state()
        self.say(self._progress.line(now))

    def finish(self) -> None:
        """Stop the display, leaving its last state on screen (a last line in a job log)."""
        if self._bar is not None:
            with self._lock:
                self._bar.refresh()
                self._bar.stop()
                self._bar = None
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._render_line(time.monotonic())

    def upload(self) -> None:
        """Copy a URI output's log file to `<output>/_logs/` (what was logged up to now)."""
        if not self.upload_to:
            return
        from prefgen.output.files import write_file

        sys.stdout.flush()
        sys.stderr.flush()
        write_file(self.upload_to, self.log_path.read_bytes())


def display(p: RunProgress, now: float):
    """The live display: a bar with rows done and the ETA, the figures, and the stages' work while rows
    are in them (each line fits 80 columns)."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    bar = Table.grid(padding=(0, 1))
    pct = 100 * p.all_done / p.total_rows if p.total_rows else 100.0
    bar.add_row(Text(f"rows {p.all_done}/{p.total_rows}"), ProgressBar(total=p.total_rows or 1, completed=p.all_done,
                                                                         width=30),
                Text(f"{pct:3.0f}%  ETA {duration(p.eta_s(now))}"))
    stages = p.stage_line() if p.remaining else None  # the work inside the stages, before batches are done
    return Group(bar, Text(f"{p.pairs} pairs · {p.rejected_rows} rejected · {p.tokens_per_s(now):.1f} tok/s · "
                           f"{duration(p.elapsed(now))} elapsed · {p.phase}"), *([Text(stages)] if stages else []))


def ray_logs_dir() -> str:
    """Where this run's Ray keeps its processes' logs (workers included)."""
    try:
        import ray

        if ray.is_initialized():
            return ray._private.worker._global_node.get_logs_dir_path()
    except Exception:  # a client connection or a Ray without that attribute: the documented default
        pass
    return "/tmp/ray/session_latest/logs (on each node)"
