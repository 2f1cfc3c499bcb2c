"""jndlab: analysis."""
