"""The finished dataset read back: its card and plots written beside it, export."""
