"""The registry is the single source of truth: data-set and loss specs drive the trainer, the
tuner's spaces and the metrics' Ks; a new data set is one class and one decorator."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pytorch_metric_learning import losses as pml_losses

import pmlbal
from pmlbal import registry
from pmlbal.data import DATASETS, RetrievalDataset
from pmlbal.metrics import STANDARD_KS
from pmlbal.train import train
from pmlbal.config import DATASET_DEFAULTS, TrainConfig
from pmlbal.tune import search_space
from pmlbal.tune.spaces import samples_per_class


def test_every_name_the_cli_accepts_is_buildable():
    for name in ("NTXentLoss", "SupConLoss", "ContrastiveLoss", "TripletMarginLoss", "BalancedNTXentLoss"):
        assert isinstance(pmlbal.create(name), pml_losses.BaseMetricLossFunction)
    assert pmlbal.create("NTXentLoss", temperature=0.2).temperature == 0.2
    assert {"NTXentLoss", "SupConLoss", "ContrastiveLoss"} <= set(pmlbal.list_losses(pml=True))
    assert "NTXentLoss" not in pmlbal.list_losses()  # pmlbal's own, as `bench --losses all` runs them
    with pytest.raises(ValueError, match="tmperature"):
        pmlbal.create("NTXentLoss", tmperature=0.1)


def test_specs_are_read_by_every_consumer():
    spec = registry.dataset_spec("sop")
    assert STANDARD_KS["sop"] == spec.ks == (1, 10, 100, 1000)
    assert DATASET_DEFAULTS["sop"]["backbone"] == spec.defaults["backbone"]
    assert DATASETS["sop"] is spec.cls and pmlbal.list_datasets() == sorted(STANDARD_KS)
    dims = {d.name: d for d in search_space("BalancedContrastiveLoss", "digits")}
    # The sweep order of docs/tuner.md: balance, batch size, the loss's own, lr.
    assert list(dims) == ["balance", "batch_size", "pos_margin", "neg_margin", "lr"]
    assert (dims["pos_margin"].step, dims["pos_margin"].min_step) == (0.1, 0.025)
    assert dims["batch_size"].high == registry.dataset_spec("digits").tune["batch_size"][2]
    assert samples_per_class("digits", 32) == 16 and samples_per_class("cub", 256) == 4
    assert pmlbal.list_batch_sources() == ["m-per-class", "osgd", "random", "spectral"]
    with pytest.raises(ValueError, match="choose from"):
        registry.dataset_spec("imagenet")
    with pytest.raises(ValueError, match="sampler must be one of"):
        TrainConfig(sampler="hard").resolved()


class Blobs(RetrievalDataset):
    """Six classes of 8x8 grey squares whose brightness is the class: a data set in ten lines."""

    name = "blobs"
    layout = "generated"
    val_fraction = 0.4

    def _load(self, half):
        classes = range(3) if half == "train" else range(3, 6)
        labels = np.repeat(list(classes), 12)
        self._pixels = {f"blob/{i}": int(30 + 35 * c) for i, c in enumerate(labels)}
        return list(self._pixels), labels

    def load_image(self, i):
        return Image.new("RGB", (8, 8), (self._pixels[self.paths[i]],) * 3)


@pytest.mark.slow
def test_a_new_data_set_is_one_class_and_one_decorator(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_DATASETS", dict(registry._DATASETS))  # leave the real registry as it was
    registry.register_dataset(
        "blobs", ks=(1, 2), needs_root=False, tune={"batch_size": ("log2-int", 8, 16), "lr": ("log", 1e-3, 1e-2)},
        defaults=dict(backbone="resnet10t", embedding_dim=8, cache_size=8, input_size=8, epochs=1, batch_size=12,
                      samples_per_class=4, lr=1e-3, crop_scale=0.8),
        samples_per_class=lambda b: b // 4,
    )(Blobs)
    record = train(TrainConfig(dataset="blobs", loss="NTXentLoss", results_dir=str(tmp_path),
                               cache_dir=str(tmp_path / "cache"), progress=False))
    assert set(record["final"]) >= {"recall@1", "recall@2", "map_at_r"} and "recall@4" not in record["final"]
    assert record["config"]["embedding_dim"] == 8 and STANDARD_KS["blobs"] == (1, 2)
    assert [d.name for d in search_space("NTXentLoss", "blobs")] == ["batch_size", "temperature", "lr"]


@pytest.mark.slow
def test_a_training_run_leaves_the_callers_generators_alone(tmp_path):
    import torch

    np.random.seed(123)
    torch.manual_seed(321)
    expected_np, expected_torch = np.random.rand(), torch.rand(1)
    np.random.seed(123)
    torch.manual_seed(321)
    train(TrainConfig(dataset="digits", epochs=1, batch_size=20, samples_per_class=10, results_dir=str(tmp_path),
                      cache_dir=str(tmp_path / "cache"), progress=False))
    assert np.random.rand() == expected_np and torch.equal(torch.rand(1), expected_torch)


def test_lead_metric_is_declared_with_the_data_set_and_checked():
    spec = registry.dataset_spec("digits")
    assert spec.lead_metric == "map_at_r" and "saturates" in spec.lead_reason
    assert registry.dataset_spec("sop").lead_metric == "recall@1"  # undeclared: Recall at the first K
    with pytest.raises(ValueError, match="lead_metric 'recall@3' is not one of"):
        registry.register_dataset("bad-lead", ks=(1, 2), defaults={}, tune={}, lead_metric="recall@3")(Blobs)
    with pytest.raises(ValueError, match="needs a lead_reason"):
        registry.register_dataset("bad-lead", ks=(1, 2), defaults={}, tune={}, lead_metric="map_at_r")(Blobs)
    assert "bad-lead" not in registry.list_datasets()
