"""The run on top: the Ray Data pipeline and what `prefgen run` prints."""
