"""Batch samplers that choose which examples share a batch (SPEC section 4)."""

from .osgd import OSGDBatchSampler
from .spectral import SpectralBatchSampler

__all__ = ["OSGDBatchSampler", "SpectralBatchSampler"]
