"""EvolQuality's rewrite prompt: its templates, its criteria, and cleaning what comes back.

The built-in `evol-quality` template keeps what makes EvolQuality's rewrites usable: a length
budget (roughly 10 to 20 words added), non-text parts (code, tables) kept intact, and a
rewrite that never mentions being one. `evol-quality-short` is the same closed by a request for
two or three sentences, last in the user's turn where a small model heeds it (the embedded
default's). `mission` is the course's simplified rewriter prompt.
Templates hold `{instruction}`, `{response}` and (usually) `{criterion}`, the criterion's text.
"""

from __future__ import annotations

import re

from prefgen.prompts.templates import BUILTIN_DIR, Message, fill, read_yaml

REWRITE_FIELDS = ("instruction", "response")  # {criterion} is optional
DEFAULT_REWRITE = "evol-quality"
REWRITE_TEMPLATES = {
    path.stem: path.read_text(encoding="utf-8") for path in sorted((BUILTIN_DIR / "rewrite").glob("*.txt"))
}
EVOL_CRITERIA: dict[str, str] = read_yaml(BUILTIN_DIR / "criteria.yaml", "criteria")


def evolve_prompt(instruction: str, response: str, criterion: str, template: str | None = None) -> list[Message]:
    """The rewrite request: `criterion` is the criterion's text, `template` the template's text."""
    text = fill(template or REWRITE_TEMPLATES[DEFAULT_REWRITE], instruction=instruction, response=response,
                criterion=criterion)
    return [{"role": "user", "content": text}]


def load_criteria(value) -> dict[str, str]:
    """Criterion name -> text from a config value: a list of built-in names and `{name: text}`
    entries, a mapping of name -> text, or the path of a YAML file holding either."""
    if isinstance(value, str):
        value = read_yaml(value, "criteria")
        if isinstance(value, str) or value is None:
            raise ValueError("a criteria file must hold a mapping of name: text or a list")
    items: list = [value] if isinstance(value, dict) else list(value) if isinstance(value, list) else [None]
    criteria: dict[str, str] = {}
    for item in items:
        if isinstance(item, str):
            if item not in EVOL_CRITERIA:
                raise ValueError(f"unknown criterion {item!r}; built-in: {', '.join(EVOL_CRITERIA)} "
                                 f"(or define it as {{{item}: <text>}})")
            pairs = [(item, EVOL_CRITERIA[item])]
        elif isinstance(item, dict):
            pairs = list(item.items())
        else:
            raise ValueError(f"a criterion is a built-in name or a {{name: text}} entry, not {item!r}")
        for name, text in pairs:
            if not (isinstance(text, str) and text.strip()):
                raise ValueError(f"criterion {name!r} needs a non-empty text")
            if name in criteria:
                raise ValueError(f"criterion {name!r} is given twice")
            criteria[str(name)] = text.strip()
    if not criteria:
        raise ValueError("at least one criterion is needed")
    return criteria


# Openers small rewriters put before the answer: "# Improved Response", "Improved response:",
# "Here is an improved version:", "Sure! Here's a better version:". An opener counts only when
# it ends with a colon or its line, so "Better version control helps..." is left alone.
_ASSENT = r"^(?:(?:sure|certainly|of course|okay|ok|absolutely)\b[!.,]?\s*)?(?:#+\s*|\*\*)?"
_END = r"\s*(?:\*\*)?(?::|[ \t]*\n|[ \t]*$)(?:\*\*)?"
_OPENERS = [
    re.compile(_ASSENT + r"here(?:'s| is)\b[^\n:]{0,60}?\b(?:version|response|answer|rewrite)\b" + _END, re.I),
    re.compile(_ASSENT + r"(?:improved|better|rewritten|revised|enhanced|new)\s+(?:version|response|answer)\b" + _END, re.I),
]


def clean_evolved(text: str) -> str:
    """The rewrite without the openers or echoed headers small models put before it."""
    text = text.strip()
    changed = True
    while changed:
        changed = False
        for opener in _OPENERS:
            stripped = opener.sub("", text, count=1).strip()
            changed, text = changed or stripped != text, stripped
    return text
