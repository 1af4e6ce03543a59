"""What every role's config has (`RoleConfig`): a model, its own sampling, and its part of the digest.

Each role kind keeps its config beside its task, in `roles/<kind>/config.py`; these modules sit
below the whole config (`prefgen/config/`), which gathers them, and import only the model
declarations (`prefgen/models/`) and the prompts. The whole config resolves each role's `model`
to a declared model; the digest (`config/digest.py`) asks each role what of it shapes the output.
"""

from __future__ import annotations

from pydantic import Field

from prefgen.models.settings import EngineConfig, SamplingConfig, Strict


class RoleConfig(Strict):
    """What every role (generator, evolver, judge, juror) has: a model and its own sampling."""

    model: str | None = Field(
        None,
        description="Name of a model under `models:`; or, as shorthand, a source (local folder, hub id, "
        "embedded://NAME) with this role's `engine:`. None: the only declared model, else the embedded default.",
    )
    engine: EngineConfig | None = Field(
        None, description="Shorthand only (model given as a source): the engine settings of that model."
    )
    adapter: str | None = Field(
        None, description="A LoRA adapter listed under the model's `adapters:`; this role's requests run on it "
        "(on the model's one engine). None: the base model.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)

    def shaping(self, model) -> dict:
        """What of this role shapes its outputs, as plain data (its part of the digest), its model
        left out: the digest adds the model by what it is, not by the name it is declared under."""
        return self.model_dump(mode="json", exclude={"model", "engine"})

    def prompts_sent(self, model) -> dict[str, str] | None:
        """The prompts this role sends that its keys do not show whole (rendered ones), for the digest; none here."""
        return None
