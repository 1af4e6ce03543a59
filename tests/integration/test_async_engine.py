"""`AsyncVllmEngine` on real vLLM (CPU build) with the small embedded model, without Ray.

Two `chat` calls awaited together (as two batches in flight on one actor) share the engine:
n > 1 completions, a JSON schema under guided decoding, a prompt that does not fit (an error
instead of a call) and an answer cut off at `max_tokens` (finish reason "length").
"""

import asyncio
import json

import pytest

from prefgen.config import DEFAULT_MODEL, EngineConfig, SamplingConfig
from prefgen.engine import AsyncVllmEngine, Request

pytestmark = pytest.mark.integration

SCHEMA = {"type": "object", "properties": {"rating": {"type": "integer", "minimum": 1, "maximum": 5}},
          "required": ["rating"], "additionalProperties": False}


def user(text):
    return [{"role": "user", "content": text}]


def test_async_engine_serves_two_calls_at_once():
    engine = AsyncVllmEngine(DEFAULT_MODEL, EngineConfig(max_model_len=512, cpu_kv_cache_gib=1), "cpu")
    try:
        generate = [
            Request(user("Name a colour."), SamplingConfig(temperature=1.0, max_tokens=16), n=2),
            Request(user("Write a long story about a ship."), SamplingConfig(temperature=0.0, max_tokens=4)),
            Request(user("word " * 600), SamplingConfig(max_tokens=16)),
        ]
        judge = [Request(user("Rate this answer from 1 to 5 as JSON: 'Blue.'"),
                         SamplingConfig(temperature=0.0, max_tokens=32), json_schema=SCHEMA)]

        async def both():
            return await asyncio.gather(engine.chat(generate), engine.chat(judge))

        (two, cut, too_long), (rated,) = asyncio.run(both())
    finally:
        engine.shutdown()
    assert len(two.texts) == 2 and len(two.finish_reasons) == 2 and two.tokens > 0
    assert cut.finish_reasons == ["length"] and cut.tokens == 4
    assert too_long.texts == [] and "max_model_len 512" in too_long.error
    assert 1 <= json.loads(rated.texts[0])["rating"] <= 5
