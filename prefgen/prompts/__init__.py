"""Every prompt prefgen sends, and the pure functions that build them.

A prompt is a chat conversation (a list of `{"role", "content"}` messages); the engine's chat
template turns it into tokens. `templates` fills templates and resolves the ones a config
names; `rewrite` is EvolQuality's rewrite prompt; `rubrics` the judge's anchored rubrics;
`judging` the judge's prompts, tamper-proof blocks and answer schemas; `verifying` the pair
check's prompt and verdict schema. Built-in templates and
rubrics are files under `builtin/`, in the shape a config's own would take.
"""

from prefgen.prompts.judging import (
    NOT_APPLICABLE,
    SYSTEM_PROMPT,
    block,
    block_nonce,
    joint_judge_prompt,
    joint_schema,
    judge_prompt,
    judgment_schema,
)
from prefgen.prompts.rewrite import (
    DEFAULT_REWRITE,
    EVOL_CRITERIA,
    REWRITE_FIELDS,
    REWRITE_TEMPLATES,
    clean_evolved,
    evolve_prompt,
    load_criteria,
)
from prefgen.prompts.rubrics import ASPECT_ALIASES, BUILTIN_ASPECTS, BUILTIN_RUBRICS, Rubric, aspect_name, rubric_for
from prefgen.prompts.verifying import VERDICT_LABELS, verdict_schema, verify_prompt
from prefgen.prompts.templates import (
    GENERATION_FIELDS,
    Message,
    continue_prompt,
    fill,
    generation_prompt,
    resolve_template,
)

NA_ASPECTS = tuple(name for name, rubric in BUILTIN_RUBRICS.items() if rubric.allows_na)

__all__ = [
    "ASPECT_ALIASES", "BUILTIN_ASPECTS", "BUILTIN_RUBRICS", "DEFAULT_REWRITE", "EVOL_CRITERIA", "GENERATION_FIELDS",
    "Message", "NA_ASPECTS", "NOT_APPLICABLE", "REWRITE_FIELDS", "REWRITE_TEMPLATES", "Rubric", "SYSTEM_PROMPT",
    "aspect_name", "block", "block_nonce", "clean_evolved", "continue_prompt", "evolve_prompt", "fill", "generation_prompt",
    "joint_judge_prompt", "joint_schema", "judge_prompt", "judgment_schema", "load_criteria", "resolve_template",
    "rubric_for", "VERDICT_LABELS", "verdict_schema", "verify_prompt",
]
