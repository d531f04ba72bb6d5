"""Interchangeable parts: of the drag loop (trackers, motion supervisions, extra loss terms, schedules, gradient
fusions, the automatic mask), of sampling (CLoss, LucidDrag's editing, quality and semantic guidance), LucidDrag's
intention reasoner, and of the result (the composite over the editable mask).

Each part is a small class with its paper cited, its parameters registered under stable names
(:mod:`dragkit.core.params`), built from a resolved parameter dict by ``from_params``.
"""

from .clip_guidance import ClipGuidanceTerm, load_clip
from .closs import CorrespondenceGuide, correspondence_loss
from .composite import composite, edit_weight
from .freedrag import (
    AdaptiveTemplates,
    LineSearchTracker,
    MeanLatentMaskTerm,
    RoundSchedule,
    TemplateSupervision,
    freedrag_parts,
)
from .fusion import FUSIONS, GlobalLocalFusion, build_fusion, glms
from .guidance import (
    EditingEnergyGuide,
    PatchDiscriminator,
    QualityGuide,
    SemanticGuide,
    editing_energy,
    fit_patch_discriminator,
)
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
    PeriodicTracker,
    SemanticRegionTracker,
    build_tracker,
)

__all__ = [
    "FUSIONS",
    "SCHEDULES",
    "SUPERVISIONS",
    "TRACKERS",
    "AdaptiveSchedule",
    "AdaptiveTemplates",
    "BacktrackingTracker",
    "ClipGuidanceTerm",
    "ConfidenceGatedSupervision",
    "CorrespondenceGuide",
    "DiscriminativeTracker",
    "EditingEnergyGuide",
    "FastTracker",
    "FeatureMaskTerm",
    "FixedSchedule",
    "GlobalLocalFusion",
    "InitialTemplateSupervision",
    "LatentMaskTerm",
    "LineSearchTracker",
    "MeanLatentMaskTerm",
    "NearestTracker",
    "PatchDiscriminator",
    "PatchSupervision",
    "PeriodicTracker",
    "QualityGuide",
    "RoundSchedule",
    "SemanticGuide",
    "SemanticRegionSupervision",
    "SemanticRegionTracker",
    "TemplateSupervision",
    "build_fusion",
    "build_tracker",
    "composite",
    "correspondence_loss",
    "edit_weight",
    "editing_energy",
    "fit_patch_discriminator",
    "freedrag_parts",
    "glms",
    "load_clip",
]
