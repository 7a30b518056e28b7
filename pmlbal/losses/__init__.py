"""pmlbal's losses: PML loss classes with an explicit balance (docs/method.md, the losses' sections)."""

from . import pml  # noqa: F401  (registers PML's baselines)
from .alpha_cl import AlphaCLLoss
from .base import BalancedLoss, PMLCompatibleLoss
from .contrastive import BalancedContrastiveLoss
from .dhel import DHELLoss
from .kcl import KCLLoss
from .ntxent import BalancedNTXentLoss
from .supcon import BalancedSupConLoss


def effective_balance(loss: BalancedLoss, batch_size: int, samples_per_class: int) -> float:
    """Entropy-to-positive gradient weight ratio that `loss` implies for a batch.

    pmlbal design: the ratio of the total gradient weight the entropy / negative term
    puts on negative similarities to the weight the positive term puts on positive
    similarities, at the uninformed point where all similarities are equal, for a
    batch of `batch_size` samples with `samples_per_class` per class. It lets
    configurations be compared across batch sizes: e.g. the pooled contrastive loss
    gives ``balance * (B - m) / (m - 1)``, the "mean" aggregations give ``balance``.
    DHEL and KCL report their two-view form (a pair of views is a class of 2); their
    supervised form has one uniformity / energy term instead of two, so half the ratio
    (DHEL without ``include_positive_view``: the same).
    """
    if not isinstance(loss, BalancedLoss):
        raise ValueError(f"effective_balance needs a pmlbal loss, got {type(loss).__name__}")
    if samples_per_class < 2:
        raise ValueError(f"samples_per_class must be >= 2 (a positive pair), got {samples_per_class}")
    if batch_size <= samples_per_class:
        raise ValueError(
            f"batch_size ({batch_size}) must exceed samples_per_class ({samples_per_class}) for negatives to exist"
        )
    return float(loss.effective_balance(batch_size, samples_per_class))


__all__ = [
    "AlphaCLLoss",
    "BalancedContrastiveLoss",
    "BalancedLoss",
    "BalancedNTXentLoss",
    "BalancedSupConLoss",
    "DHELLoss",
    "KCLLoss",
    "PMLCompatibleLoss",
    "effective_balance",
]
