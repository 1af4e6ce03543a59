"""The engines' own logic around vLLM, on stand-ins for vLLM's objects (no engine starts).

Each prompt is templated and tokenized once; its length is checked on those ids, which are what
vLLM receives; a prompt that does not fit gets an error instead of a call; an async engine's
requests all go to vLLM at once and come back in request order with every completion; one
failing request aborts the others.
"""

import asyncio
import os
import threading
from types import SimpleNamespace

import pytest

from prefgen.engines import engine as engine_module
from prefgen.config import EngineConfig, SamplingConfig
from prefgen.engines.engine import AsyncVllmEngine, Request, VllmEngine, length_error


class CountingTokenizer:
    """One token per character of the conversation's contents; counts its calls."""

    def __init__(self):
        self.calls = 0

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        assert add_generation_prompt and tokenize
        self.calls += 1
        return [ord(ch) for m in messages for ch in m["content"]]


def completion(text, reason="stop", tokens=3):
    return SimpleNamespace(text=text, finish_reason=reason, token_ids=list(range(tokens)))


def request(content, max_tokens=10, n=1):
    return Request([{"role": "user", "content": content}], SamplingConfig(max_tokens=max_tokens), n=n)


@pytest.fixture
def no_vllm(monkeypatch):
    """vLLM's prompt and sampling objects replaced by plain values the fakes can read."""
    monkeypatch.setattr(engine_module, "token_prompt", lambda ids: {"ids": ids})
    monkeypatch.setattr(engine_module, "sampling_params", lambda req: {"n": req.n, "max_tokens": req.sampling.max_tokens})


class FakeAsyncLLM:
    """Answers each prompt with n texts naming it; `blocked` prompts wait until cancelled, `failing` raise."""

    def __init__(self, failing=(), blocked=()):
        self.failing, self.blocked = failing, blocked
        self.seen, self.cancelled, self.most_open = [], [], 0
        self.open, self.loras = 0, {}

    async def generate(self, prompt, params, request_id, lora_request=None):
        text = "".join(map(chr, prompt["ids"]))
        self.seen.append(text)
        self.loras[text] = lora_request
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await asyncio.sleep(0)  # every request of the call is submitted before any finishes
            if text in self.failing:
                raise ValueError(f"rejected {text}")
            if text in self.blocked:
                await asyncio.Event().wait()
            outputs = [completion(f"{text}:{k}", "length" if k else "stop") for k in range(params["n"])]
            yield SimpleNamespace(outputs=outputs, finished=True)
        except asyncio.CancelledError:
            self.cancelled.append(text)
            raise
        finally:
            self.open -= 1


def async_engine(llm, max_model_len=16):
    eng = object.__new__(AsyncVllmEngine)
    eng.engine_cfg, eng.llm, eng.tokenizer = EngineConfig(max_model_len=max_model_len), llm, CountingTokenizer()
    eng._ids, eng._tokenizer_lock = iter(range(1000)), threading.Lock()
    eng.loras = {}
    return eng


def test_length_error_when_prompt_and_max_tokens_exceed_the_context():
    assert length_error(6, 16, 10) is None  # exactly fits
    message = length_error(7, 16, 10)
    assert "7 tokens" in message and "max_model_len 16" in message and "leaves 6" in message


def test_async_chat_tokenizes_once_sends_all_at_once_and_keeps_request_order(no_vllm):
    llm = FakeAsyncLLM()
    eng = async_engine(llm)
    reqs = [request("abc", n=2), request("x" * 10), request("def")]  # the second: 10 + 10 > 16
    results = asyncio.run(eng.chat(reqs))
    assert eng.tokenizer.calls == 3
    assert sorted(llm.seen) == ["abc", "def"] and llm.most_open == 2
    assert results[0].texts == ["abc:0", "abc:1"] and results[0].finish_reasons == ["stop", "length"]
    assert results[0].tokens == 6 and results[0].error is None
    assert results[1].texts == [] and "10 tokens" in results[1].error
    assert results[2].texts == ["def:0"]


def test_a_failing_request_aborts_the_others_of_its_call(no_vllm):
    llm = FakeAsyncLLM(failing={"bad"}, blocked={"slow"})
    eng = async_engine(llm)

    async def main():
        with pytest.raises(ValueError, match="rejected bad"):
            await eng.chat([request("slow"), request("bad")])
        await asyncio.sleep(0)  # let the cancellation land
        assert llm.cancelled == ["slow"]  # before the loop ends, which would cancel it anyway

    asyncio.run(main())


def test_blocking_engine_sends_the_ids_it_checked(no_vllm):
    sent = []

    def generate(prompts, params, use_tqdm, lora_request):
        assert lora_request == [None] * len(prompts)
        sent.extend(prompts)
        return [SimpleNamespace(outputs=[completion("".join(map(chr, p["ids"])))]) for p in prompts]

    eng = object.__new__(VllmEngine)
    eng.engine_cfg, eng.tokenizer = EngineConfig(max_model_len=16), CountingTokenizer()
    eng.llm, eng.loras = SimpleNamespace(generate=generate), {}
    results = eng.chat([request("y" * 7), request("ok")])
    assert eng.tokenizer.calls == 2 and sent == [{"ids": [ord("o"), ord("k")]}]
    assert results[0].error and results[1].texts == ["ok"] and results[1].finish_reasons == ["stop"]


def test_auto_dtype_follows_what_the_cpu_computes_natively():
    from prefgen.engines.arguments import resolve_dtype

    assert resolve_dtype("auto", "cpu", "flags : fpu avx2 avx512f avx512_bf16") == "bfloat16"
    assert resolve_dtype("auto", "cpu", "flags : fpu avx2 amx_bf16") == "bfloat16"
    assert resolve_dtype("auto", "cpu", "flags : fpu avx2 avx512f") == "float32"
    assert resolve_dtype("auto", "gpu", "flags : fpu") == "auto"  # vLLM: the checkpoint's dtype
    assert resolve_dtype("float16", "cpu", "flags : fpu") == "float16"  # a dtype asked for is kept


def test_a_cpu_engine_gets_a_fixed_kv_cache_and_a_gpu_engine_its_memory_share():
    from prefgen.config import EngineConfig
    from prefgen.engines.arguments import device_kwargs

    eng = EngineConfig(cpu_kv_cache_gib=1.5, gpu_memory_utilization=0.8)
    assert device_kwargs(eng, "cpu", environ={}) == {"kv_cache_memory_bytes": 3 * 2**29}  # no RAM share reserved
    assert device_kwargs(eng, "gpu", environ={}) == {"gpu_memory_utilization": 0.8}


def test_the_cpu_build_runs_the_model_in_the_engine_core_only_where_vllm_keeps_it_there():
    from prefgen.config import EngineConfig
    from prefgen.engines.arguments import device_kwargs

    actor = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}  # placement.actor_options
    assert device_kwargs(EngineConfig(), "cpu", environ=actor)["distributed_executor_backend"] == "uni"
    # vLLM would turn `uni` back into its worker process, pinned threads need that process, and
    # tensor parallelism needs a process per rank: the kwargs leave vLLM's default
    for environ in ({**actor, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}, {**actor, "VLLM_CPU_OMP_THREADS_BIND": "auto"}, {}):
        assert "distributed_executor_backend" not in device_kwargs(EngineConfig(), "cpu", environ=environ)
    assert "distributed_executor_backend" not in device_kwargs(EngineConfig(tensor_parallel_size=2), "cpu", environ=actor)
    assert "distributed_executor_backend" not in device_kwargs(EngineConfig(), "gpu", environ=actor)


def test_an_engine_placed_on_a_gpu_gets_the_gpu_arguments_unless_vllm_is_the_cpu_build():
    from prefgen.config import EngineConfig
    from prefgen.engines.arguments import engine_kwargs, vllm_device

    eng = EngineConfig(device="gpu", cpu_kv_cache_gib=1, gpu_memory_utilization=0.8, extra={"swap_space": 0})
    on_gpu = engine_kwargs("/models/m", eng, "gpu", cpu_build=False)
    assert on_gpu["gpu_memory_utilization"] == 0.8 and "kv_cache_memory_bytes" not in on_gpu
    assert on_gpu["dtype"] == "auto" and on_gpu["swap_space"] == 0  # the checkpoint's dtype; extra kept
    # vLLM's CPU build in an actor holding a (logical) GPU: a fixed KV cache, not 0.8 of the host's RAM
    on_cpu_build = engine_kwargs("/models/m", eng, "gpu", cpu_build=True)
    assert on_cpu_build["kv_cache_memory_bytes"] == 2**30 and "gpu_memory_utilization" not in on_cpu_build
    assert on_cpu_build["dtype"] in ("bfloat16", "float32") and on_cpu_build["swap_space"] == 0
    assert engine_kwargs("/models/m", eng, "cpu", cpu_build=True) == on_cpu_build
    assert (vllm_device("gpu", cpu_build=False), vllm_device("gpu", cpu_build=True)) == ("gpu", "cpu")
    assert vllm_device("cpu", cpu_build=False) == "cpu"


def fake_vllm_sampling(monkeypatch):
    """vLLM's sampling modules as stand-ins that keep their keyword arguments (importing vLLM takes ~20 s)."""
    import sys
    from types import ModuleType

    vllm = ModuleType("vllm")
    vllm.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    params = ModuleType("vllm.sampling_params")
    params.RequestOutputKind = SimpleNamespace(FINAL_ONLY="final_only")
    params.StructuredOutputsParams = lambda **kw: SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", params)


def test_sampling_params_carry_the_repetition_penalty(monkeypatch):
    fake_vllm_sampling(monkeypatch)
    params = engine_module.sampling_params(Request([{"role": "user", "content": "hi"}],
                                                   SamplingConfig(max_tokens=32, repetition_penalty=1.2), 3))
    assert params.repetition_penalty == pytest.approx(1.2)
    assert params.n == 3 and params.max_tokens == 32
    default = engine_module.sampling_params(Request([{"role": "user", "content": "hi"}], SamplingConfig()))
    assert default.repetition_penalty == 1.0


def test_a_repetition_penalty_must_be_positive():
    with pytest.raises(ValueError, match="repetition_penalty"):
        SamplingConfig(repetition_penalty=0)


def test_each_request_runs_on_its_adapter_and_an_unknown_adapter_is_refused(no_vllm, monkeypatch):
    import sys
    from types import ModuleType

    request_module = ModuleType("vllm.lora.request")  # vLLM's LoRARequest, as a stand-in keeping its arguments
    request_module.LoRARequest = lambda name, id_, path: (name, id_, path)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request_module)
    adapters = {"b": SimpleNamespace(path="/a/b"), "a": SimpleNamespace(path="/a/a")}
    loras = engine_module.lora_requests(adapters)
    assert loras == {"a": ("a", 1, "/a/a"), "b": ("b", 2, "/a/b")}  # ids from 1, stable by name
    llm = FakeAsyncLLM()
    eng = async_engine(llm)
    eng.loras = loras
    on_b = Request([{"role": "user", "content": "bb"}], SamplingConfig(max_tokens=4), adapter="b")
    asyncio.run(eng.chat([request("base"), on_b]))
    assert llm.loras == {"base": None, "bb": ("b", 2, "/a/b")}
    with pytest.raises(ValueError, match="adapter 'c' is not served by this engine"):
        asyncio.run(eng.chat([Request([{"role": "user", "content": "c"}], SamplingConfig(max_tokens=4), adapter="c")]))


def test_lora_engine_arguments_come_from_the_declared_adapters():
    from prefgen.engines.arguments import engine_kwargs
    from prefgen.models.adapters import engine_lora_kwargs

    assert engine_lora_kwargs({}, "cpu") == {}
    rank = lambda r: SimpleNamespace(adapter_rank=r)  # noqa: E731
    two = {"a": rank(8), "b": rank(4)}
    assert engine_lora_kwargs(two, "gpu") == {"enable_lora": True, "max_loras": 2, "max_lora_rank": 8}
    assert engine_lora_kwargs(two, "cpu")["max_loras"] == 3  # a spare, zero slot for base requests (see the docstring)
    assert engine_lora_kwargs({"a": rank(12)}, "gpu")["max_lora_rank"] == 16  # vLLM takes 1, 8, 16, 32, ...
    kwargs = engine_kwargs("/models/m", EngineConfig(extra={"max_loras": 4}), "cpu", {"a": rank(8)},
                          cpu_build=True)
    assert kwargs["enable_lora"] and kwargs["max_lora_rank"] == 8 and kwargs["max_loras"] == 4  # extra wins


def test_an_engine_actor_computes_on_every_core_unless_told_otherwise(monkeypatch):
    """Ray gives an actor OMP_NUM_THREADS of its logical CPUs (1): the CPU build then computed on one
    core of two. The engine takes the node's cores, or what the config or the driver's environment asks."""
    from prefgen.config import EngineConfig
    from prefgen.engines.arguments import CPU_THREADS_ENV, cpu_threads, use_cpu_threads
    from prefgen.engines.placement import actor_options

    assert cpu_threads({CPU_THREADS_ENV: ""}, cores=8) == 8
    assert cpu_threads({CPU_THREADS_ENV: "3"}, cores=8) == 3
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert actor_options(EngineConfig(cpu_threads=3), "cpu")["runtime_env"]["env_vars"][CPU_THREADS_ENV] == "3"
    assert actor_options(EngineConfig(), "cpu")["runtime_env"]["env_vars"][CPU_THREADS_ENV] == ""
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # the user's, in the driver's environment
    assert actor_options(EngineConfig(), "cpu")["runtime_env"]["env_vars"][CPU_THREADS_ENV] == "5"
    # in the actor: Ray's OMP_NUM_THREADS=1 replaced before vLLM starts its engine core
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv(CPU_THREADS_ENV, "")
    assert use_cpu_threads("cpu", cpu_build=True) == cpu_threads() and os.environ["OMP_NUM_THREADS"] == str(cpu_threads())
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert use_cpu_threads("gpu", cpu_build=False) is None and os.environ["OMP_NUM_THREADS"] == "1"  # the CUDA build
    monkeypatch.delenv(CPU_THREADS_ENV)
    assert use_cpu_threads("cpu", cpu_build=True) is None and os.environ["OMP_NUM_THREADS"] == "1"  # not an engine actor
