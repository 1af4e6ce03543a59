"""Where this code runs in Ray: the actor's and the node's ids, or None outside Ray.

The engine stages' stats say which node an engine ran on, and each batch's commit which node its
writer ran on, so that a run (and a test of a cluster) can tell where its work went.
"""

from __future__ import annotations


def _runtime_id(getter: str) -> str | None:
    """An id from Ray's runtime context (`get_actor_id`, `get_node_id`); None outside Ray."""
    try:
        import ray

        return getattr(ray.get_runtime_context(), getter)() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - no Ray: a unit test's stage or writer
        return None


def current_actor_id() -> str | None:
    """Ray's id of the actor this runs in (kept when Ray restarts it); None outside an actor."""
    return _runtime_id("get_actor_id")


def current_node_id() -> str | None:
    """Ray's id of the node this runs on; None outside Ray."""
    return _runtime_id("get_node_id")
