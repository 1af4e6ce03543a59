"""`StepLog`'s arithmetic: time-weighted widths, the share of time full, the timeline's buckets."""

from types import SimpleNamespace

from prefgen.engines.step_log import StepLog, combined, request_counts


def test_widths_are_weighted_by_step_time_and_bucketed_from_the_first_step():
    log = StepLog(bucket_s=10)
    log.record(100.0, 1.0, running=8, waiting=0)
    log.record(101.0, 3.0, running=4, waiting=2)
    log.record(125.0, 2.0, running=1, waiting=0)
    s = log.summary()
    assert s["steps"] == 3 and s["step_s"] == 6.0
    assert s["mean_running"] == round((8 * 1 + 4 * 3 + 1 * 2) / 6, 1)
    assert s["mean_waiting"] == 1.0 and s["max_waiting"] == 2 and s["max_running"] == 8
    assert s["waiting_share"] == 0.5
    assert s["timeline"] == [[0, 5.0, 1.5, 0.4], [20, 1.0, 0.0, 0.2]]


def test_an_empty_log_and_an_engine_without_a_scheduler_here():
    assert StepLog().summary()["mean_running"] == 0.0
    assert request_counts(SimpleNamespace(engine_core=SimpleNamespace())) is None
    core = SimpleNamespace(scheduler=SimpleNamespace(get_request_counts=lambda: (3, 1)))
    assert request_counts(SimpleNamespace(engine_core=SimpleNamespace(engine_core=core))) == (3, 1)


def test_a_stages_actors_combine_weighted_by_their_step_time():
    one = {"steps": 10, "step_s": 30.0, "mean_running": 40.0, "max_running": 64, "mean_waiting": 0.0,
           "waiting_share": 0.0}
    two = {"steps": 5, "step_s": 10.0, "mean_running": 8.0, "max_running": 9, "mean_waiting": 4.0,
           "waiting_share": 1.0}
    both = combined([one, None, two, {"steps": 0, "step_s": 0.0}])
    assert both == {"steps": 15, "step_s": 40.0, "mean_running": 32.0, "max_running": 64, "mean_waiting": 1.0,
                    "waiting_share": 0.25}
    assert combined([None]) is None
