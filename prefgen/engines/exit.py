"""An engine actor's exit: its engine stopped in order and its processes waited for.

Two tracebacks came from every vLLM engine actor of a successful run (in the workers' logs; the
console no longer shows workers' output, see `run/console.py`):

- `AsyncLLM output_handler failed ... EngineDeadError`: vLLM's `AsyncLLM.shutdown` stops the
  engine core first and cancels the task reading its outputs after, so that task sees a dead
  engine and logs it. `stop_engine` cancels the task first.
- `resource_tracker ... KeyError: '/psm_...'` (and `'/mp-...'`), after "resource_tracker: process
  died unexpectedly, relaunching": Python's multiprocessing resource tracker (one process, shared
  by a process and the processes it spawns, that unlinks shared memory and semaphores left
  behind) is the actor's child; vLLM's engine core and its worker process use it. The actor
  exited once vLLM's engine core was gone, while the worker process was still exiting; Ray kills
  an exited worker's leftover child processes, the tracker among them; the vLLM worker then
  unregistered its shared memory and semaphore, found the tracker dead, started a new one, and
  the new one did not know those names. `stop_engine` waits for every process the engine started
  before the actor exits, so the tracker outlives them. `own_resource_tracker` makes sure the
  tracker is the actor's before the engine starts (with vLLM's `fork` start method a tracker
  first needed in the engine core would be the engine core's, and die with it).
  NOT FIXED YET: in the integration run one vLLM process was still running after the wait, and
  the KeyError was still in that actor's log; what that process waits on is the next thing to find.
  Seen again in a default run (2026-12-06): `AsyncLLM.shutdown` SIGTERMs the engine core, which
  exits at once without waiting for its worker; the worker logs "Parent process exited, terminating
  worker queues" in the same second and is still alive 8 s later ("1 of its 2 process(es) exited").
  A SIGTERM from here would not help: vLLM's worker raises SystemExit on SIGTERM only while no
  shutdown was requested, and its death-pipe monitor has already requested one. Killing it (SIGKILL)
  would silence the KeyError but leave its shared memory for a tracker that may die with the actor.

`ModelStage` registers its `__del__` with atexit (an actor's exit need not collect the stage
object), which calls `stop_at_exit` once.
"""

from __future__ import annotations

import asyncio
import time

EXIT_WAIT_S = 8.0  # vLLM gives its own processes 5 s after SIGTERM before it kills them


def own_resource_tracker() -> None:
    """Start multiprocessing's resource tracker in this (the actor's) process, before the engine's
    processes would start one of their own (see the module's docstring)."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


def stop_engine(engine, processes: list, wait_s: float = EXIT_WAIT_S) -> list[int]:
    """Shut the engine down and wait for `processes` (what `started_since` found when it was made);
    returns the pids still alive after `wait_s`."""
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
    try:
        left = stop_engine(engine, processes)
    except Exception as exc:  # an exit must not fail; say why it was not clean
        print(f"[prefgen] {name}: engine shutdown failed: {exc!r}", flush=True)
        return
    print(f"[prefgen] {name}: engine stopped, {len(processes) - len(left)} of its {len(processes)} process(es) "
          "exited" + (f"; still running: {left}" if left else ""), flush=True)


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
    if not processes:
        return []
    import psutil

    _, alive = psutil.wait_procs(processes, timeout=wait_s)
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
