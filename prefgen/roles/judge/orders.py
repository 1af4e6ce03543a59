"""The orders a joint judge is shown a row's candidates in, and their labels.

The candidates are shuffled from a seed derived from the run's seed, the row, the judge, the
aspect and the permutation (`order_seed`), so an order is recorded and reproducible. Orders
come in mirrored pairs, or every rotation ("balanced"), so that a judge's preference for a
position cancels over the orders instead of landing on whichever candidate sat there.
"""

from __future__ import annotations

import hashlib
import random


def labels_for(n: int) -> list[str]:
    """A, B, ..., Z, AA, AB, ...: stable labels for n responses."""
    letters = [chr(ord("A") + i) for i in range(26)]
    return [letters[i] if i < 26 else letters[i // 26 - 1] + letters[i % 26] for i in range(n)]


def order_seed(run_seed: int, row_id: str, judge: str, aspect: str, permutation: int) -> int:
    digest = hashlib.sha256(f"{run_seed}:{row_id}:{judge}:{aspect}:{permutation}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


def shown_orders(cands: list[dict], permutations: int | str, seed_of) -> list[tuple[int, list[dict]]]:
    """The orders a joint judge sees, each with the seed of the shuffle it derives from.

    Orders come in mirrored pairs so that a position effect linear in position cancels: order
    2i is the candidates (sorted by id) shuffled with `seed_of(2i)`, order 2i+1 its reverse, under
    the same seed; an odd k leaves its last shuffle unmirrored. "balanced": the n rotations of
    the base shuffle, so every candidate is shown once in every position and a judge that rates
    by position alone gives every candidate the same mean.
    """
    def shuffled(perm: int) -> tuple[int, list[dict]]:
        seed, shown = seed_of(perm), sorted(cands, key=lambda c: c["candidate_id"])
        random.Random(seed).shuffle(shown)
        return seed, shown

    if permutations == "balanced":
        seed, base = shuffled(0)
        return [(seed, base[r:] + base[:r]) for r in range(max(len(base), 1))]
    orders = []
    for perm in range(permutations):
        seed, base = shuffled(perm) if perm % 2 == 0 else orders[-1]
        orders.append((seed, base if perm % 2 == 0 else base[::-1]))
    return orders
