"""Multi-process training pieces: the process-group backend for a device, and a loss wrapper that
gives a loss's own parameters (proxies, class weights) correct gradients under `torchrun`."""

from __future__ import annotations

import torch
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper, is_distributed


def process_group_backend(device: torch.device) -> str:
    """NCCL for a CUDA device, gloo otherwise: the run's device decides, not whether CUDA exists
    (a `--device cpu` run on a GPU machine needs gloo; DDP refuses CPU tensors on NCCL)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


class _AverageOverRanks(torch.autograd.Function):
    """Identity forward; backward all-reduces the gradient and multiplies it by `scale`."""

    @staticmethod
    def forward(ctx, param: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return param.view_as(param)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        grad = grad.clone()  # the incoming buffer may be shared with other nodes
        torch.distributed.all_reduce(grad)
        return grad.mul_(ctx.scale), None


class DistributedLoss(torch.nn.Module):
    """PML's `DistributedLossWrapper`, plus correct gradients for the wrapped loss's own parameters.

    The wrapper gathers every rank's embeddings, so each rank computes the loss on the global
    batch, and multiplies it by the world size W: DistributedDataParallel's average over W ranks
    of the model's gradients then equals the global batch's gradient. The loss's own parameters
    (ProxyAnchorLoss's proxies, ArcFaceLoss's class weights, ...) are not in DDP: each rank would
    keep W times their global-batch gradient and, with floating-point differences of the gather
    order, drift apart. Here their gradients are summed over ranks and divided by W² during
    backward, so every rank holds the same gradient, equal to a single process's on the global
    batch (with ``efficient=True`` too, where the global loss is the mean of the ranks' losses over
    their own anchors). The all-reduces run inside backward: every rank builds the same graph, so
    autograd issues them, and DDP's bucket all-reduces, in the same order on every rank.

    Args:
        loss: a PML loss (``BaseMetricLossFunction`` or ``CrossBatchMemory``), with or without parameters.
        efficient: PML's ``efficient`` mode (each rank's anchors against the gathered references).

    Examples:
        >>> import pmlbal, torch
        >>> from pytorch_metric_learning.losses import ProxyAnchorLoss
        >>> wrapped = DistributedLoss(ProxyAnchorLoss(num_classes=3, embedding_size=4))
        >>> loss = wrapped(torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2]))  # one process: the loss as is
    """

    def __init__(self, loss: torch.nn.Module, efficient: bool = False) -> None:
        super().__init__()
        self.inner = DistributedLossWrapper(loss, efficient=efficient)

    @property
    def loss(self) -> torch.nn.Module:
        return self.inner.loss

    def forward(self, *args, **kwargs) -> torch.Tensor:
        if not is_distributed() or torch.distributed.get_world_size() <= 1:
            return self.loss(*args, **kwargs)  # as PML's wrapper does, without its warning
        world = torch.distributed.get_world_size()
        synced = {f"loss.{name}": _AverageOverRanks.apply(p, 1.0 / world**2)
                  for name, p in self.loss.named_parameters() if p.requires_grad}
        if not synced:
            return self.inner(*args, **kwargs)
        return torch.func.functional_call(self.inner, synced, args, kwargs, strict=False)
