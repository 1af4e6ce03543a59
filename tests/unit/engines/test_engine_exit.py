"""An engine actor's exit (`engines/exit.py`): the engine's processes are waited for, and vLLM's
output task is cancelled before its engine core stops. Fake engines, real processes and loops."""

import asyncio
import subprocess
import sys
import threading
import time

from prefgen.engines.exit import cancel_output_handler, child_pids, own_resource_tracker, started_since, stop_engine


class FakeEngine:
    """Starts a process that outlives `shutdown` by `linger` seconds, as vLLM's engine core does."""

    def __init__(self, linger: float):
        self.proc = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({linger})"])
        self.shut = False

    def shutdown(self):
        self.shut = True


def test_stop_engine_waits_for_the_processes_the_engine_started():
    before = child_pids()
    engine = FakeEngine(linger=1.0)
    procs = started_since(before)
    assert [p.pid for p in procs] == [engine.proc.pid]
    t0 = time.monotonic()
    assert stop_engine(engine, procs, wait_s=30) == []
    assert engine.shut and engine.proc.poll() is not None  # gone before the actor would exit
    assert time.monotonic() - t0 >= 0.5


def test_stop_engine_gives_up_after_its_wait_and_names_the_processes_left():
    before = child_pids()
    engine = FakeEngine(linger=30)
    try:
        procs = started_since(before)
        assert stop_engine(engine, procs, wait_s=0.3) == [engine.proc.pid]
    finally:
        engine.proc.kill()
        engine.proc.wait()


def test_an_engine_without_shutdown_is_left_alone():
    assert stop_engine(object(), [], wait_s=30) == []


def test_the_output_task_is_cancelled_before_the_engine_core_stops():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        class Llm:
            output_handler = None

        async def reader():
            await asyncio.sleep(3600)  # waits on the engine core's outputs

        Llm.output_handler = asyncio.run_coroutine_threadsafe(_task(reader), loop).result()
        cancel_output_handler(Llm)
        assert Llm.output_handler.cancelled()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


async def _task(fn):
    return asyncio.ensure_future(fn())


def test_the_engines_processes_share_the_actors_resource_tracker():
    """Started first in the actor, the tracker is the one a spawned engine process uses (and so
    dies with the actor, not with the engine core)."""
    import multiprocessing as mp
    from multiprocessing import resource_tracker

    own_resource_tracker()
    mine = resource_tracker._resource_tracker._pid
    assert mine is not None and mine in child_pids()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_report_tracker_fd, args=(queue,))
    proc.start()
    child_fd_known = queue.get(timeout=60)
    proc.join(60)
    assert child_fd_known  # the spawned process was handed the actor's tracker, it started none
    assert resource_tracker._resource_tracker._pid == mine


def _report_tracker_fd(queue):
    from multiprocessing import resource_tracker

    t = resource_tracker._resource_tracker
    queue.put(t._fd is not None and t._pid is None)  # inherited fd, no tracker process of its own
