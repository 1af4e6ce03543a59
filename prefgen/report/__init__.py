"""Figures and words about a run: batch counts, summary, health, progress, plots, the card."""
