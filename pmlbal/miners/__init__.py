"""PML miners: BalancedPairMiner."""

from .balanced_pair import BalancedPairMiner

__all__ = ["BalancedPairMiner"]
