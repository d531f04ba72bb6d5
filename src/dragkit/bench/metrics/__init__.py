"""Independent measures of an edit: mean distance (DragBench MD) with a pluggable feature extractor, LPIPS, and
realism inside the edited region (:class:`PatchRealism`).

Never judge an edit with the method's own tracker: these matchers see only the two images.
"""

from .lpips import LPIPS, AlexFeatures, lpips_distance
from .md import FeatureExtractor, MDResult, mean_distance
from .realism import TORN_THRESHOLD, PatchFeatures, PatchRealism, RealismScore, if_s2t, reference_faces

__all__ = [
    "LPIPS",
    "TORN_THRESHOLD",
    "AlexFeatures",
    "FeatureExtractor",
    "MDResult",
    "PatchFeatures",
    "PatchRealism",
    "RealismScore",
    "if_s2t",
    "lpips_distance",
    "mean_distance",
    "reference_faces",
]
