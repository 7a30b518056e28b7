"""Batch samplers that choose which examples share a batch (docs/method.md, 'High-loss mini-batches'), and the training
batch sources built on them (`pmlbal train --sampler`)."""

from .batches import MPerClassBatches, OSGDBatches, SpectralBatches
from .osgd import OSGDBatchSampler
from .spectral import SpectralBatchSampler

__all__ = ["MPerClassBatches", "OSGDBatchSampler", "OSGDBatches", "SpectralBatchSampler", "SpectralBatches"]
