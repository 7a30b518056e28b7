"""Retrieval metrics and embedding geometry."""

from .accuracy_calculator import AccuracyCalculator
from .geometry import alignment, class_alignment, effective_rank, embedding_geometry, uniformity
from .retrieval import METRICS, STANDARD_KS, TorchKNN, retrieval_metrics

__all__ = [
    "AccuracyCalculator",
    "METRICS",
    "STANDARD_KS",
    "TorchKNN",
    "alignment",
    "class_alignment",
    "effective_rank",
    "embedding_geometry",
    "retrieval_metrics",
    "uniformity",
]
