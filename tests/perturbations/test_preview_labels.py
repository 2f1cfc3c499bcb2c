"""Spectrogram preview: each rung is named by its family's main parameter."""

from perturbations.preview import _describe
from perturbations.registry import get_family


def test_rung_label_is_the_main_parameter():
    assert (
        _describe({"drr_db": 3.2, "ir": "room7", "rt60_target_s": 0.5, "rt60_s": 0.4213}, get_family("reverb"))
        == "rt60_s = 0.421"
    )
    assert _describe({"noise_type": "pink", "snr_db": 12.0}, get_family("noise")) == "snr_db = 12"
    assert _describe({"bitrate_kbps": 64, "bitrate_target_kbps": 61.2}, get_family("mp3")) == "bitrate_kbps = 64"
    # unknown keys fall back to the first short parameters
    assert _describe({"b": "x", "a": 1.5}) == "a=1.5, b=x"
