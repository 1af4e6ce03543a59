"""An engine actor's exit: its engine stopped in order and its processes waited for, before Ray
ends the actor and before the driver's exit shuts a local Ray down.

What used to go wrong (every vLLM engine actor of a successful run; in the workers' logs, which
the console no longer shows, see `run/console.py`): `AsyncLLM output_handler failed ...
EngineDeadError`, then `resource_tracker: process died unexpectedly, relaunching` and `KeyError:
'/psm_...'` (and `'/mp-...'`), and a `VLLM::Worker` left running, parented to init. The cause is
Ray's, measured in the core worker's log: when Ray Data lets go of an actor, its exit begins by
killing the actor's direct child processes (SIGKILL; Ray's `kill_child_processes_on_worker_exit`,
on by default), before `__ray_shutdown__` and atexit run anything. Those children are vLLM's
engine core and multiprocessing's resource tracker (the one process that unlinks the shared
memory and semaphores a process and its children registered). So the engine core died without
stopping its worker process; the worker (a grandchild, not killed) saw its parent gone, and when
it unregistered its shared memory found the tracker dead, started a new one, and that one did not
know the names: the KeyError. `AsyncLLM.shutdown`, run at atexit, then met a dead engine core.

What is done about it:
- the actor's own exit stops its engine when it gets the chance: `AsyncLLM.shutdown` SIGTERMs the
  engine core, which shuts its executor down (closing the worker's death pipe and waiting for it)
  and exits (vLLM kills it after the timeout `AsyncVllmEngine.shutdown` gives, longer than vLLM's
  5 s); `stop_engine` then waits for every process the engine started (`started_since`), and kills
  what is still alive after `EXIT_WAIT_S`. `cancel_output_handler` cancels vLLM's output task
  before the engine core stops (else it logs the EngineDeadError above). `own_resource_tracker`
  starts the tracker in the actor before the engine does, so that it is the actor's.
- the stop runs when the stage is let go of: Ray Data's actor drops its stage in
  `__ray_shutdown__`, and `ModelStage` stops its engine from a `weakref.finalize` (which also runs
  at the interpreter's exit if nothing let go of it), so nothing may hold the stage itself.
- a local Ray that the driver started would be shut down by the driver's exit a few seconds after
  the last batch, killing the actors mid-exit: `wait_for_engine_actors` waits first for the
  engines' own processes and the actors that started them. An actor whose engine runs inside the
  actor's process (the CPU build, below) has nothing a kill could leave behind, so it is not waited for:
  its exit after the engine stopped is the interpreter's teardown, 4.3 s of a 16-row run's wall
  on a 2-core CPU (the core worker done at :37.3, the process gone at :41.6).

Where the model runs settles it on the CPU build: prefgen's engine actors run the model inside
the engine core (`arguments.device_kwargs`), so there is no worker process, nothing left to
unregister shared memory after Ray's kill, and no KeyError (in one test suite run each way on one
machine: five actors' logs with the KeyError with a worker process, none without; the engine
stopped in 0.1 s instead of 5 to 8 s). Since then that engine core is in the actor's own process
too (`stepped.py`): the engine has no process of its own left to stop. What follows holds where
the model still has a worker process of its own (vLLM's default executor, tensor parallelism,
GPUs).

NOT FIXED there: Ray's kill of the children stays on, so the KeyError can still show in an actor's log.
Turning it off for the engine actors (`RAY_kill_child_processes_on_worker_exit=0` in their
runtime environment, tried 2026-12-07) made the exit above run in order in a plain run (engine
stopped in 4.9 s, no traceback in the actor's log), but in the phased kill-and-resume scenario
(`tests/integration/test_resume.py`) an engine core and its worker outlived the run by more than
60 s: where the actor does not get to stop its engine (Ray shutting the actor down, a killed
actor), that kill is the one thing that ends the engine's processes. A leaked engine holds
gigabytes; a line in a log does not. Tried again 2026-12-07 with the switch off only where a local
Ray puts each worker in a process group of its own (`RAY_process_group_cleanup_enabled`, which
`run/ray_start.py` sets): the same scenario leaked the engine core and worker of the replacement
actor that was serving when the driver was SIGKILLed, so the process groups do not cover a driver's
death. Ending the engine's processes with the actor in every case (a watchdog of the actor's own)
is the next thing to try; Ray's raylet subreaper is deprecated in favour of the process groups.
"""

from __future__ import annotations

import asyncio
import time

EXIT_WAIT_S = 8.0  # vLLM gives its own processes 5 s after SIGTERM before it kills them
ACTORS_EXIT_WAIT_S = 30.0  # Ray's own limit on an actor's graceful exit (the GCS's timeout_ms=30000)


def own_resource_tracker() -> None:
    """Start multiprocessing's resource tracker in this (the actor's) process, before the engine's
    processes would start one of their own (see the module's docstring)."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


def stop_engine(engine, processes: list, wait_s: float = EXIT_WAIT_S) -> list[int]:
    """Shut the engine down and wait for `processes` (what `started_since` found when it was made);
    returns the pids still alive after `wait_s`, which are then killed."""
    shutdown = getattr(engine, "shutdown", None)
    if shutdown is None:
        return []
    cancel_output_handler(getattr(engine, "llm", None))
    shutdown()
    return wait_for_exit(processes, wait_s)


def stop_at_exit(name: str, engine, processes: list) -> None:
    """`stop_engine` at the actor's exit, saying in the actor's log how it went; never raises."""
    if getattr(engine, "shutdown", None) is None:
        return
    started = time.monotonic()
    try:
        left = stop_engine(engine, processes)
    except Exception as exc:  # an exit must not fail; say why it was not clean
        print(f"[prefgen] {name}: engine shutdown failed: {exc!r}", flush=True)
        return
    print(f"[prefgen] {name}: engine stopped in {time.monotonic() - started:.1f} s, {len(processes) - len(left)} of "
          f"its {len(processes)} process(es) exited" + (f"; killed after {EXIT_WAIT_S:.0f} s: {left}" if left else ""),
          flush=True)


def engine_actor_processes(session_dir: str, processes: dict | None = None) -> list[int]:
    """A local Ray session's vLLM processes still alive and the engine actors that started them
    (by process title: vLLM titles its processes `VLLM::<part>`, Ray an actor's worker
    `ray::<class>`); an engine actor without such processes is not among them (see above)."""
    from prefgen.engines.orphans import _processes, session_processes

    procs = _processes() if processes is None else processes
    vllm = {pid for pid in session_processes(session_dir, procs) if procs[pid][1].startswith("VLLM::")}
    actors = set()
    for pid in vllm:
        parent = procs[pid][0]
        while parent in procs and parent not in actors:
            if "ModelStage" in procs[parent][1].split("\0")[0]:
                actors.add(parent)
                break
            parent = procs[parent][0]
    return sorted(vllm | actors)


def wait_for_engine_actors(session_dir: str, wait_s: float = ACTORS_EXIT_WAIT_S, poll_s: float = 0.2) -> list[int]:
    """Wait until a local Ray's engines' processes and the actors that started them have exited,
    before the driver's exit shuts that Ray down (which kills what is left of them); returns the
    pids still alive after `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        left = engine_actor_processes(session_dir)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(poll_s)


def child_pids() -> set[int]:
    """This process's descendants now."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with Ray and vLLM
        return set()
    return {p.pid for p in psutil.Process().children(recursive=True)}


def started_since(before: set[int]) -> list:
    """The descendants started since `before` (an engine's processes), except multiprocessing's
    resource tracker, which must outlive them."""
    try:
        import psutil
        from multiprocessing import resource_tracker
    except ImportError:  # pragma: no cover
        return []
    tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
    return [p for p in psutil.Process().children(recursive=True) if p.pid not in before and p.pid != tracker]


def wait_for_exit(processes: list, wait_s: float) -> list[int]:
    """Wait for `processes`; those still alive after `wait_s` are killed (Ray no longer kills an
    engine actor's children, and the resource tracker, still alive, unlinks what they held)."""
    if not processes:
        return []
    import psutil

    _, alive = psutil.wait_procs(processes, timeout=wait_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    return [p.pid for p in alive]


def cancel_output_handler(llm, wait_s: float = 2.0) -> None:
    """Cancel `AsyncLLM`'s output task before its engine core stops (see the module's docstring)."""
    handler = getattr(llm, "output_handler", None)
    if handler is None or handler.done():
        return
    loop = handler.get_loop()
    if loop.is_closed():
        return
    loop.call_soon_threadsafe(handler.cancel)
    if asyncio._get_running_loop() is loop or not loop.is_running():
        return  # on the loop's own thread (or a stopped loop) nothing can run the cancel now
    deadline = time.monotonic() + wait_s
    while not handler.done() and time.monotonic() < deadline:
        time.sleep(0.02)
