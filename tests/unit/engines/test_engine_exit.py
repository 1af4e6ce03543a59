"""An engine actor's exit (`engines/exit.py`): the engine stops when its stage is let go of, its
processes are waited for, and vLLM's output task is cancelled before its engine core stops. Fake
engines, real processes and loops."""

import asyncio
import subprocess
import sys
import threading
import time

from support.stages import batch, run

from prefgen.engines.engine import Request, Result
from prefgen.engines.exit import cancel_output_handler, child_pids, own_resource_tracker, started_since, stop_engine
from prefgen.engines.stage import ModelStage
from prefgen.output.storage import storage


class FakeEngine:
    """Starts a process that outlives `shutdown` by `linger` seconds, as vLLM's engine core does."""

    def __init__(self, linger: float):
        self.proc = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({linger})"])
        self.shut = False

    def shutdown(self):
        self.shut = True


class StoppableEngine:
    """An async engine that records its shutdown."""

    def __init__(self):
        self.shut = 0

    async def chat(self, requests):
        return [Result(texts=["x"], tokens=1) for _ in requests]

    def shutdown(self):
        self.shut += 1


class Ask:
    role = "generate:g"

    def run(self, rows, engine):
        engine.chat([Request([{"role": "user", "content": row["id"]}]) for row in rows])


def test_a_stage_let_go_of_stops_its_engine_then_and_only_once(tmp_path):
    """Ray Data's actor lets go of its stage in `__ray_shutdown__`, before Ray kills the actor's
    child processes (the engine's and the resource tracker): the engine must stop then, so nothing
    may keep the stage alive until the interpreter's exit."""
    engine = StoppableEngine()
    stage = ModelStage(lambda: engine, [Ask()], "m", storage(str(tmp_path)))
    run(stage, batch(2))
    assert engine.shut == 0
    stage.threads.shutdown(wait=True)  # a batch thread lets go of its last call a moment after it returns
    finalizer = stage.engine_stop
    del stage
    assert engine.shut == 1 and not finalizer.alive  # the interpreter's exit will not stop it again


def test_stop_engine_waits_for_the_processes_the_engine_started():
    before = child_pids()
    engine = FakeEngine(linger=1.0)
    procs = started_since(before)
    assert [p.pid for p in procs] == [engine.proc.pid]
    t0 = time.monotonic()
    assert stop_engine(engine, procs, wait_s=30) == []
    assert engine.shut and engine.proc.poll() is not None  # gone before the actor would exit
    assert time.monotonic() - t0 >= 0.5


def test_stop_engine_kills_what_outlives_its_wait_and_names_it():
    before = child_pids()
    engine = FakeEngine(linger=30)
    try:
        procs = started_since(before)
        assert stop_engine(engine, procs, wait_s=0.3) == [engine.proc.pid]
        assert engine.proc.wait(timeout=10) == -9  # not left running on a long-lived cluster
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


def test_the_driver_waits_for_its_local_rays_engine_actors_only():
    """A local Ray's vLLM processes and the engine actors that started them, found by title in that
    session's tree; an engine actor whose engine runs inside the actor's process, the resource
    tracker, an idle worker and another session's engine are not waited for."""
    from prefgen.engines.exit import engine_actor_processes

    session = "/tmp/ray/session_a"
    ours, theirs = {"RAY_RAYLET_PID": "10"}, {"RAY_RAYLET_PID": "99"}
    table = {
        10: (1, f"raylet\0--session_dir={session}\0", {}),
        20: (10, "ray::MapWorker(MapBatches(ModelStage))\0", ours),
        21: (20, "VLLM::EngineCore\0", ours),
        22: (21, "VLLM::Worker\0", ours),
        23: (20, "python\0-c\0from multiprocessing.resource_tracker import main;main(40)\0", ours),
        30: (10, "ray::IDLE\0", ours),
        40: (1, "VLLM::Worker\0", theirs),  # an orphan of another run
        50: (10, "ray::MapWorker(MapBatches(ModelStage))\0", ours),  # its engine inside it: nothing to leave
    }
    assert engine_actor_processes(session, table) == [20, 21, 22]


def test_waiting_for_the_engine_actors_ends_when_they_are_gone_or_names_those_left(monkeypatch):
    import prefgen.engines.exit as engine_exit

    seen = iter([[20, 21], [20], []])
    monkeypatch.setattr(engine_exit, "engine_actor_processes", lambda session_dir: next(seen))
    assert engine_exit.wait_for_engine_actors("s", wait_s=30, poll_s=0.01) == []
    monkeypatch.setattr(engine_exit, "engine_actor_processes", lambda session_dir: [20])
    assert engine_exit.wait_for_engine_actors("s", wait_s=0.05, poll_s=0.01) == [20]
