"""Registration: by-name creation and acceptance inside PML's wrappers."""

import os

import pytest
import torch
import torch.multiprocessing as mp
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning.utils import distributed as pml_dist

import pmlbal
from pmlbal.losses import BalancedLoss

LOSS_NAMES = ["AlphaCLLoss", "BalancedContrastiveLoss", "BalancedNTXentLoss", "BalancedSupConLoss", "DHELLoss", "KCLLoss"]


def test_every_loss_is_listed_and_reachable_from_pml():
    assert set(LOSS_NAMES) <= set(pmlbal.list_losses())
    for name in LOSS_NAMES:
        assert getattr(pml_losses, name) is pmlbal.get(name)


def test_create_by_name_passes_arguments():
    loss = pmlbal.create("BalancedNTXentLoss", temperature=0.1, balance=0.5)
    assert isinstance(loss, BalancedLoss) and loss.temperature == 0.1 and loss.balance == 0.5


def test_create_builds_a_pml_baseline_by_name():
    loss = pmlbal.create("NTXentLoss", temperature=0.2)
    assert type(loss) is pml_losses.NTXentLoss and loss.temperature == 0.2


def test_registering_a_name_twice_warns_and_a_different_class_under_it_raises(monkeypatch):
    from pmlbal import registry

    monkeypatch.setattr(registry, "_REGISTRY", {k: dict(v) for k, v in registry._REGISTRY.items()})
    monkeypatch.setattr(registry, "_LOSS_TUNING", dict(registry._LOSS_TUNING))
    cls = pmlbal.get("BalancedNTXentLoss")
    with pytest.warns(UserWarning, match="registered twice"):
        registry.register("loss")(cls)
    assert pmlbal.get("BalancedNTXentLoss") is cls

    class BalancedNTXentLoss(BalancedLoss):  # same name, another class
        pass

    with pytest.raises(ValueError, match="already registered"):
        registry.register("loss")(BalancedNTXentLoss)
    assert pmlbal.get("BalancedNTXentLoss") is cls


def test_a_class_registered_after_pml_is_imported_is_in_pml_at_once(monkeypatch):
    from pmlbal import registry

    monkeypatch.setattr(registry, "_REGISTRY", {k: dict(v) for k, v in registry._REGISTRY.items()})

    class LateLoss(BalancedLoss):
        pass

    assert not hasattr(pml_losses, "LateLoss")
    try:
        registry.register("loss")(LateLoss)
        assert pml_losses.LateLoss is LateLoss and "LateLoss" in pml_losses.SelfSupervisedLoss.supported_losses()
    finally:
        if hasattr(pml_losses, "LateLoss"):
            delattr(pml_losses, "LateLoss")


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="BalancedNTXentLoss") as err:
        pmlbal.create("NTXentLos")
    assert "NTXentLos" in str(err.value)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_accepted_by_self_supervised_loss_and_cross_batch_memory(name):
    loss = pmlbal.create(name)
    za, zb = torch.randn(8, 6, requires_grad=True), torch.randn(8, 6)
    value = pml_losses.SelfSupervisedLoss(loss)(za, zb)
    assert torch.isfinite(value) and value.requires_grad
    cbm = pml_losses.CrossBatchMemory(pmlbal.create(name), embedding_size=6, memory_size=32)
    for step in range(3):
        emb = torch.randn(8, 6, requires_grad=True)
        v = cbm(emb, torch.arange(8) % 4)
        v.backward()
        assert torch.isfinite(v) and torch.isfinite(emb.grad).all()


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_distributed_wrapper_accepts_outside_distributed(name):
    wrapper = pml_dist.DistributedLossWrapper(pmlbal.create(name))
    emb, labels = torch.randn(8, 6), torch.arange(8) % 4
    with pytest.warns(UserWarning):
        assert torch.allclose(wrapper(emb, labels), pmlbal.create(name)(emb, labels))


def _ddp_worker(rank, world, port, results):
    import pmlbal  # noqa: F401  (registers into PML in the spawned process)

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(rank)
    emb = torch.randn(8, 6, generator=g, dtype=torch.float64)
    labels = torch.arange(8) % 4 + 4 * rank
    out = []
    for ours, theirs in [
        (pmlbal.create("BalancedNTXentLoss", temperature=0.2), pml_losses.NTXentLoss(temperature=0.2)),
        (pmlbal.create("BalancedContrastiveLoss"), pml_losses.ContrastiveLoss()),
    ]:
        for efficient in (False, True):
            a = pml_dist.DistributedLossWrapper(ours, efficient=efficient)(emb, labels)
            b = pml_dist.DistributedLossWrapper(theirs, efficient=efficient)(emb, labels)
            out.append((a.item(), b.item()))
    results[rank] = out
    torch.distributed.destroy_process_group()


def test_distributed_wrapper_matches_pml_on_two_gloo_ranks():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, port, results), nprocs=2, join=True)
    for rank in range(2):
        for a, b in results[rank]:
            assert a == pytest.approx(b, rel=1e-9)


ORDERS = {
    "pmlbal, then PML": "import pmlbal\nfrom pytorch_metric_learning import losses, miners, samplers",
    "PML, then pmlbal": "from pytorch_metric_learning import losses, miners, samplers\nimport pmlbal",
    "a pmlbal module, then PML": "from pmlbal.losses import BalancedNTXentLoss\n"
                                 "from pytorch_metric_learning import losses, miners, samplers",
    "PML's miners inside pmlbal's import": "import pytorch_metric_learning.miners as miners\nimport pmlbal\n"
                                           "from pytorch_metric_learning import losses, samplers",
}


@pytest.mark.parametrize("order", ORDERS)
def test_pml_holds_pmlbals_classes_in_any_import_order(order):
    """A fresh process each: in this one PML and pmlbal were imported long ago."""
    check = (ORDERS[order] + "\nimport sys\nassert 'torch' in sys.modules\n"
             "assert losses.BalancedNTXentLoss.__module__ == 'pmlbal.losses.ntxent'\n"
             "assert losses.KCLLoss.__module__ == 'pmlbal.losses.kcl'\n"
             "assert 'DHELLoss' in losses.SelfSupervisedLoss.supported_losses()\n"
             "assert miners.BalancedPairMiner.__module__ == 'pmlbal.miners.balanced_pair'\n"
             "assert samplers.OSGDBatchSampler.__module__ == 'pmlbal.samplers.osgd'\n"
             "assert type(losses.__loader__).__name__ == 'SourceFileLoader'\n")
    _run_fresh(check)


def _run_fresh(code: str) -> None:
    """`code` in a fresh interpreter (in this one PML and pmlbal were imported long ago); it must exit 0."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_import_pmlbal_starts_neither_torch_nor_pml_and_its_names_load_on_use():
    check = ("import sys, pmlbal\n"
             "assert not {'torch', 'pytorch_metric_learning', 'numpy'} & set(sys.modules), sorted(sys.modules)\n"
             "assert 'digits' in pmlbal.list_datasets() and 'torch' not in sys.modules\n"
             "assert 'spectral' in pmlbal.list_batch_sources() and 'torch' not in sys.modules\n"
             "assert pmlbal.get('BalancedNTXentLoss').__name__ == 'BalancedNTXentLoss'\n"
             "assert pmlbal.samplers.SpectralBatchSampler.__module__ == 'pmlbal.samplers.spectral'\n"
             "import pytorch_metric_learning.losses as L\n"
             "assert L.BalancedNTXentLoss is pmlbal.losses.BalancedNTXentLoss\n")
    _run_fresh(check)


def test_a_failing_loader_stays_for_the_next_lookup(monkeypatch):
    from pmlbal import registry

    calls = []

    def load():
        calls.append(1)
        if len(calls) == 1:
            raise ImportError("no such module")

    monkeypatch.setattr(registry, "_LOADERS", {**registry._LOADERS, "miner": [load]})
    with pytest.raises(ImportError):
        registry.list_miners()
    registry.list_miners()
    registry.list_miners()
    assert len(calls) == 2
