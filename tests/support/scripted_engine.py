"""A scripted stand-in for `ChatEngine`, for unit tests of the bookkeeping around the engine.

It is never evidence that a stage works on a model: the integration tests are.
"""

from prefgen.engines.engine import Request, Result


class ScriptedEngine:
    """Answers each request with reply(request) -> list of texts, or a Result (e.g. an error)."""

    def __init__(self, reply):
        self.reply = reply
        self.calls: list[list[Request]] = []

    def chat(self, requests):
        self.calls.append(requests)
        out = []
        for req in requests:
            texts = self.reply(req)
            out.append(texts if isinstance(texts, Result) else Result(texts=texts, tokens=10 * len(texts)))
        return out
