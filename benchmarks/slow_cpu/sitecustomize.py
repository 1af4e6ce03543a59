"""A CPU without AVX-512, emulated on one with it, to estimate what CI's slower machines take.

Put this folder first on PYTHONPATH (every Python process inherits it: the driver, Ray's
workers, vLLM's engine core) and set ATEN_CPU_CAPABILITY=avx2 and ONEDNN_MAX_CPU_ISA=AVX2
(`benchmarks/ci_time.py` does all three). Then torch's and oneDNN's kernels stop at AVX2,
vLLM loads its AVX2 kernel library (`vllm._C_AVX2`, chosen by `torch.cpu._is_avx512_supported`),
and prefgen's `dtype: auto` resolves to float32 as it does on a CPU without AVX512-BF16. What
it cannot change: the clock, the caches and the memory of the machine it runs on.
"""

import importlib.abc
import importlib.util
import sys


def _no(*args, **kwargs) -> bool:
    return False


PATCHES = {  # module: {attribute: replacement}, applied right after the module is first imported
    "torch.cpu": {"_is_avx512_supported": _no, "_is_avx512_bf16_supported": _no},
    "prefgen.engines.arguments": {"cpu_has_native_bf16": _no},
}


class _PatchAfterImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self):
        self._real = {}

    def find_spec(self, name, path=None, target=None):
        if name not in PATCHES:
            return None
        sys.meta_path.remove(self)  # find the real module's spec without recursing into ourselves
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None:
            return None
        self._real[name] = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._real[spec.name].create_module(spec)

    def exec_module(self, module):
        self._real[module.__name__].exec_module(module)
        for attribute, value in PATCHES[module.__name__].items():
            setattr(module, attribute, value)


sys.meta_path.insert(0, _PatchAfterImport())
