"""prefgen."""
