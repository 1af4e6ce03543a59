"""A GPU plan for the placement tests: two generators and a judge on engines of their own."""

from prefgen.config import PipelineConfig, parse_config


def gpu_config(tp_judge=1, mode="auto", replicas=1, judge_accelerator=None, device="gpu") -> PipelineConfig:
    """Two generators on engines of their own (different seeds), the judge on a third."""
    eng = {"device": device, "replicas": replicas}
    judge = {"device": device, "tensor_parallel_size": tp_judge, "accelerator_type": judge_accelerator, "seed": 2}
    return parse_config(
        {
            "generators": [{"name": "a", "engine": eng}, {"name": "b", "engine": {**eng, "seed": 1}}],
            "evolution": {"enabled": False},
            "judge": {"engine": judge},
            "ray": {"mode": mode},
        }
    )
