"""Filling prompt templates, and finding the template text a config value stands for.

A template is plain text with `{field}` placeholders. Only the fields a caller passes are
filled, in one pass: other braces in a template (a JSON example) stay as they are, and a value
that itself contains `{response}` is never filled a second time. A config value naming a
template is a built-in name, inline text holding the template's fields, or a file path.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

Message = dict[str, str]
BUILTIN_DIR = Path(__file__).parent / "builtin"


def fill(template: str, **fields: str) -> str:
    """`template` with each `{name}` of the given fields replaced by its value, in one pass."""
    if not fields:
        return template
    pattern = re.compile(r"\{(" + "|".join(re.escape(name) for name in fields) + r")\}")
    return pattern.sub(lambda m: fields[m.group(1)], template)


def read_text(path: str | Path, what: str) -> str:
    """The text of a file a config names, or a ValueError saying which file and why."""
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {what} file {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"cannot read {what} file {str(path)!r}: not UTF-8 text") from None


def read_yaml(path: str | Path, what: str):
    try:
        return yaml.safe_load(read_text(path, what))
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} file {str(path)!r} is not valid YAML: {exc}") from None


def placeholders(fields: tuple[str, ...]) -> str:
    return " and ".join("{" + name + "}" for name in fields)


def resolve_template(value: str, required: tuple[str, ...], builtins: dict[str, str] | None = None) -> str:
    """The template text for a config value: a built-in name, inline text, or a file path.

    Inline text is recognised by holding one of the required fields (or a line break); anything
    else must be a readable file. The text found must hold every required field."""
    builtins = builtins or {}
    if value in builtins:
        return builtins[value]
    inline = "\n" in value or any("{" + name + "}" in value for name in required)
    if inline:
        text = value
    else:
        try:
            text = read_text(value, "template")
        except ValueError as exc:
            known = f"not a built-in template ({', '.join(builtins)}), " if builtins else ""
            raise ValueError(f"{value!r} is {known}holds no {placeholders(required)}, and {exc}") from None
    missing = tuple(name for name in required if "{" + name + "}" not in text)
    if missing:
        where = "the template" if inline else f"template file {value!r}"
        raise ValueError(f"{where} lacks {placeholders(missing)}; it must contain {placeholders(required)}")
    return text


# --- Generation ------------------------------------------------------------------------------

GENERATION_FIELDS = ("instruction",)


def generation_prompt(instruction: str, system_prompt: str | None, template: str | None = None) -> list[Message]:
    """The generator's chat: its system prompt if any, then the instruction (in `template` if given)."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    content = fill(template, instruction=instruction) if template else instruction
    return messages + [{"role": "user", "content": content}]


def continue_prompt(messages: list[Message], system_prompt: str | None, template: str | None = None) -> list[Message]:
    """The generator's chat for a conversation (a lone user turn is a plain instruction): its turns as
    they are, the last user turn in `template` if given; a generator's system prompt goes first, joined
    with the conversation's own system turn if it has one."""
    *earlier, last = messages
    if len(messages) == 1:
        return generation_prompt(last["content"], system_prompt, template)
    chat = [dict(m) for m in earlier]
    if system_prompt:
        if chat and chat[0]["role"] == "system":
            chat[0]["content"] = f"{system_prompt}\n\n{chat[0]['content']}"
        else:
            chat.insert(0, {"role": "system", "content": system_prompt})
    content = fill(template, instruction=last["content"]) if template else last["content"]
    return chat + [{"role": "user", "content": content}]
