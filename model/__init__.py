"""jndlab: model."""
