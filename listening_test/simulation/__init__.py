"""Virtual listeners for jndlab: an auditory model, a psychometric listener per family,
a population with bad workers, and an HTTP simulator that drives the real server
exactly as the browser front end does (``python -m listening_test simulate``).

Modules: ``auditory`` (the internal perceptual distance), ``ear`` (headphone-screen
decisions), ``listener`` (one listener's parameters and answers), ``population``
(a crowd with known parameters), ``truth`` (stimulus recognition and level-scale
ground truth), ``client`` (the HTTP participant and the crowd runner), ``runner``
(one simulated study with its output files), ``cli`` (the click command).

Imports are lazy so that the web server, which registers the command, does not load
scipy or requests.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AuditoryModel": "auditory",
    "DistanceCache": "auditory",
    "ListenerParams": "listener",
    "KINDS": "listener",
    "make_population": "population",
    "PopulationConfig": "population",
    "StimulusIndex": "truth",
    "population_truth": "truth",
    "run_crowd": "client",
    "summarize": "client",
    "simulate": "runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
