"""The flag that tells an attempt's engine stages a stop was asked for (see `run/stopping.py`):
a key in Ray's internal key-value store, named after the attempt. The driver sets it; the first
engine stage reads it before each batch and, once set, passes the batch through untouched, its
rows marked STOPPED with the detail `STOP_REQUESTED`, so that the driver commits nothing of it."""

from __future__ import annotations

STOP_REQUESTED = "stop requested"  # the detail of the rows of a batch a stage passed through after a stop


def _stop_key(attempt: str) -> bytes:
    return f"prefgen-stop-{attempt}".encode()


def ask_workers_to_stop(attempt: str) -> None:
    """Tell this attempt's engine stages to take no new batch (the driver, once Ray is up)."""
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(_stop_key(attempt), b"1", overwrite=True)


def workers_asked_to_stop(attempt: str) -> bool:
    """Whether this attempt was asked to stop (a stage, before each batch); False outside Ray."""
    try:
        from ray.experimental import internal_kv

        return internal_kv._internal_kv_initialized() and internal_kv._internal_kv_exists(_stop_key(attempt))
    except Exception:  # noqa: BLE001 - no Ray, or its store unreachable: keep working
        return False
