"""jndlab: se."""
