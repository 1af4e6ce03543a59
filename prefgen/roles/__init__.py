"""The roles a row goes through (generate, evolve, judge, reward, verify), pairing, and the plan."""
