"""Ray's fake multi-node provider, with one difference: each worker "node" unpacks runtime
environments (a job's `--working-dir`) into a folder of its own, as a real node does on its own
disk.

The autoscaler imports this class (`provider: {type: external, module: ...}` in the cluster
config; the head's PYTHONPATH holds `tests/`). Ray's fake nodes all live in the head's session
folder, and a node's runtime-env agent unpacks a working dir it has not seen with `overwrite=True`:
on the shared folder, a second node that joins deletes and re-unpacks the directory the first
node's actors (and the job's driver on the head) run in, and a process whose current directory
was deleted fails on its next relative path (CI met `FileNotFoundError` in an engine's start).
Giving each node its own `runtime_env_dir_name` (a `RayParams` field) removes that sharing; every
other part of the node (raylet, object store, agents) is Ray's, unchanged.
"""

from __future__ import annotations

import functools

import ray._private.parameter
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider


class OwnDiskFakeProvider(FakeMultiNodeProvider):
    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        # The parent builds the node's RayParams from module `ray._private.parameter` at call time;
        # for this one call, the runtime-env folder is named after the node about to be created.
        with self.lock:
            folder = f"runtime_resources_node{self._next_node_id + 1}"
            plain = ray._private.parameter.RayParams
            ray._private.parameter.RayParams = functools.partial(plain, runtime_env_dir_name=folder)
            try:
                super()._create_node_with_resources_and_labels(node_config, tags, count, resources, labels)
            finally:
                ray._private.parameter.RayParams = plain
