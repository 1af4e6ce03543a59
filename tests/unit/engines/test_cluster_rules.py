"""The cluster rules as pure functions (no Ray): where output may go, a replica against one
node's resources (not the cluster's totals), and the placement watch's timeout."""

import pytest

from prefgen.engines.cluster import PlacementTimeout, PlacementWatch, output_refusal, watched
from prefgen.config import EngineConfig
from prefgen.engines.placement import PlanError, choose_mode, replica_needs

TWO_NODES = [{"CPU": 0.0}, {"CPU": 2.0, "GPU": 1.0, "accelerator_type:A10G": 1.0}, {"CPU": 2.0, "GPU": 1.0}]


@pytest.mark.parametrize(("path", "shared", "nodes", "autoscaling", "refused"), [
    ("/data/out", False, 1, False, False),  # a local Ray, or a one-node cluster
    ("/data/out", False, 3, False, True),
    ("/data/out", False, 1, True, True),  # a head alone that will grow (ray.expected_resources)
    ("/data/out", True, 3, False, False),  # a shared mount
    ("file:///data/out", False, 3, False, True),  # local disk too
    ("s3://bucket/out", False, 3, True, False),
    ("gs://bucket/out", False, 3, False, False),
])
def test_a_local_output_path_is_refused_on_a_cluster_unless_it_is_a_shared_mount(path, shared, nodes, autoscaling,
                                                                                   refused):
    why = output_refusal(path, shared, nodes, autoscaling)
    assert (why is not None) == refused
    if why:
        assert why.startswith(f"output.path {path} is a local path") and "output.shared_mount: true" in why


def test_a_replica_is_checked_against_one_node_not_the_clusters_totals():
    engine = EngineConfig(cpus_per_replica=3)  # the cluster has 4 CPUs, no node more than 2
    totals = {"CPU": 4.0, "GPU": 2.0, "accelerator_type:A10G": 1.0}
    assert choose_mode("auto", [("m", engine, "cpu")], totals) == "streaming"  # the totals alone would pass it
    with pytest.raises(PlanError) as refused:
        choose_mode("auto", [("m", engine, "cpu")], totals, TWO_NODES)
    assert "one replica needs CPU 3 on one node" in str(refused.value)
    assert "CPU: needs 3 on one node, the most any node has is 2" in str(refused.value)
    tp2 = EngineConfig(tensor_parallel_size=2)  # two GPUs in the cluster, one per node
    with pytest.raises(PlanError, match="GPU: needs 2 on one node, the most any node has is 1"):
        choose_mode("auto", [("m", tp2, "gpu")], totals, TWO_NODES)
    a10g = EngineConfig(accelerator_type="A10G")
    assert choose_mode("auto", [("m", a10g, "gpu")], totals, TWO_NODES) == "streaming"
    both = [{"CPU": 4.0}, {"CPU": 0.0, "GPU": 1.0}]  # enough of each, never on one node
    with pytest.raises(PlanError, match="no node has CPU 1, GPU 1 together"):
        choose_mode("auto", [("m", EngineConfig(), "gpu")], {"CPU": 4.0, "GPU": 1.0}, both)


def test_the_placement_watch_stops_a_run_only_after_the_timeout_without_a_node_that_fits():
    now, nodes = [0.0], [TWO_NODES]
    need = replica_needs(EngineConfig(accelerator_type="A10G"), "gpu")
    watch = PlacementWatch({"m (judge:judge)": need}, 60, lambda: nodes[0], interval_s=0, clock=lambda: now[0])
    watch.check()  # it fits
    nodes[0] = TWO_NODES[:1] + TWO_NODES[2:]  # the A10G node is lost
    for t in (10.0, 69.0):
        now[0] = t
        watch.check()
    nodes[0] = TWO_NODES  # a replacement came (an autoscaler): the clock starts again
    now[0] = 75.0
    watch.check()
    nodes[0] = TWO_NODES[:1]
    now[0] = 80.0
    watch.check()
    now[0] = 140.0
    with pytest.raises(PlacementTimeout) as stopped:
        watch.check()
    message = str(stopped.value)
    watch.watch_only("m (judge:judge)")  # phased mode: the next phase's stage; the clock starts again
    now[0] = 150.0
    watch.check()
    assert "ray.placement_timeout_s=60 s" in message and "engine stage m (judge:judge)" in message
    assert "GPU: needs 1 on one node, the most any node has is 0" in message
    assert "accelerator_type:A10G" in message and "rerun the same command to resume" in message


def test_watched_items_come_through_and_a_check_that_raises_ends_a_stalled_iteration():
    assert list(watched(iter([1, 2, 3]), lambda: None)) == [1, 2, 3]

    def stalled():
        yield 1
        import time

        time.sleep(60)  # Ray Data waiting for an actor that is never placed
        yield 2

    checks = []

    def check():
        checks.append(1)
        if len(checks) > 2:
            raise PlacementTimeout("no node")

    got = []
    with pytest.raises(PlacementTimeout):
        for item in watched(stalled(), check, poll_s=0.05):
            got.append(item)
    assert got == [1]

    def broken():
        yield 1
        raise OSError("the dataset failed")

    with pytest.raises(OSError, match="the dataset failed"):
        list(watched(broken(), lambda: None))
