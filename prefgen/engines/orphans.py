"""The processes a killed run left behind on this host, found and stopped (Linux `/proc`).

A driver that started a local Ray and was SIGKILLed leaves that Ray running: its GCS, raylet
and workers, and under the engine actors vLLM's own processes (`VLLM::EngineCore`,
`VLLM::Worker`). Ray's processes name the session folder on their command line; vLLM's rename
themselves and do not, and once their actor is gone they are children of init. So a run's
processes are: those naming its session folder; everything descending from them; and whatever
carries the environment of one of its raylets (`RAY_RAYLET_PID`, which Ray gives every worker
and which vLLM's processes inherit), orphaned or not.

A local Ray that prefgen starts puts each worker in a process group of its own and kills the
group when the worker exits (`RAY_process_group_cleanup_enabled`, Ray's switch): an engine actor
that dies, or is killed, takes its vLLM processes with it while Ray runs. This module is for
when Ray itself was killed.
"""

from __future__ import annotations

import os
import signal


def _read(pid: int, name: str) -> bytes:
    with open(f"/proc/{pid}/{name}", "rb") as f:
        return f.read()


def _processes() -> dict[int, tuple[int, str, dict[str, str]]]:
    """pid -> (parent pid, command line, the few environment entries we look at)."""
    found = {}
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            stat = _read(pid, "stat").decode(errors="replace")
            ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces
            cmdline = _read(pid, "cmdline").decode(errors="replace")
            try:
                env_lines = _read(pid, "environ").split(b"\0")
            except OSError:
                env_lines = []
        except (OSError, ValueError, IndexError):
            continue
        env = dict(line.decode(errors="replace").split("=", 1) for line in env_lines
                   if line.startswith(b"RAY_RAYLET_PID="))
        found[pid] = (ppid, cmdline, env)
    return found


def session_processes(session_dir: str, processes: dict | None = None) -> set[int]:
    """The pids of a local Ray session and of everything it started (see the module docstring)."""
    procs = _processes() if processes is None else processes
    named = {pid for pid, (_, cmdline, _) in procs.items() if session_dir in cmdline}
    raylets = {str(pid) for pid in named if "raylet" in procs[pid][1]}
    found = named | {pid for pid, (_, _, env) in procs.items() if env.get("RAY_RAYLET_PID") in raylets}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found - {os.getpid(), os.getppid()}


def stop_orphans(session_dir: str) -> int:
    """SIGKILL every process of a local Ray session whose driver died; returns how many."""
    killed = 0
    for pid in sorted(session_processes(session_dir)):
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except OSError:
            pass
    return killed
