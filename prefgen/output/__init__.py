"""An output folder and its bookkeeping: where prefgen's shards, commits, lease and manifest live.

`storage.py` is the one way prefgen reads and writes objects, on local disk or an object store
(S3 and S3-compatible stores, GCS, Azure); the output and resume modules move here later.
"""
