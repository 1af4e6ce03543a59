"""The pair check: its config (`config.py`), its task (`task.py`) and what its verdicts mean (`verdicts.py`)."""
