"""Engines and where they run: vLLM, an endpoint's API, placement, the stage actor, starts and exits."""
