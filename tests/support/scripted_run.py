"""`prefgen run` with a scripted engine in place of vLLM, as a driver process of its own.

    python scripted_run.py SECONDS_PER_CALL prefgen-run-arguments...

Tests start it against a Ray cluster (RAY_ADDRESS in its environment) to exercise the run's
machinery (placement, retries, commits, resume) in seconds rather than minutes. The engine is
defined here, in `__main__`, so Ray pickles it by value: the workers need no test module on
their path. It answers a generator with a text naming the row, the call and the completion
(`answer 3.0 to: ...`), a judge with a rating per label falling with the completion's number (5,
3, 1), and the pair check with the label of the response so rated higher, in either order: every
row with two candidates pairs, and every pair passes the check at its first call (an answer
the check could not read would be asked again, costing the run calls). It never stands for a
model: the vLLM integration tests do that.
"""

import json
import re
import sys
import time

import prefgen.run.datasets
from prefgen.cli import main
from prefgen.engines.engine import Result

RESPONSE = re.compile(r"<response ([A-Z]{1,2}) ([0-9a-f]+)>\n(.*?)\n</response \1 \2>", re.S)
COMPLETION = re.compile(r"answer \d+\.(\d+) to:")


def rating(text: str) -> int:
    """5 for a generator's first completion, 3 for its second, then 1."""
    found = COMPLETION.search(text)
    return max(1, 5 - 2 * int(found.group(1))) if found else 1


class ScriptedClusterEngine:
    """A blocking engine: `chat` sleeps `seconds` per call (so that batches stay in flight) and answers."""

    def __init__(self, seconds: float):
        self.seconds, self.calls = seconds, 0
        time.sleep(seconds)  # an engine start takes a while

    def chat(self, requests):
        time.sleep(self.seconds)
        self.calls += 1
        results = []
        for request in requests:
            text = "\n".join(m["content"] for m in request.messages if isinstance(m.get("content"), str))
            shown = {label: rating(response) for label, _, response in RESPONSE.findall(text)}
            if '"better":' in text and shown:  # the pair check: the label of the response rated higher
                best = max(shown, key=shown.get)
                texts = [json.dumps({"reason": "rated higher", "better": best})] * request.n
            elif shown:  # a judge's call: a rating per label
                texts = [json.dumps({label: {"rating": r} for label, r in shown.items()})] * request.n
            else:
                texts = [f"answer {self.calls}.{k} to: {text[-60:]}" for k in range(request.n)]
            results.append(Result(texts=texts, finish_reasons=["stop"] * len(texts), tokens=5 * len(texts)))
        return results


def scripted_factory(seconds: float):
    def factory(model, device, *args, **kwargs):
        return lambda: ScriptedClusterEngine(seconds)

    return factory


if __name__ == "__main__":
    prefgen.run.datasets.engine_factory = scripted_factory(float(sys.argv[1]))
    sys.exit(main(["run", *sys.argv[2:]]))
