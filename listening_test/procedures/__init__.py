"""Adaptive procedures (pure Python)."""
