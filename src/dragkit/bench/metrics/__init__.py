"""Independent measures of an edit: mean distance (DragBench MD) with a pluggable feature extractor, LPIPS.

Never judge an edit with the method's own tracker: these matchers see only the two images.
"""

from .lpips import LPIPS, AlexFeatures, lpips_distance
from .md import FeatureExtractor, MDResult, mean_distance

__all__ = ["LPIPS", "AlexFeatures", "FeatureExtractor", "MDResult", "lpips_distance", "mean_distance"]
