"""What one input row holds: its prompt (an instruction or a conversation) and the responses it provides.

A prompt is a string (one user turn) or a conversation in the OpenAI/TRL message shape: a list of
`{"role", "content"}` turns, an optional system turn first, then user and assistant turns taking
turns, the last one the user's. Generators continue the conversation; the evolver and the judge
see it whole, written out as a transcript (`conversation_text`).

Provided responses come from the columns `input.responses` names. A column's value is one
response (a string, a `{"text", "model"}` object, or a TRL message list whose last turn is the
assistant's, as in a preference dataset's `chosen`/`rejected`) or a list of responses (strings or
`{"text", "model"}` objects). Each becomes a candidate with `origin: provided`, its column as
`generator` and the model as given (else none).

Everything here is pure: a bad value gives a (reason, detail) naming the key or turn, e.g.
`messages[2].role`; `read.py` turns that into a reject.
"""

from __future__ import annotations

import json

from prefgen.schema import (
    REJECT_BAD_CONVERSATION,
    REJECT_EMPTY,
    REJECT_EMPTY_RESPONSE,
    REJECT_EMPTY_TURN,
    REJECT_LAST_TURN_NOT_USER,
    REJECT_MISSING_FIELD,
    REJECT_MISSING_RESPONSE,
    REJECT_NOT_STRING,
    REJECT_RESPONSE_NOT_TEXT,
)

ROLES = ("system", "user", "assistant")
SPEAKERS = {"system": "System", "user": "User", "assistant": "Assistant"}


class Rejected(ValueError):
    """A row that cannot be used: `reason` is a schema reject reason, `detail` names what is wrong."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


def check_conversation(value, key: str) -> list[dict]:
    """The conversation as a clean message list, or Rejected naming the turn (`messages[2].role`)."""
    if not value:
        raise Rejected(REJECT_BAD_CONVERSATION, f"{key} is an empty list")
    messages = []
    for i, turn in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise Rejected(REJECT_BAD_CONVERSATION, f"{where} is {_kind(turn)}, not a {{role, content}} object")
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES:
            raise Rejected(REJECT_BAD_CONVERSATION, f"{where}.role is {role!r}; expected one of {', '.join(ROLES)}")
        if role == "system" and i > 0:
            raise Rejected(REJECT_BAD_CONVERSATION, f"{where}.role: a system turn may only come first")
        previous = messages[-1]["role"] if messages else "system"
        expected = "assistant" if previous == "user" else "user"
        if role != "system" and role != expected:
            after = "at the start" if previous == "system" else f"after a {previous!r} turn"
            raise Rejected(REJECT_BAD_CONVERSATION, f"{where}.role is {role!r} {after}; user and assistant turns "
                                                    "must alternate, starting with the user")
        if not isinstance(content, str):
            raise Rejected(REJECT_BAD_CONVERSATION, f"{where}.content is {_kind(content)}, not text")
        if not content.strip():
            raise Rejected(REJECT_EMPTY_TURN, f"{where}.content is empty or whitespace")
        messages.append({"role": role, "content": content})
    if messages[-1]["role"] != "user":
        raise Rejected(REJECT_LAST_TURN_NOT_USER,
                       f"{key}[{len(messages) - 1}].role is {messages[-1]['role']!r}; the last turn must be the user's")
    return messages


def read_prompt(record: dict, field: str) -> list[dict]:
    """The prompt of a record as a message list: a string becomes one user turn."""
    if field not in record:
        raise Rejected(REJECT_MISSING_FIELD, f"the {field} field is missing")
    value = record[field]
    if isinstance(value, list):
        return check_conversation(value, field)
    if not isinstance(value, str):
        raise Rejected(REJECT_NOT_STRING, f"{field} is {_kind(value)}, not text")
    if not value.strip():
        raise Rejected(REJECT_EMPTY, f"{field} is empty or whitespace")
    return [{"role": "user", "content": value}]


def conversation_text(messages: list[dict]) -> str:
    """What the evolver and the judge see as the instruction: a lone user turn as it is, a longer
    conversation as a transcript whose last turn is the one to answer."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{SPEAKERS[m['role']]}: {m['content']}" for m in messages)


def prompt_text(row: dict) -> str:
    """A row's prompt as one text, for comparing prompts (near-duplicates, decontamination): the
    user turns joined by blank lines; a plain instruction as it is."""
    messages = row.get("messages")
    if not messages:
        return row["instruction"] or ""
    return "\n\n".join(m["content"] for m in messages if m["role"] == "user")


def _response(value, where: str) -> tuple[str, str | None]:
    """(text, model) of one response value."""
    model = None
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        last = value[-1]  # a TRL message list: the answer is the last turn, the assistant's
        if last.get("role") != "assistant":
            raise Rejected(REJECT_RESPONSE_NOT_TEXT,
                           f"{where}[{len(value) - 1}].role is {last.get('role')!r}; a response's last turn is "
                           "the assistant's")
        value, where = last.get("content"), f"{where}[{len(value) - 1}].content"
    elif isinstance(value, dict):
        model = value.get("model")
        if model is not None and not isinstance(model, str):
            raise Rejected(REJECT_RESPONSE_NOT_TEXT, f"{where}.model is {_kind(model)}, not text")
        key = "text" if "text" in value else "content"
        value, where = value.get(key), f"{where}.{key}"
    if value is None:
        raise Rejected(REJECT_MISSING_RESPONSE, f"{where} is null")
    if not isinstance(value, str):
        raise Rejected(REJECT_RESPONSE_NOT_TEXT, f"{where} is {_kind(value)}, not text")
    if not value.strip():
        raise Rejected(REJECT_EMPTY_RESPONSE, f"{where} is empty or whitespace")
    return value.strip(), model


def response_text(value, where: str) -> str:
    """The text of one response: a string, a {text, model} object, or a TRL message list."""
    return _response(value, where)[0]


def read_responses(record: dict, columns: list[str]) -> list[tuple[str, str | None, str]]:
    """(column, model, text) of every response the record provides, in column order."""
    found = []
    for column in columns:
        if column not in record or record[column] is None:
            raise Rejected(REJECT_MISSING_RESPONSE, f"the response column {column!r} is "
                                                    f"{'missing' if column not in record else 'null'}")
        value = record[column]
        is_messages = isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value)
        if isinstance(value, list) and not is_messages:
            if not value:
                raise Rejected(REJECT_EMPTY_RESPONSE, f"{column} is an empty list")
            found += [(column, *reversed(_response(v, f"{column}[{k}]"))) for k, v in enumerate(value)]
        else:
            found.append((column, *reversed(_response(value, column))))
    return found


def content_key(messages: list[dict], responses: list[tuple[str, str | None, str]]) -> str:
    """The text a row's id is made from when it is more than a plain instruction."""
    return json.dumps({"prompt": messages, "responses": [list(r) for r in responses]}, sort_keys=True)


def duplicate_key(messages: list[dict], responses: list[tuple[str, str | None, str]]) -> str:
    """Rows with equal keys are duplicates: the same prompt (whitespace aside) and the same responses."""
    prompt = " ".join(conversation_text(messages).split())
    if len(messages) > 1:
        prompt = json.dumps([[m["role"], " ".join(m["content"].split())] for m in messages])
    return prompt + ("\x00" + json.dumps([r[2] for r in responses]) if responses else "")
