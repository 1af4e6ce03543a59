"""The run's progress figures (rates, ETA, the job-log line) and the quiet console, without Ray."""

import io
import os
import subprocess
import sys
import textwrap

from prefgen.run.console import RunConsole, log_file_for
from prefgen.report.progress import RunProgress, due, duration


def report(n, pairs=0, rejects=None, tokens=0):
    return {"ids": [f"r{i}" for i in range(n)], "pairs": pairs, "rejects": rejects or {}, "output_tokens": tokens}


def test_rates_and_eta_leave_the_engine_start_out():
    p = RunProgress(total_rows=10, started=0.0)
    assert p.eta_s(50.0) is None and p.rows_per_s(50.0) is None  # nothing committed yet: unknown
    p.add_batch(report(2, pairs=2, tokens=400), now=100.0)  # the engine took ~90 s to start
    assert p.rows_per_s(100.0) == 2 / 100.0  # one batch in: over the whole run
    p.add_batch(report(2, pairs=1, rejects={"all_tied": 1}, tokens=400), now=110.0)
    assert p.rows_per_s(110.0) == 2 / 10.0  # from the first batch on: 2 rows in 10 s
    assert p.eta_s(110.0) == 6 / 0.2
    assert p.tokens_per_s(110.0) == 800 / 110.0
    assert (p.all_done, p.pairs, p.rejected_rows, p.remaining) == (4, 3, 1, 6)


def test_a_resumed_run_counts_earlier_rows_as_done_but_not_in_its_rates():
    p = RunProgress(total_rows=10, started=0.0, done_before=6)
    p.add_batch(report(2, tokens=100), now=20.0)
    p.add_batch(report(2, tokens=100), now=30.0)
    assert p.all_done == 10 and p.remaining == 0 and p.eta_s(30.0) == 0.0
    assert p.rows_per_s(30.0) == 0.2


def test_bad_input_rejected_at_the_start_counts_as_done_but_sets_no_rate():
    p = RunProgress(total_rows=200, started=0.0)
    p.add_batch(report(1, rejects={"empty_instruction": 1}), now=1.0, bad_input=True)
    assert p.all_done == 1 and p.rejected_rows == 1
    assert p.eta_s(560.0) is None, "one reject over the first minutes gave an ETA of a day"
    p.add_batch(report(64), now=1100.0)
    assert p.rows_per_s(1100.0) == 64 / 1100.0  # the engine's rows only, over the whole run
    p.add_batch(report(64), now=1400.0)
    assert p.rows_per_s(1400.0) == 64 / 300.0 and p.eta_s(1400.0) == 71 / (64 / 300.0)


def test_job_log_line_and_durations():
    p = RunProgress(total_rows=8, started=0.0)
    p.phase = "waiting for the first batch"
    assert p.line(65.0) == ("[prefgen] progress: 0/8 rows done (0%), 0 pairs, 0 rejected, 0.0 tok/s, "
                            "elapsed 1m05s, ETA ? (waiting for the first batch)")
    p.add_batch(report(4, pairs=3, rejects={"all_tied": 1}, tokens=1000), now=100.0)
    assert p.line(100.0) == ("[prefgen] progress: 4/8 rows done (50%), 3 pairs, 1 rejected, 10.0 tok/s, "
                             "elapsed 1m40s, ETA 1m40s (working)")
    assert [duration(s) for s in (None, 0, 59.4, 60, 3599, 3600, 7325)] == ["?", "0s", "59s", "1m00s", "59m59s",
                                                                             "1h00m", "2h02m"]
    assert not due(None, 10.0, 30.0) and not due(0.0, 29.9, 30.0) and due(0.0, 30.0, 30.0)
    # nothing moved since the last line (an engine still starting): ten intervals between lines
    assert not due(0.0, 299.0, 30.0, changed=False) and due(0.0, 300.0, 30.0, changed=False)


def test_log_file_lies_beside_a_local_output_and_is_uploaded_for_a_uri(tmp_path):
    local, upload = log_file_for(str(tmp_path / "out"), "20260101T000000Z")
    assert local == tmp_path / "out" / "_logs" / "driver-20260101T000000Z.log" and upload is None
    local, upload = log_file_for("s3://bucket/run1/", "T")
    assert upload == "s3://bucket/run1/_logs/driver-T.log" and local.name == "driver-T.log"


def test_job_log_console_prints_a_line_per_interval_not_per_batch():
    out = io.StringIO()  # not a terminal: the job-log form
    console = RunConsole(verbose=False, out=out, interval_s=0.0)
    p = RunProgress(total_rows=4, started=0.0)
    console.watch(p)
    for _ in range(3):
        p.add_batch(report(1), now=1.0)
        console.watch(p)  # a batch alone prints nothing...
    assert out.getvalue().count("[prefgen] progress:") <= 1
    console.finish()  # ...the ticker and the end do
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("[prefgen] progress: 3/4 rows done (75%)")


CAPTURED = textwrap.dedent("""
    import os, sys
    from prefgen.run.console import RunConsole
    console = RunConsole(verbose=False)
    console.capture(sys.argv[1])
    print("a library's chatter")
    os.write(2, b"a C library's warning\\n")
    console.log("[prefgen] a line for both")
    """)


def test_quiet_console_sends_everything_else_to_the_log_file(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", CAPTURED, str(out)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)), timeout=60)
    assert proc.returncode == 0, proc.stderr
    (log,) = (out / "_logs").glob("driver-*.log")
    assert proc.stdout.splitlines() == [f"[prefgen] full log: {log}", "[prefgen] a line for both"]
    assert proc.stderr == ""
    assert log.read_text().splitlines() == ["a library's chatter", "a C library's warning", "[prefgen] a line for both"]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_terminal_console_draws_one_live_bar_with_the_figures():
    out = Terminal()
    console = RunConsole(verbose=False, out=out)
    p = RunProgress(total_rows=4, started=0.0)
    console.watch(p)
    console.log("[prefgen] plan: a line above the bar")
    p.add_batch(report(2, pairs=1, rejects={"all_tied": 1}, tokens=50), now=1.0)
    console.watch(p)
    console.finish()
    text = out.getvalue()
    assert "[prefgen] plan: a line above the bar" in text
    last = text.rsplit("\x1b[1A\x1b[2K", 1)[-1].splitlines()  # the display's final two lines, left on screen
    assert "rows 2/4" in last[0] and "50%  ETA" in last[0]
    assert "1 pairs · 1 rejected · " in last[1] and "working" in last[1]
    assert "[prefgen] progress:" not in text  # no job-log lines in a terminal


def actor(work, **more):
    return {"stage": "m", "work": {role: {"rows": r, "requests": r, "output_tokens": t} for role, (r, t) in work.items()},
            **more}


ROLES = ["generate:a", "generate:b", "evolve", "judge:j", "verify:j"]


def test_work_inside_the_stages_moves_the_progress_before_any_batch_is_committed():
    """12 rows in one batch: nothing is committed until the end, yet the line moves with each role."""
    p = RunProgress(total_rows=12, started=0.0, roles=ROLES, rows_todo=12)
    p.phase = "waiting for the first batch"
    assert p.stage_line() is None and p.line(10.0).endswith("(waiting for the first batch)")
    p.set_stage_work([actor({"generate:a": (12, 600), "generate:b": (12, 400)})])
    assert p.stage_share == 24 / 60 and p.tokens_per_s(100.0) == 1000 / 100.0
    assert p.line(100.0).endswith("(waiting for the first batch; stages 40% (generate:b 12/12 rows))")
    # two actors of one stage (replicas) add up; a batch redone after an actor died is not shown twice
    p.set_stage_work([actor({"generate:a": (12, 0), "evolve": (8, 100)}), actor({"generate:a": (6, 0), "evolve": (4, 0)})])
    assert p.role_rows("generate:a") == 12 and p.role_rows("evolve") == 12 and p.stage_share == 24 / 60
    assert "stages 40% (evolve 12/12 rows)" in p.line(200.0)
    p.add_batch(report(12, pairs=9, rejects={"all_tied": 3}, tokens=5000), now=300.0)
    assert p.line(300.0).endswith("(working)")  # all rows done: the stages' detail is no longer shown
    assert p.tokens_per_s(300.0) == 5000 / 300.0  # committed batches hold more tokens than the files showed


def test_stage_watcher_reads_the_stats_and_calls_the_display_only_when_work_moved():
    from prefgen.report.progress import StageWatcher

    p = RunProgress(total_rows=4, started=0.0, roles=ROLES, rows_todo=4)
    reads = iter([[actor({"generate:a": (4, 10)})], [actor({"generate:a": (4, 10)})], OSError("replaced"),
                  [actor({"generate:a": (4, 10), "generate:b": (2, 5)})]])

    def read():
        got = next(reads)
        if isinstance(got, Exception):
            raise got
        return got

    watched = []
    w = StageWatcher(read, p, lambda progress: watched.append(progress.role_rows("generate:b")))
    assert [w.poll() for _ in range(4)] == [True, False, False, True]  # a failed read changes nothing
    assert watched == [0, 2]


def test_the_live_display_shows_the_stages_work():
    from rich.console import Console

    from prefgen.run.console import display

    p = RunProgress(total_rows=12, started=0.0, roles=ROLES, rows_todo=12, phase="waiting for the first batch")
    p.set_stage_work([actor({"generate:a": (12, 600)})])
    console = Console(file=io.StringIO(), width=80)
    console.print(display(p, 60.0))
    assert console.file.getvalue().splitlines()[2] == "stages 20% (generate:a 12/12 rows)"


def test_verbose_console_prints_a_line_per_committed_batch_not_per_move_of_the_stages(capsys):
    console = RunConsole(verbose=True)
    p = RunProgress(total_rows=4, started=0.0, roles=ROLES, rows_todo=4)
    console.watch(p)  # the run opens
    p.set_stage_work([actor({"generate:a": (2, 10)})])
    console.watch(p)  # the stages moved: nothing committed, no line
    p.add_batch(report(2, pairs=1, rejects={"all_tied": 1}), now=5.0)
    console.watch(p)
    p.set_stage_work([actor({"generate:a": (4, 10)})])
    console.watch(p)  # moved again, no new batch: no second line
    lines = [line for line in capsys.readouterr().out.splitlines() if "progress:" in line]
    assert len(lines) == 1 and "2/4 rows done" in lines[0]
