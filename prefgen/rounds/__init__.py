"""On-policy rounds: a LoRA adapter trained with DPO on a run's pairs (`train.py`), and the loop that
samples the policy, judges, pairs and trains round after round (`plan.py`: pure, `loop.py`: the glue)."""
