"""Models as the config declares them: kinds, sources, engine and sampling settings, the embedded models."""
