"""An engine actor's exit (`engine_exit.py`): the engine's processes are waited for, and vLLM's
output task is cancelled before its engine core stops. Fake engines, real processes and loops."""

import asyncio
import subprocess
import sys
import threading
import time

from prefgen.engine_exit import cancel_output_handler, child_pids, started_since, stop_engine


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
