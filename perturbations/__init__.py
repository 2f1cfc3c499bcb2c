"""Perturbation engine: reference/perturbed stimulus ladders with a manifest."""

from perturbations.audio import AudioError, load_audio, save_audio
from perturbations.base import Family, Parameter

__all__ = ["AudioError", "Family", "Parameter", "load_audio", "save_audio"]
