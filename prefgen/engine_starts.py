"""An engine stage whose actors could not start, named in plain words.

Ray restarts a dead engine actor at most `ray.max_actor_restarts` times; an actor killed while
its engine loads (typically out of memory) past that bound, or whose engine raised while
starting, fails the Ray Data job with a bare actor error. The stage's stats files (written
before each start, see `stage.py`) say which stage it was, how often it tried and what it
raised, so the driver can stop with an error that says which stage, why, and what to change.
"""

from __future__ import annotations


ACTOR_ERRORS = ("RayActorError", "ActorDiedError", "ActorUnavailableError")


class EngineStartFailed(RuntimeError):
    """An engine stage could not start its engine; the folder stays resumable."""


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


def start_failure(exc: BaseException, stats: list[dict], labels: dict[str, str], sources: dict[str, str],
                  max_restarts: int, rows_done: int) -> EngineStartFailed | None:
    """The error to stop with when `exc` is an engine actor's death and this attempt's stats show a
    stage whose actors never started; None when it is something else."""
    failed = never_started(stats)
    if not failed or not _actor_error(exc):
        return None
    parts = []
    for stage, records in failed.items():
        raised = [r["error"] for r in records if r.get("error")]
        why = (f"its engine raised while starting: {raised[-1]}" if raised else
               f"its actor died while loading the model {len(records)} time(s), most likely out of memory "
               f"(host RAM or GPU); Ray gave up after ray.max_actor_restarts={max_restarts} restart(s)")
        parts.append(f"engine stage {labels.get(stage, stage)} (model {sources.get(stage, '?')}) could not start: {why}")
    return EngineStartFailed(
        "; ".join(parts) + f". {rows_done} finished rows are committed; rerun the same command to resume. To fix: "
        "give the engine more memory or ask for less (a smaller engine.max_model_len, batch_size or "
        "gpu_memory_utilization, or a smaller model), or raise ray.max_actor_restarts if the deaths were passing. "
        f"Ray's error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
    )
