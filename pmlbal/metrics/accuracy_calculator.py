"""PML's AccuracyCalculator with Recall@K and pmlbal's exact search backends."""

from __future__ import annotations

from typing import Sequence

import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator as PMLAccuracyCalculator

from .retrieval import TorchKNN


class AccuracyCalculator(PMLAccuracyCalculator):
    """PML's calculator plus ``recall_at_<K>`` for each K in `recall_ks`.

    The k-NN search defaults to pmlbal's backends (faiss on CPU, blocked torch top-k on
    CUDA; `backend` chooses), so it works without faiss and is fast on the GPU. Every
    PML metric keeps PML's definition and value.

    Examples:
        >>> import torch
        >>> calc = AccuracyCalculator(include=("precision_at_1", "recall_at_k"), recall_ks=(1, 2),
        ...                           k="max_bin_count", device="cpu")
        >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> labels = torch.tensor([0, 0, 1, 1])
        >>> calc.get_accuracy(emb, labels)
        {'precision_at_1': 1.0, 'recall_at_1': 1.0, 'recall_at_2': 1.0}
    """

    def __init__(self, *args, recall_ks: Sequence[int] = (1, 2, 4, 8), backend: str = "auto", **kwargs) -> None:
        if any(int(k) < 1 for k in recall_ks) or len(recall_ks) == 0:
            raise ValueError(f"recall_ks must be positive integers, got {tuple(recall_ks)}")
        self.recall_ks = tuple(int(k) for k in recall_ks)
        kwargs.setdefault("knn_func", TorchKNN(backend=backend))
        if isinstance(kwargs.get("device"), str):  # PML needs a torch.device ("cpu" reads naturally)
            kwargs["device"] = torch.device(kwargs["device"])
        super().__init__(*args, **kwargs)

    def requires_knn(self):
        return super().requires_knn() + ["recall_at_k"]

    def calculate_recall_at_k(self, knn_labels, query_labels, not_lone_query_mask, **kwargs):
        from pytorch_metric_learning.utils.accuracy_calculator import try_getting_not_lone_labels

        knn_labels, query_labels = try_getting_not_lone_labels(knn_labels, query_labels, not_lone_query_mask)
        if knn_labels is None:
            return {k: float("nan") for k in self.recall_ks}
        same = knn_labels == query_labels[:, None]
        return {k: float(same[:, :k].any(dim=1).float().mean()) for k in self.recall_ks}

    def _get_accuracy(self, function_dict, **kwargs):
        out = super()._get_accuracy(function_dict, **kwargs)
        recall = out.pop("recall_at_k", None)
        if recall is not None:
            out.update({f"recall_at_{k}": v for k, v in recall.items()})
        return out

    def determine_k(self, bin_counts, num_reference_embeddings, ref_includes_query):
        k = super().determine_k(bin_counts, num_reference_embeddings, ref_includes_query)
        if "recall_at_k" in self.get_curr_metrics():
            k = max(k, max(self.recall_ks))
        return k
