"""Interchangeable parts of the drag loop: trackers, motion supervisions, extra loss terms, schedules,
the automatic mask and CLoss while sampling.

Each part is a small class with its paper cited, its parameters registered under stable names
(:mod:`dragkit.params`), built from a resolved parameter dict by ``from_params``.
"""

from .closs import closs_step, correspondence_loss
from .schedules import SCHEDULES, AdaptiveSchedule, FixedSchedule
from .supervision import SUPERVISIONS, ConfidenceGatedSupervision, PatchSupervision, SemanticRegionSupervision
from .terms import FeatureMaskTerm, LatentMaskTerm
from .trackers import (
    TRACKERS,
    BacktrackingTracker,
    DiscriminativeTracker,
    NearestTracker,
    SemanticRegionTracker,
    build_tracker,
)

__all__ = [
    "SCHEDULES",
    "SUPERVISIONS",
    "TRACKERS",
    "AdaptiveSchedule",
    "BacktrackingTracker",
    "ConfidenceGatedSupervision",
    "DiscriminativeTracker",
    "FeatureMaskTerm",
    "FixedSchedule",
    "LatentMaskTerm",
    "NearestTracker",
    "PatchSupervision",
    "SemanticRegionSupervision",
    "SemanticRegionTracker",
    "build_tracker",
    "closs_step",
    "correspondence_loss",
]
