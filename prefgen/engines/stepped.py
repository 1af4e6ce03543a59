"""vLLM's engine in the actor's own process, stepped by a thread, behind `AsyncLLM`'s `generate`.

`AsyncLLM` always runs its engine core in a process of its own: vLLM spawns it (torch and vLLM
imported a second time: about 17 s of a 23 s engine start on a 2-core CPU,
`benchmarks/engine_start.py`) and every request and output crosses between the two processes.
Where the model runs inside the engine core anyway (vLLM's CPU build with one rank:
`arguments.device_kwargs`), `SteppedLLM` holds vLLM's `LLMEngine` instead, whose engine core is
then in this process, and one thread steps it. Requests of every caller join between steps, so
continuous batching spans the batches in flight as it does with `AsyncLLM`. `generate` has
`AsyncLLM.generate`'s shape (an async iterator of outputs; here the final one only), so
`engine.AsyncVllmEngine` runs on either. Only the stepping thread touches the engine.

The stepping thread also builds the engine: an engine built in one thread and stepped in another
decoded 20% slower here (400 against 505 tok/s, the embedded model on 2 cores). It computes with
as many threads as the thread that made the `SteppedLLM` (the actor's, `arguments.use_cpu_threads`):
OpenMP keeps the count per thread, a new thread starts from the process's initial one (Ray's
OMP_NUM_THREADS, 1 in a 1-CPU actor), and vLLM's CPU attention refuses metadata built for
another count ("thread_num == thread_num (1 vs. 2)").

An exception in a step ends the engine: every waiting call and every later one raises vLLM's
`EngineDeadError`, so the stage replaces its actor as it does when `AsyncLLM`'s core dies.

Each step is timed and its width (sequences running and waiting) kept in `steps` (`step_log.py`),
which the stage's stats report.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable

from prefgen.engines.step_log import StepLog, request_counts


def _settle(done: asyncio.Future, output=None, error: BaseException | None = None) -> None:
    if done.cancelled():
        return
    if error is None:
        done.set_result(output)
    else:
        done.set_exception(error)


def _deliver(loop: asyncio.AbstractEventLoop, done: asyncio.Future, output=None, error=None) -> None:
    """From the stepping thread to the caller's event loop (gone, if the caller's loop has closed)."""
    try:
        loop.call_soon_threadsafe(_settle, done, output, error)
    except RuntimeError:
        pass


def _torch_threads() -> int | None:
    """This thread's torch (OpenMP) thread count; None where torch is not loaded (a stand-in engine)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def _use_torch_threads(threads: int | None) -> None:
    """Set this thread's count through torch's own binding: vLLM's CPU worker replaces
    `torch.set_num_threads` with a no-op once it has bound its threads."""
    if threads is not None:
        sys.modules["torch"]._C.set_num_threads(threads)


def _final_only(params) -> None:
    """The request's outputs: its final one only (what `generate` awaits)."""
    from vllm.sampling_params import RequestOutputKind

    params.output_kind = RequestOutputKind.FINAL_ONLY


def _dead(cause: BaseException) -> BaseException:
    from vllm.v1.engine.exceptions import EngineDeadError

    dead = EngineDeadError(f"the engine's stepping thread failed: {type(cause).__name__}: {cause}")
    dead.__cause__ = cause
    return dead


class SteppedLLM:
    def __init__(self, build: Callable[[], object]):
        """`build`: makes vLLM's `LLMEngine` (`from_engine_args`), or a stand-in with its calls in a
        unit test; called in the stepping thread, which then waits for requests. Returns once the
        engine is built; a failed build raises here."""
        self.engine = None
        self._wake = threading.Condition()
        self._incoming: list[tuple] = []  # (request id, prompt, params, LoRA request, loop, future)
        self._aborts: list[str] = []
        self._waiting: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}  # the thread's own
        self._failed: BaseException | None = None
        self._stopping = False
        self.steps = StepLog()
        self._threads = _torch_threads()  # this thread's (the actor's choice): the stepping thread takes the same
        self._built = threading.Event()
        self._build_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(build,), name="prefgen-vllm-steps", daemon=True)
        self._thread.start()
        self._built.wait()
        if self._build_error is not None:
            raise self._build_error

    @classmethod
    def from_engine_args(cls, engine_args, usage_context) -> SteppedLLM:
        from vllm.v1.engine.llm_engine import LLMEngine

        return cls(lambda: LLMEngine.from_engine_args(engine_args, usage_context=usage_context))

    def get_tokenizer(self):
        return self.engine.get_tokenizer()

    @property
    def vllm_config(self):
        return self.engine.vllm_config

    async def generate(self, prompt, params, request_id: str, lora_request=None):
        """The request's final output, once finished (`params` is the caller's own: changed here)."""
        _final_only(params)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        with self._wake:
            if self._failed is not None or self._stopping:
                raise _dead(self._failed or RuntimeError("the engine was shut down"))
            self._incoming.append((request_id, prompt, params, lora_request, loop, done))
            self._wake.notify()
        try:
            output = await done
        except asyncio.CancelledError:  # the caller gave up on it (another request of its call failed)
            with self._wake:
                self._aborts.append(request_id)
                self._wake.notify()
            raise
        yield output

    def _next_work(self) -> tuple[list[tuple], list[str]] | None:
        """Wait for something to do: new requests, aborts, or unfinished ones to step; None: stop."""
        with self._wake:
            while not (self._stopping or self._incoming or self._aborts or self.engine.has_unfinished_requests()):
                self._wake.wait()
            if self._stopping:
                return None
            incoming, aborts = self._incoming, self._aborts
            self._incoming, self._aborts = [], []
            return incoming, aborts

    def _run(self, build: Callable[[], object]) -> None:
        try:
            _use_torch_threads(self._threads)
            self.engine = build()
        except BaseException as exc:  # noqa: BLE001 - the constructor raises it
            self._build_error = exc
            return
        finally:
            self._built.set()
        try:
            while (work := self._next_work()) is not None:
                incoming, aborts = work
                for request_id, prompt, params, lora, loop, done in incoming:
                    try:
                        self.engine.add_request(request_id, prompt, params, lora_request=lora)
                    except Exception as exc:  # noqa: BLE001 - a request vLLM refuses fails alone
                        _deliver(loop, done, None, exc)
                        continue
                    self._waiting[request_id] = (loop, done)
                gone = [r for r in aborts if self._waiting.pop(r, None) is not None]
                if gone:
                    self.engine.abort_request(gone)
                if self.engine.has_unfinished_requests():
                    for output in self._step():
                        if output.finished and output.request_id in self._waiting:
                            loop, done = self._waiting.pop(output.request_id)
                            _deliver(loop, done, output)
        except BaseException as exc:  # noqa: BLE001 - the engine is gone: every caller hears it
            with self._wake:
                self._failed = exc
                pending = list(self._waiting.values()) + [(loop, done) for *_, loop, done in self._incoming]
                self._waiting, self._incoming = {}, []
            for loop, done in pending:
                _deliver(loop, done, None, _dead(exc))

    def _step(self) -> list:
        started = time.monotonic()
        outputs = self.engine.step()
        counts = request_counts(self.engine)
        if counts is not None:
            self.steps.record(started, time.monotonic() - started, *counts)
        return outputs

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop stepping (the step under way ends first), then the engine core."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout)
        if self.engine is not None:
            self.engine.engine_core.shutdown()
