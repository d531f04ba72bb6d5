"""Interchangeable parts of the drag loop: trackers, motion supervisions, extra loss terms, schedules,
gradient fusions, the automatic mask and CLoss while sampling.

Each part is a small class with its paper cited, its parameters registered under stable names
(:mod:`dragkit.params`), built from a resolved parameter dict by ``from_params``.
"""

from .clip_guidance import ClipGuidanceTerm, load_clip
from .closs import closs_step, correspondence_loss
from .fusion import FUSIONS, GlobalLocalFusion, build_fusion, glms
from .guidance import PatchDiscriminator, editing_energy, fit_patch_discriminator
from .schedules import SCHEDULES, AdaptiveSchedule, FixedSchedule
from .supervision import (
    SUPERVISIONS,
    ConfidenceGatedSupervision,
    InitialTemplateSupervision,
    PatchSupervision,
    SemanticRegionSupervision,
)
from .terms import FeatureMaskTerm, LatentMaskTerm
from .trackers import (
    TRACKERS,
    BacktrackingTracker,
    DiscriminativeTracker,
    FastTracker,
    NearestTracker,
    SemanticRegionTracker,
    build_tracker,
)

__all__ = [
    "FUSIONS",
    "SCHEDULES",
    "SUPERVISIONS",
    "TRACKERS",
    "AdaptiveSchedule",
    "BacktrackingTracker",
    "ClipGuidanceTerm",
    "ConfidenceGatedSupervision",
    "DiscriminativeTracker",
    "FastTracker",
    "FeatureMaskTerm",
    "FixedSchedule",
    "GlobalLocalFusion",
    "InitialTemplateSupervision",
    "LatentMaskTerm",
    "NearestTracker",
    "PatchDiscriminator",
    "PatchSupervision",
    "SemanticRegionSupervision",
    "SemanticRegionTracker",
    "build_fusion",
    "build_tracker",
    "closs_step",
    "correspondence_loss",
    "editing_energy",
    "fit_patch_discriminator",
    "glms",
    "load_clip",
]
