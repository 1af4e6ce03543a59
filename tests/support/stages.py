"""Batches and a driver for `ModelStage` in the unit tests: the calls Ray Data would make, without Ray."""

import asyncio

from prefgen.schema import WORK_ROW, to_table


def batch(n=3):
    rows = [{"id": f"r{i}", "instruction": "q", "source": "s", "line": i, "candidates": [], "output_tokens": 0,
             "reject_reason": None, "reject_detail": None} for i in range(n)]
    return to_table(rows, WORK_ROW)


def run(st, *batches):
    """Call the stage on the batches at once in one event loop, as Ray Data does on an async actor."""
    async def main():
        return await asyncio.wait_for(asyncio.gather(*(st(b) for b in batches)), timeout=10)

    outs = asyncio.run(main())
    return outs[0].to_pylist() if len(batches) == 1 else [o.to_pylist() for o in outs]
