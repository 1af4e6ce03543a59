"""An output folder and how every input row lands in it exactly once, on local disk or an object
store. The story in the order a run lives it, each step in its module:

1. **Storage** (`storage.py`, backends `local_store.py` and `object_store.py`): the one way
   prefgen reads, writes, lists and deletes, with retries and request counts; put-if-absent and
   put-if-match are the conditional writes everything below relies on. The run opens its output
   folder once (`storage(uri)`) and passes that `Storage` on: every function below takes it, and
   so do the engine actors and writer tasks (it travels to them as its URI). `files.py`: shards and
   JSON written whole under their final names (one PUT on an object store, a rename on disk).
2. **Opening** (`runstate.py`): a run whose config or input differs from the folder's
   (`manifest.py`) is refused, naming the keys; the run takes the folder's lease (`_lease.json`,
   `lease.py`) with a conditional write, so of two runs exactly one owns it; on this host a killed owner's leftover
   processes are stopped first (`engines/orphans.py`), from another host the new owner waits out
   the window in which the old one could still write. It then reads the commit log: the ids
   already done are skipped.
3. **Writing** (`writer.py`): the last stage writes each batch's pairs and rejects as shards
   named by the batch's key, after checking the lease; a write that keeps failing becomes
   `write_failed` rows, never a silent loss. Phased mode's intermediate stages write under
   `_phases/` (`phases.py`), reused by a resume while their markers hold.
4. **Committing** (`commits.py`): the driver commits a batch once its shards exist (one
   put-if-absent per batch, rolled into segments as it goes). Only committed shards count; a
   batch redone under the same key overwrites its uncommitted shards. Rows rejected for a fault
   are committed apart, marked `fault`, so that the next run of the same command redoes them.
5. **Finishing** (`runstate.py`, `compaction.py`): uncommitted shards are swept, small shards are
   merged into large files (crash-safe: a merge record, then the deletes), `_phases/` goes, and
   the manifest says `complete` (or `stopped`, `failed`) with the counts, which add up to the
   input's rows.
A resume is step 2 again: whatever step a crash interrupted, the commit log says what is done.
"""
