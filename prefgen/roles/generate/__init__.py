"""Generation: the generators' config (`config.py`) and their task (`task.py`)."""
