"""pmlbal: balanced, fast, tuned contrastive losses for pytorch-metric-learning.

Importing pmlbal registers every loss, miner and sampler into PML's own modules,
so `pytorch_metric_learning.losses.BalancedNTXentLoss` works after `import pmlbal`.
"""

from . import losses, metrics, miners, samplers
from .registry import create, get, list_losses, list_miners, list_samplers

__version__ = "0.1.0"

__all__ = ["create", "get", "list_losses", "list_miners", "list_samplers", "losses", "__version__"]
