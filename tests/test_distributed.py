"""Multi-process training: the process-group backend follows the run's device, and a loss with its
own parameters gets the global batch's gradient on every rank (2 gloo processes)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pytorch_metric_learning.losses import ArcFaceLoss, ProxyAnchorLoss
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper

from pmlbal.distributed import DistributedLoss, process_group_backend
from pmlbal.devices import distributed_context

WORLD, BATCH, DIM, CLASSES, STEPS, LR = 2, 16, 8, 4, 3, 0.5
LOSSES = {"ProxyAnchorLoss": ProxyAnchorLoss, "ArcFaceLoss": ArcFaceLoss}


@pytest.mark.parametrize("device, cuda_present, backend", [
    ("cpu", True, "gloo"), ("cpu", False, "gloo"), ("cuda", True, "nccl"), ("cuda:1", True, "nccl"),
])
def test_backend_follows_the_run_device_not_the_machine(monkeypatch, device, cuda_present, backend):
    # The bug this guards: `--device cpu` under torchrun on a GPU machine initialised NCCL, and DDP
    # then refused the CPU model ("No backend type associated with device type cpu").
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_present)
    assert process_group_backend(torch.device(device)) == backend
    seen = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda b, **kw: seen.append(b))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    assert distributed_context(torch.device(device)) == (1, 2)
    assert seen == [backend]


def _batches():
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(CLASSES).repeat(BATCH // CLASSES)
    return [(torch.randn(BATCH, DIM, generator=g), labels[torch.randperm(BATCH, generator=g)]) for _ in range(STEPS)]


def _train(name: str, wrap, rank: int, world: int) -> torch.Tensor:
    """STEPS of SGD on the loss's own parameters; each rank feeds its slice of every global batch."""
    torch.manual_seed(0)  # the same initial parameters on every rank, as `train` seeds them
    loss_fn = LOSSES[name](num_classes=CLASSES, embedding_size=DIM)
    wrapped = wrap(loss_fn)
    opt = torch.optim.SGD(loss_fn.parameters(), lr=LR)
    for emb, labels in _batches():
        rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        opt.zero_grad()
        wrapped(emb[rows], labels[rows]).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in loss_fn.parameters()])


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        out = {(name, kind): _train(name, wrap, rank, WORLD) for name in LOSSES
               for kind, wrap in (("synced", DistributedLoss), ("pml", DistributedLossWrapper))}
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_loss_parameters_match_a_single_process_on_the_global_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for name in LOSSES:
        single = _train(name, lambda loss: loss, 0, 1)
        synced = [r[(name, "synced")] for r in ranks]
        assert torch.equal(synced[0], synced[1]), name  # one all-reduced gradient: bit-identical ranks
        torch.testing.assert_close(synced[0], single, atol=1e-5, rtol=1e-5)
        # PML's wrapper alone leaves each rank with WORLD times the gradient: the check above can fail.
        assert not torch.allclose(ranks[0][(name, "pml")], single, atol=1e-3), name
