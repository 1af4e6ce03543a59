"""Where a prefgen run's CPU goes: samples the processes under the benchmark while the CLI runs.

Every `interval_s` the sampler walks the benchmark's descendant processes (the CLI's driver,
the local Ray it starts: GCS, raylet, its agents, the workers, and vLLM's engine core under the
engine actor), adds each one's CPU time since the last sample to its kind (`process_kind`) and
records its niceness; it also samples the whole machine's CPU and load average. `summary`
turns the samples into seconds and shares, and the time from the engine's last busy second to
the CLI's exit. The arithmetic is pure, tested without processes.
"""

from __future__ import annotations

import os
import threading
import time

ENGINE_MARKS = ("ModelStage", "EngineCore", "VLLM::")  # the engine actor's title, vLLM's engine core


def process_kind(name: str, cmdline: str, is_driver: bool, under_engine: bool) -> str:
    """The kind a process's CPU counts under: driver, gcs_server, raylet, engine (the engine
    actor and anything it started), ray_worker (other processes titled `ray::`: workers, Ray Data's
    actors, Ray's dashboard and runtime-env agents), ray_other (dashboard, log monitor, the rest)."""
    if is_driver:
        return "driver"
    if under_engine or any(mark in cmdline or mark in name for mark in ENGINE_MARKS):
        return "engine"
    if name.startswith("gcs_server") or "gcs_server" in cmdline.split(" ", 1)[0]:
        return "gcs_server"
    if name == "raylet" or cmdline.split(" ", 1)[0].endswith("/raylet"):
        return "raylet"
    if cmdline.startswith("ray::") or "default_worker.py" in cmdline:
        return "ray_worker"
    return "ray_other"


class ProcessCpuSampler:
    """A thread that samples the benchmark's descendants until `stop()`; see the module doc."""

    def __init__(self, interval_s: float = 1.0, exclude: frozenset[int] = frozenset()):
        import psutil

        self.psutil, self.interval_s, self.exclude = psutil, interval_s, exclude  # `exclude`: not the run's
        self.me = psutil.Process(os.getpid())
        self.last: dict[int, float] = {}
        self.cpu_s: dict[str, float] = {}
        self.nice: dict[str, set[int]] = {}
        self.engine_timeline: list[tuple[float, float]] = []  # (seconds since start, engine CPU s in the interval)
        self.load: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> "ProcessCpuSampler":
        self.t0 = time.monotonic()
        self.machine0 = self.psutil.cpu_times()
        self.load.append((0.0, os.getloadavg()[0]))
        self._thread.start()
        return self

    def stop(self) -> dict:
        self.t_end = time.monotonic() - self.t0
        self._stop.set()
        self._thread.join()
        machine1 = self.psutil.cpu_times()
        busy = lambda t: t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)  # noqa: E731
        self.load.append((self.t_end, os.getloadavg()[0]))
        return summary(self.cpu_s, self.nice, self.engine_timeline, self.t_end, busy(machine1) - busy(self.machine0),
                       os.cpu_count() or 1, self.interval_s, [v for _, v in self.load])

    def _loop(self) -> None:
        next_load = 10.0
        while not self._stop.wait(self.interval_s):
            now = time.monotonic() - self.t0
            self.engine_timeline.append((now, self._sample()))
            if now >= next_load:
                self.load.append((now, os.getloadavg()[0]))
                next_load += 10.0

    def _sample(self) -> float:
        ps = self.psutil
        try:
            procs = [p for p in self.me.children(recursive=True) if p.pid not in self.exclude]
        except ps.Error:
            return 0.0
        info: dict[int, tuple[int, str, str]] = {}
        for p in procs:
            try:
                info[p.pid] = (p.ppid(), p.name(), " ".join(p.cmdline()))
            except ps.Error:
                continue
        driver = next((pid for pid, (ppid, _, _) in info.items() if ppid == self.me.pid), None)
        engine_pids = {pid for pid, (_, name, cmd) in info.items()
                       if process_kind(name, cmd, pid == driver, False) == "engine"}
        engine_cpu = 0.0
        for p in procs:
            if p.pid not in info:
                continue
            try:
                times, nice = p.cpu_times(), p.nice()
            except ps.Error:
                continue
            total = times.user + times.system
            delta = total - self.last.get(p.pid, 0.0)
            self.last[p.pid] = total
            ppid, name, cmd = info[p.pid]
            under = _has_ancestor(p.pid, engine_pids, info)
            kind = process_kind(name, cmd, p.pid == driver, under)
            self.cpu_s[kind] = self.cpu_s.get(kind, 0.0) + delta
            self.nice.setdefault(kind, set()).add(nice)
            if kind == "engine":
                engine_cpu += delta
        return engine_cpu


def _has_ancestor(pid: int, wanted: set[int], info: dict[int, tuple[int, str, str]]) -> bool:
    seen = set()
    while pid in info and pid not in seen:
        seen.add(pid)
        pid = info[pid][0]
        if pid in wanted:
            return True
    return False


def last_busy_s(timeline: list[tuple[float, float]], interval_s: float, busy_share: float = 0.3) -> float | None:
    """When the engine last used more than `busy_share` of a core in a sampling interval."""
    busy = [t for t, cpu in timeline if cpu > busy_share * interval_s]
    return busy[-1] if busy else None


def summary(cpu_s: dict[str, float], nice: dict[str, set[int]], timeline: list[tuple[float, float]], wall_s: float,
            machine_busy_s: float, cores: int, interval_s: float, loads: list[float]) -> dict:
    """Seconds of CPU per kind, each kind's share of the run's CPU and of the machine's capacity
    over the wall, the machine's busy share, nice values seen, load averages, and the tail: from
    the engine's last busy interval to the CLI's exit."""
    total = sum(cpu_s.values())
    last = last_busy_s(timeline, interval_s)
    return {
        "wall_s": round(wall_s, 1),
        "cpu_s": {k: round(v, 1) for k, v in sorted(cpu_s.items())},
        "cpu_s_total": round(total, 1),
        "share_of_run_cpu": {k: round(v / total, 3) if total else None for k, v in sorted(cpu_s.items())},
        "share_of_machine": {k: round(v / (wall_s * cores), 3) if wall_s else None for k, v in sorted(cpu_s.items())},
        "machine_busy_share": round(machine_busy_s / (wall_s * cores), 3) if wall_s else None,
        "machine_busy_outside_run_s": round(machine_busy_s - total, 1),
        "nice": {k: sorted(v) for k, v in sorted(nice.items())},
        "engine_last_busy_s": round(last, 1) if last is not None else None,
        "last_engine_busy_to_exit_s": round(wall_s - last, 1) if last is not None else None,
        "load_average_1m": {"min": min(loads), "max": max(loads), "mean": round(sum(loads) / len(loads), 2)} if loads else None,
    }
