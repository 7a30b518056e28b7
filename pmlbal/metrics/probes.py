"""Classification probes of frozen features, the self-supervised literature's evaluation (``--task ssl``).

`knn_top1`: the weighted k-nearest-neighbour classifier of Wu et al. 2018 (InstDisc), as lightly and
solo-learn run it every epoch: cosine similarities s of a query to the bank, its k most similar bank
samples vote for their class with weight exp(s / t); k = 200, t = 0.1. `linear_top1`: a linear
classifier (multinomial logistic regression, scikit-learn's L-BFGS) fitted on the frozen train
features, scored on the test features.
"""

from __future__ import annotations

import numpy as np
import torch

KNN_K = 200
KNN_T = 0.1


@torch.no_grad()
def knn_top1(bank: torch.Tensor, bank_labels, queries: torch.Tensor, query_labels, k: int = KNN_K,
             t: float = KNN_T, chunk: int = 1024) -> float:
    """Top-1 accuracy of the weighted kNN vote: score(c) = sum over the query's k nearest bank samples
    of class c of exp(cos / t). Features are L2-normalised here; k is capped at the bank's size."""
    bank = torch.nn.functional.normalize(bank.float(), dim=1)
    queries = torch.nn.functional.normalize(queries.float().to(bank.device), dim=1)
    bank_y = torch.as_tensor(np.asarray(bank_labels), device=bank.device).long()
    query_y = torch.as_tensor(np.asarray(query_labels), device=bank.device).long()
    if len(bank) == 0 or len(queries) == 0:
        raise ValueError(f"knn_top1 needs a bank and queries, got {len(bank)} and {len(queries)} samples")
    classes = int(max(bank_y.max(), query_y.max())) + 1
    k = min(k, len(bank))
    correct = 0
    for i in range(0, len(queries), chunk):
        sims, idx = (queries[i : i + chunk] @ bank.T).topk(k, dim=1)
        votes = torch.zeros(len(idx), classes, device=bank.device)
        votes.scatter_add_(1, bank_y[idx], (sims / t).exp())
        correct += int((votes.argmax(dim=1) == query_y[i : i + chunk]).sum())
    return correct / len(queries)


def linear_top1(train: torch.Tensor, train_labels, test: torch.Tensor, test_labels, max_iter: int = 1000) -> float:
    """Top-1 accuracy on `test` of a multinomial logistic regression fitted on `train` (features
    standardised with the train statistics; L2 penalty C = 1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x_train = train.float().cpu().numpy()
    x_test = test.float().cpu().numpy()
    scaler = StandardScaler().fit(x_train)
    model = LogisticRegression(max_iter=max_iter)
    model.fit(scaler.transform(x_train), np.asarray(train_labels))
    return float((model.predict(scaler.transform(x_test)) == np.asarray(test_labels)).mean())
