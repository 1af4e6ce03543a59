"""The resources prefgen asks for are the ones Ray grants: real actors on a local Ray with logical
GPUs and an accelerator type (no GPU needed)."""

from prefgen.engines.placement import actor_options

from support.placement import gpu_config


def test_gpu_actor_options_are_granted_on_logical_gpus(local_ray):
    ray = local_ray

    class ReportPlacement:
        def __call__(self, batch):
            import os

            import ray

            batch["gpu_ids"] = [",".join(str(g) for g in ray.get_gpu_ids())] * len(batch["x"])
            granted = ray.get_runtime_context().get_assigned_resources()
            batch["a10g"] = [granted.get("accelerator_type:A10G", 0) > 0] * len(batch["x"])
            batch["visible"] = [os.environ.get("CUDA_VISIBLE_DEVICES", "")] * len(batch["x"])
            return batch

    # the session's Ray: a node with two logical GPUs that Ray takes for A10Gs
    cfg = gpu_config(tp_judge=2, judge_accelerator="A10G")
    opts = actor_options(cfg.model_of(cfg.judge).engine, "gpu")
    opts.pop("runtime_env")
    ds = ray.data.range(4).map_batches(
        lambda b: {"x": b["id"]}, batch_format="numpy"
    ).map_batches(ReportPlacement, compute=ray.data.ActorPoolStrategy(size=1), batch_format="numpy", batch_size=2, **opts)
    rows = ds.take_all()
    assert {r["gpu_ids"] for r in rows} == {"0,1"}  # tensor_parallel_size 2: both GPUs, one actor
    assert {r["visible"] for r in rows} == {"0,1"}
    assert {r["a10g"] for r in rows} == {True}  # placed by the accelerator type asked for
