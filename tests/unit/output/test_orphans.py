"""A killed run's leftover processes are found whole: those naming its session folder, their
descendants (vLLM's renamed engine processes), and orphans carrying its raylet's environment.
Real processes, no Ray: a stand-in "raylet" and "worker" whose command lines name the session
folder, each with a child that names nothing."""

import os
import subprocess
import sys
import time

from prefgen.engines.orphans import session_processes, stop_orphans

# A parent that names the session on its command line (as Ray's processes do) and starts a
# child that does not (as vLLM's renamed processes do); both sleep until killed.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def spawn(args, env=None):
    proc = subprocess.Popen([sys.executable, "-c", PARENT, *args], stdout=subprocess.PIPE, text=True,
                            env=env or os.environ.copy())
    child = int(proc.stdout.readline())
    return proc, child


def alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, only not yet reaped


def test_a_sessions_processes_their_children_and_its_raylets_orphans_are_stopped(tmp_path):
    session = str(tmp_path / "session_2026-12-06_00-00-00_000000_1")
    raylet, raylet_child = spawn([f"--session_dir={session}", "raylet"])
    # an engine process its actor left behind: no session on its command line, parent gone, but
    # the raylet's pid in its environment, as Ray gives every worker
    orphan_parent, orphan = spawn([], env=dict(os.environ, RAY_RAYLET_PID=str(raylet.pid)))
    orphan_parent.kill()
    orphan_parent.wait()
    other, other_child = spawn(["--session_dir=/tmp/another-session"])
    try:
        found = session_processes(session)
        assert {raylet.pid, raylet_child, orphan} <= found
        assert not {other.pid, other_child, os.getpid()} & found
        assert stop_orphans(session) >= 3
        deadline = time.monotonic() + 10
        while any(alive(p) for p in (raylet_child, orphan)) and time.monotonic() < deadline:
            time.sleep(0.1)
        raylet.wait(10)
        assert not alive(raylet_child) and not alive(orphan)
        assert alive(other.pid) and alive(other_child)
    finally:
        for pid in (raylet.pid, raylet_child, orphan, other.pid, other_child):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        other.wait(10)
