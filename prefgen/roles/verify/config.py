"""The pair check's config (`pairing.verification`): whether pairs are checked, and what a failed check does."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from prefgen.models.settings import Strict
from prefgen.prompts import verify_prompt


class VerificationConfig(Strict):
    """The pair check (`pairing.verification`, see `roles/verify/task.py`): the judge under `judge:` sees each pair's
    chosen and rejected side by side, in both orders, and names the better one."""

    enabled: bool | Literal["auto"] = Field(
        "auto",
        description="auto: on when the judge under `judge:` is a generative model (vllm or endpoint), off for a "
        "reward-model judge, which has no verdict to give; true: on (refused for a reward-model judge); false: off.",
    )
    on_fail: Literal["reject", "flag"] = Field(
        "reject",
        description="A pair whose verdict flips with the order, names the rejected answer in both orders, or could "
        "not be had: reject (its row goes to rejects as `unverified` when no pair of it holds) or flag (kept, "
        "`verified: false`).",
    )

    @staticmethod
    def prompt_sent() -> list:
        """The check's prompt as sent, around placeholder texts (for the digest)."""
        return verify_prompt("{instruction}", "{first}", "{second}", "{nonce}")

    @staticmethod
    def calls_per_row(candidates: int, strategy: str) -> dict[str, float]:
        """Requests per input row: both orders of each pair; one pair per row, or up to every two
        candidates with all_pairs (then an upper bound)."""
        pairs = candidates * (candidates - 1) // 2 if strategy == "all_pairs" else 1
        return {"requests": 2 * pairs, "outputs": 2 * pairs, "at_most": strategy == "all_pairs"}
