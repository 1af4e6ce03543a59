"""`prefgen run` with a scripted engine in place of vLLM, as a driver process of its own.

    python scripted_run.py SECONDS_PER_CALL prefgen-run-arguments...

Tests start it against a Ray cluster (RAY_ADDRESS in its environment) to exercise the run's
machinery (placement, retries, commits, resume) in seconds rather than minutes. The engine is
defined here, in `__main__`, so Ray pickles it by value: the workers need no test module on
their path. It answers a generator with a text naming the row and the call, and a judge with
distinct ratings for the labels it was shown (the first label 5, the next ones lower), so every
row with two candidates pairs. It never stands for a model: the vLLM integration tests do that.
"""

import json
import re
import sys
import time

import prefgen.run.datasets
from prefgen.cli import main
from prefgen.engines.engine import Result

LABEL = re.compile(r"<response ([A-Z]{1,2}) [0-9a-f]+>")


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
            labels = list(dict.fromkeys(LABEL.findall(text)))
            if labels:  # a judge's call: distinct ratings, the first shown rated highest
                answer = json.dumps({label: {"rating": max(1, 5 - 2 * i)} for i, label in enumerate(labels)})
                texts = [answer] * request.n
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
