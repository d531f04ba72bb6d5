"""Methods: named presets of parts with their papers' defaults, and the drivers that say how a diffusion method uses
its engine.

A method is data: the engine it runs on and the default of every parameter it reads. Any value can be
overridden by name (``--set r_p=6`` on the CLI, ``r_p=6`` in Python), and so can the parts themselves
(``tracker=...``, ``supervision=...``) and the driver (``sampler=...``): mixing two papers' ideas is one override.
"""

from . import drivers, presets  # noqa: F401 - both register on import: the drivers' `sampler` choices, the presets
from .method import METHODS, LoopParts, Method, adam, add_method, build_parts, get_method

__all__ = ["METHODS", "LoopParts", "Method", "adam", "add_method", "build_parts", "get_method"]
