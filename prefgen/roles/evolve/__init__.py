"""EvolQuality rewrites: the evolver's config (`config.py`) and its task (`task.py`)."""
