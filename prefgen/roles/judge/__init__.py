"""The judge role: its task, reading its answers, combining ratings, calibration."""
