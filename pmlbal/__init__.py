"""pmlbal: balanced, fast, tuned contrastive losses for pytorch-metric-learning.

Importing pmlbal registers every loss, miner, sampler and data set (`pmlbal.registry`), then one
explicit call (`pmlbal.pml_compat.install`) puts the losses, miners and samplers into PML's own
modules, so `pytorch_metric_learning.losses.BalancedNTXentLoss` works after `import pmlbal`.
"""

from . import data, losses, metrics, miners, samplers
from .pml_compat import install as _install_into_pml
from .registry import create, get, list_batch_sources, list_datasets, list_losses, list_miners, list_samplers

_install_into_pml()

__version__ = "0.1.0"

__all__ = ["create", "get", "list_batch_sources", "list_datasets", "list_losses", "list_miners", "list_samplers",
           "data", "losses", "metrics", "miners", "samplers", "__version__"]
