"""Engine actors that cannot start: a bound on failed starts, and an error in plain words.

Ray restarts a dead engine actor without limit (Ray Data 2.60 counts a running actor that Ray
gave up on as still in its pool and starts no other, so a bound in Ray would hang the run
instead of ending it; the batches are bounded by `ray.max_batch_retries`). An actor killed
while its engine loads (typically out of memory) would so restart forever. Each start is on
record (the actor's stats file, written before the engine starts, see `stage.py`): a start
that finds its actor already died `ray.max_failed_starts` times in a row while starting gives
up by raising, which Ray does not retry, and Ray Data fails the job. From the same records the
driver then says which stage it was, why, and what to change.
"""

from __future__ import annotations

ACTOR_ERRORS = ("RayActorError", "ActorDiedError", "ActorUnavailableError")


class EngineStartFailed(RuntimeError):
    """An engine stage could not start its engine; the folder stays resumable."""


def failed_starts_in_a_row(records: list[dict], actor: str) -> int:
    """How many of this actor's latest starts died before their engine was ready (the starts
    since its last ready one); records: the attempt's stats files."""
    mine = sorted((r for r in records if r.get("actor") == actor), key=lambda r: r.get("started_at") or 0)
    count = 0
    for record in mine:
        count = 0 if record.get("ready", True) else count + 1
    return count


def _actor_error(exc: BaseException) -> bool:
    """Whether Ray's error for a dead actor is in the exception's chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if any(t.__name__ in ACTOR_ERRORS for t in type(exc).__mro__) or any(n in str(exc) for n in ACTOR_ERRORS):
            return True  # by name: Ray may wrap its error in another, quoting it
        exc = exc.__cause__ or exc.__context__
    return False


def never_started(stats: list[dict]) -> dict[str, list[dict]]:
    """Stage -> the start records of its actors that never became ready (one actor: every
    start it made, Ray's restarts included)."""
    ready = {(st["stage"], st.get("actor")) for st in stats if st.get("ready", True)}
    failed: dict[str, list[dict]] = {}
    for st in stats:
        if not st.get("ready", True) and (st["stage"], st.get("actor")) not in ready:
            failed.setdefault(st["stage"], []).append(st)
    return failed


MEMORY_FIX = ("give the engine more memory or ask for less (a smaller engine.max_model_len, batch_size or "
              "gpu_memory_utilization, or a smaller model), or raise ray.max_failed_starts if the deaths were passing")
RAISED_FIX = "change what the engine's error names (the model, its engine settings or the role's prompts)"


def _why(records: list[dict]) -> tuple[str, str]:
    """Why a stage's engine never started, and what to change."""
    gave_up = [r for r in records if r.get("gave_up")]
    if gave_up:
        return (f"its actor died {gave_up[-1]['gave_up']} time(s) in a row while loading the model, most likely "
                f"out of memory (host RAM or GPU), and prefgen gave up ({gave_up[-1]['error']})"), MEMORY_FIX
    raised = [r["error"] for r in records if r.get("error")]
    if raised:
        return f"its engine raised while starting: {raised[-1]}", RAISED_FIX
    return f"its actor died while loading the model ({len(records)} start(s)), most likely out of memory", MEMORY_FIX


def start_failure(exc: BaseException, stats: list[dict], labels: dict[str, str], sources: dict[str, str],
                  rows_done: int) -> EngineStartFailed | None:
    """The error to stop with when `exc` is an engine actor's death and this attempt's stats show a
    stage whose actors never started; None when it is something else."""
    failed = never_started(stats)
    if not failed or not _actor_error(exc):
        return None
    whys = {stage: _why(records) for stage, records in failed.items()}
    parts = [f"engine stage {labels.get(stage, stage)} (model {sources.get(stage, '?')}) could not start: {why}"
             for stage, (why, _) in whys.items()]
    fixes = "; ".join(dict.fromkeys(fix for _, fix in whys.values()))
    return EngineStartFailed("; ".join(parts) + f". {rows_done} finished rows are committed; rerun the same command "
                             f"to resume. To fix: {fixes}.")
