"""jndlab: listening_test."""
