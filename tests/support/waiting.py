"""Waiting on a run that goes on in another process, for the kill-and-resume tests."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str, log: Path | None = None):
    """Poll `predicate` until it returns something true (returned); fail if the run ends first or
    the time runs out, with the tail of its log if one is given."""
    tail = lambda: f":\n{log.read_text()[-3000:]}" if log else ""  # noqa: E731
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {what}{tail()}"
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}{tail()}")
