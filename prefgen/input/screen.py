"""Input screening after reading: benchmark decontamination, then near-duplicate removal.

`screen_input` moves rows out of `InputRows.rows` into its rejects:
- `contaminated`: the row overlaps a benchmark item of `input.decontaminate` (`decontaminate.py`);
- `near_duplicate`: the row nearly repeats an earlier kept row (`near_duplicates.py`): its prompt,
  and, for rows that provide responses (`input.responses`), its responses too; the detail names
  that row's file and line.
Contaminated rows are removed first, so a near-duplicate always points at a row that goes on.

Where the work runs: each row's MinHash signature and benchmark match depend on the row alone,
so with more usable rows than `input.near_duplicates.distributed_above` and a Ray session at
hand they are computed by a Ray Data `map_batches` stage (a cluster shares the work); otherwise
in process, by the same functions. The decisions (LSH index, source order) are always taken on
the driver from those per-row results, so both paths decide the same.

The resume guard: which rows screening rejects changes the output, so the input digest covers
it (`digest_ids`): a resume with other screening decisions is refused, one with the same
decisions (e.g. a threshold change that removes nothing else) is accepted.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from prefgen.config import InputConfig
from prefgen.input.decontaminate import BenchmarkIndex, load_benchmarks
from prefgen.input.read import InputRows, prompt_text
from prefgen.input.near_duplicates import find_near_duplicates, signatures
from prefgen.schema import REJECT_CONTAMINATED, REJECT_NEAR_DUPLICATE, reject_row

SCREEN_REASONS = (REJECT_CONTAMINATED, REJECT_NEAR_DUPLICATE)
RAY_BLOCK_ROWS = 10_000


def prepare(cfg: InputConfig) -> BenchmarkIndex | None:
    """Load the benchmark files (InputError names an unusable one): call before any engine starts."""
    return load_benchmarks(cfg.decontaminate, cfg.contamination)


def wants_ray(cfg: InputConfig, usable_rows: int) -> bool:
    """Whether this input is large enough for the per-row work to run as a Ray Data stage."""
    active = cfg.near_duplicates.enabled or bool(cfg.decontaminate)
    return active and usable_rows > cfg.near_duplicates.distributed_above


def responses_text(row: dict) -> str:
    """A row's provided responses as one text, for the near-duplicate check ("" when it has none)."""
    return "\n\n".join(c["text"] for c in row.get("candidates") or [] if c["origin"] == "provided")


def per_row(texts: list[str], cfg: InputConfig, index: BenchmarkIndex | None,
            responses: list[str] | None = None) -> dict[str, np.ndarray]:
    """Each row's signature, whether it has shingles, its benchmark match (item, share; -1 none),
    and with `responses` (the rows' provided responses) their signature (`rsig`)."""
    nd = cfg.near_duplicates
    if nd.enabled:
        sigs, valid = signatures(texts, nd.num_perm, nd.ngram)
    else:
        sigs, valid = np.zeros((len(texts), 0), np.uint32), np.zeros(len(texts), bool)
    extra = {}
    if responses is not None:
        extra["rsig"] = signatures(responses, nd.num_perm, nd.ngram)[0] if nd.enabled else sigs
    item, share = np.full(len(texts), -1, np.int64), np.zeros(len(texts), np.float64)
    if index is not None:
        for i, text in enumerate(texts):
            found = index.match(text)
            if found:
                item[i], share[i] = found
    return {"sig": sigs, "valid": valid, "item": item, "share": share, **extra}


def _ray_batch(batch: dict[str, np.ndarray], cfg: dict, index) -> dict[str, np.ndarray]:
    """map_batches body: a block of (position, text) rows -> their per-row results."""
    import ray

    if isinstance(index, ray.ObjectRef):
        index = ray.get(index)
    responses = [str(t) for t in batch["responses"]] if "responses" in batch else None
    results = per_row([str(t) for t in batch["text"]], InputConfig.model_validate(cfg), index, responses)
    return {"position": batch["position"], **results}


def per_row_on_ray(ray, texts: list[str], cfg: InputConfig, index: BenchmarkIndex | None,
                   responses: list[str] | None = None) -> dict[str, np.ndarray]:
    """`per_row` as a Ray Data stage over blocks of rows; results put back in source order."""
    columns = {"position": np.arange(len(texts), dtype=np.int64), "text": pa.array(texts, pa.string())}
    if responses is not None:
        columns["responses"] = pa.array(responses, pa.string())
    table = pa.table(columns)
    ds = ray.data.from_arrow([table.slice(i, RAY_BLOCK_ROWS) for i in range(0, len(texts), RAY_BLOCK_ROWS)])
    ds = ds.map_batches(_ray_batch, fn_kwargs={"cfg": cfg.model_dump(mode="json"),
                                               "index": ray.put(index) if index is not None else None},
                        batch_size=RAY_BLOCK_ROWS, batch_format="numpy", num_cpus=1)
    num_perm = cfg.near_duplicates.num_perm if cfg.near_duplicates.enabled else 0
    out = {"sig": np.empty((len(texts), num_perm), np.uint32), "valid": np.empty(len(texts), bool),
           "item": np.empty(len(texts), np.int64), "share": np.empty(len(texts), np.float64)}
    if responses is not None:
        out["rsig"] = np.empty((len(texts), num_perm), np.uint32)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        at = batch["position"]
        for name, column in out.items():
            column[at] = batch[name].reshape((len(at), *column.shape[1:]))
    return out


def screen_input(inputs: InputRows, cfg: InputConfig, index: BenchmarkIndex | None, ray=None) -> dict[str, int]:
    """Reject contaminated and near-duplicate rows (in place); returns the count per reason.

    `ray`: the ray module of a started session, used when the input is large (`wants_ray`)."""
    counts = dict.fromkeys(SCREEN_REASONS, 0)
    if not (cfg.near_duplicates.enabled or index is not None) or not inputs.rows:
        return counts
    texts = [prompt_text(r) for r in inputs.rows]
    # rows that provide responses (re-judging preference data) are compared on them too
    responses = [responses_text(r) for r in inputs.rows] if cfg.responses else None
    on_ray = ray is not None and wants_ray(cfg, len(texts))
    results = (per_row_on_ray(ray, texts, cfg, index, responses) if on_ray
               else per_row(texts, cfg, index, responses))
    del texts, responses
    rejected: dict[int, tuple[str, str]] = {}
    for i in np.flatnonzero(results["item"] >= 0).tolist():
        rejected[i] = (REJECT_CONTAMINATED, index.describe((int(results["item"][i]), float(results["share"][i]))))
    if cfg.near_duplicates.enabled:
        clean = np.ones(len(inputs.rows), bool)
        clean[list(rejected)] = False
        nd = cfg.near_duplicates
        found = find_near_duplicates(results["sig"], results["valid"] & clean, nd.threshold, results.get("rsig"))
        for i, (j, similarity, of_responses) in found.items():
            kept = inputs.rows[j]
            measured = (f"{similarity:.2f}" if of_responses is None
                        else f"{similarity:.2f} of the prompts, {of_responses:.2f} of the responses")
            rejected[i] = (REJECT_NEAR_DUPLICATE, f"near-duplicate of {kept['source']} line {kept['line']} "
                           f"(estimated Jaccard similarity {measured} >= {nd.threshold:g})")
    if rejected:
        for i in sorted(rejected):
            reason, detail = rejected[i]
            inputs.rejects.append(reject_row(inputs.rows[i], reason, detail))
            counts[reason] += 1
        inputs.rows = [r for i, r in enumerate(inputs.rows) if i not in rejected]
    return counts


def digest_ids(inputs: InputRows) -> list[str]:
    """What the input digest covers: every row's id, and which rows screening rejected and why.

    Without screening rejects this is the plain list of ids, so runs written before screening
    existed still resume."""
    ids = sorted(r["id"] for r in inputs.rows + inputs.rejects)
    screened = sorted(f"{r['reason']}:{r['id']}" for r in inputs.rejects if r["reason"] in SCREEN_REASONS)
    return ids + screened
