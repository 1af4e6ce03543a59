"""The input: reading and validating rows, screening (decontamination, near-duplicates)."""
