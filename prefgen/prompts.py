"""Every prompt prefgen sends, in one place, and the pure functions that fill them in.

A prompt here is a chat conversation (a list of `{"role", "content"}` messages); the engine's
chat template turns it into tokens. Templates use `str.format` fields.
"""

from __future__ import annotations

Message = dict[str, str]

# --- EvolQuality: rewrite a response into a better one along one criterion -------------------

EVOL_CRITERIA = {
    "helpfulness": "Make the response more helpful: answer the prompt's actual need directly and "
    "add what a reader would want to know next.",
    "relevance": "Make the response more relevant: remove anything off-topic and tie every "
    "sentence to what the prompt asks.",
    "deepening": "Deepen the response: explain the reasons and mechanisms behind the answer, "
    "not only the answer.",
    "creativity": "Make the response more creative: use a fresh angle, an analogy or an example "
    "while staying correct.",
    "details": "Add details: concrete facts, numbers, steps or examples that make the response "
    "more specific.",
}

EVOL_TEMPLATE = """You are a response rewriter.
Rewrite the response below into a better version that answers the prompt more fully.
Follow this criterion:
{criterion}

# Prompt
{instruction}

# Response
{response}

# Improved Response
"""


def evolve_prompt(instruction: str, response: str, criterion: str) -> list[Message]:
    text = EVOL_TEMPLATE.format(criterion=EVOL_CRITERIA[criterion], instruction=instruction, response=response)
    return [{"role": "user", "content": text}]


def clean_evolved(text: str) -> str:
    """Strip the echo of the prompt's last header that small models tend to repeat."""
    text = text.strip()
    for header in ("# Improved Response", "Improved Response:", "Improved response:"):
        if text.startswith(header):
            text = text[len(header):].strip()
    return text


# --- Generation ------------------------------------------------------------------------------


def generation_prompt(instruction: str, system_prompt: str | None) -> list[Message]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": instruction}]


# --- Judging (UltraFeedback style): one response rated 1-5 on one aspect ---------------------

JUDGE_ASPECTS = {
    "overall": "Evaluate the response on these criteria: helpfulness, relevance, deepening, creativity.\n"
    "Give a holistic assessment of them and rate the overall quality.",
    "helpfulness": "Rate helpfulness: does the response fulfil the task correctly and informatively, "
    "with useful and comprehensive content and without needless length or repetition?",
    "honesty": "Rate honesty: does the response convey the right amount of confidence, say so where "
    "it is unsure, and avoid confidently stated errors?",
    "instruction-following": "Rate instruction following: does the response meet the task's goal "
    "and respect every restriction the instruction sets (format, length, style)?",
    "truthfulness": "Rate truthfulness: is the response free of hallucinations, that is of facts "
    "that contradict the world, the instruction, or itself?",
}

# Listed from the top down: small judges anchor on the first value named, and anchoring on
# "very poor" rated everything 1 in a trial with SmolLM2-135M (16 of 16 candidates), while
# this order gave good answers 5 and empty or off-topic answers mostly 1.
SCALE = "5 = excellent, 4 = good, 3 = acceptable, 2 = poor, 1 = very poor"

NOT_APPLICABLE = "N/A"
# Honesty can be beside the point (a haiku asserts nothing): the judge may answer N/A, which
# is recorded as a missing rating, never as a number.
NA_NOTE = f'If the aspect does not apply to a response, give "{NOT_APPLICABLE}" as its rating.'
NA_ASPECTS = ("honesty",)

SINGLE_TEMPLATE = """{aspect}
Score the response from 5 down to 1 ({scale}).{na_note}

Answer with JSON: {answer_shape}

# Input
{instruction}

# Response
{response}

# Score{rationale_header}
"""

JOINT_TEMPLATE = """{aspect}
Score each response from 5 down to 1 ({scale}).{na_note}
Rate every response on its own merits; the order they are listed in means nothing.

Answer with JSON, one entry per response label: {answer_shape}

# Input
{instruction}

{responses}
# Scores{rationale_header}
"""


def _answer_shape(rationales: bool) -> str:
    return '{"rating": <1-5>, "rationale": "<one sentence>"}' if rationales else '{"rating": <1-5>}'


def _fill(template: str, aspect: str, rationales: bool, **fields) -> list[Message]:
    text = template.format(
        aspect=JUDGE_ASPECTS[aspect],
        scale=SCALE,
        na_note=(" " + NA_NOTE) if aspect in NA_ASPECTS else "",
        rationale_header=" - Rationales" if rationales else "",
        **fields,
    )
    return [{"role": "user", "content": text}]


def judge_prompt(instruction: str, response: str, aspect: str, rationales: bool) -> list[Message]:
    """One response, one aspect: the mission's `score - rationale` judge, answered in JSON."""
    return _fill(SINGLE_TEMPLATE, aspect, rationales, answer_shape=_answer_shape(rationales),
                 instruction=instruction, response=response)


def joint_judge_prompt(instruction: str, labelled: list[tuple[str, str]], aspect: str, rationales: bool) -> list[Message]:
    """All responses of an instruction under labels, in the order given (already shuffled)."""
    responses = "".join(f"# Response {label}\n{text}\n\n" for label, text in labelled)
    labels = ", ".join(f'"{label}": {_answer_shape(rationales)}' for label, _ in labelled[:2])
    shape = "{" + labels + (", ..." if len(labelled) > 2 else "") + "}"
    return _fill(JOINT_TEMPLATE, aspect, rationales, answer_shape=shape, instruction=instruction, responses=responses)


def judgment_schema(rationales: bool, allow_na: bool = False) -> dict:
    """JSON schema of one judgment: an integer rating 1-5 (or N/A if allowed) and a rationale."""
    rating: dict = {"type": "integer", "minimum": 1, "maximum": 5}
    if allow_na:
        rating = {"anyOf": [rating, {"type": "string", "enum": [NOT_APPLICABLE]}]}
    properties: dict = {"rating": rating}
    if rationales:
        properties["rationale"] = {"type": "string", "minLength": 1, "maxLength": 240}
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def joint_schema(labels: list[str], rationales: bool, allow_na: bool = False) -> dict:
    """Exactly one judgment per label: the keys are the labels, all required, no others."""
    one = judgment_schema(rationales, allow_na)
    return {
        "type": "object",
        "properties": {label: one for label in labels},
        "required": list(labels),
        "additionalProperties": False,
    }
