"""Published training protocols as named presets (``pmlbal train --protocol NAME``).

A preset is data: the `TrainConfig` values of one published recipe, per data set where the
recipe differs, each table citing the file it was read from. `pmlbal.config.protocol_config` builds a
config from a preset; explicit values override it, and the config keeps the preset's name
(`TrainConfig.protocol`), which the record and the board show. The loss is not part of a
preset: the recipe is the harness around whichever loss is compared.

What a preset does not reproduce is said in its `notes` and in docs/protocols.md; none of the
published numbers there has been reproduced on the project's machines (no data sets there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping


@dataclass(frozen=True)
class Protocol:
    """One published recipe: `common` values, `per_dataset` values on top, the `source` files
    they come from, published Recall@1 (%) by (data set, backbone) and what differs (`notes`)."""

    name: str
    source: str
    common: Mapping[str, Any]
    per_dataset: Mapping[str, Mapping[str, Any]]
    published: Mapping[tuple[str, str], float] = field(default_factory=dict)
    notes: str = ""

    def values(self, dataset: str) -> dict[str, Any]:
        """The `TrainConfig` values this recipe sets on `dataset`; ValueError for a data set it
        has no values for."""
        if self.per_dataset and dataset not in self.per_dataset:
            raise ValueError(f"protocol {self.name!r} has values for {', '.join(sorted(self.per_dataset))}, "
                             f"not for data set {dataset!r}")
        return {**self.common, **self.per_dataset.get(dataset, {})}


# tjddus9597/Proxy-Anchor-CVPR2020: code/train.py (AdamW, weight decay 1e-4, proxies at lr x 100,
# StepLR with --lr-decay-step / --lr-decay-gamma 0.5, --warm epochs training only the embedding
# and the proxies, clip_grad_value_ 10 on model and loss, 60 epochs, random batches without
# --IPC), code/net/resnet.py (torchvision ResNet-50 weights, GAP + GMP summed, linear embedding
# with kaiming_normal_(fan_out) and zero bias, L2 norm, BatchNorm frozen: eval mode and no affine
# gradient), code/dataset/utils.py (RandomResizedCrop(224) with torchvision's default scale
# (0.08, 1) on the original image; test Resize(256) + CenterCrop(224)) and the README.md training
# commands: ResNet-50 on CUB (--batch-size 120 --warm 5 --lr-decay-step 5) and Cars
# (--batch-size 120 --warm 5 --lr-decay-step 10); SOP has only the Inception-BN command
# (--batch-size 180 --lr 6e-4 --warm 1 --bn-freeze 0 --lr-decay-step 20 --lr-decay-gamma 0.25).
PROXY_ANCHOR = Protocol(
    name="proxy-anchor",
    source="tjddus9597/Proxy-Anchor-CVPR2020 README.md, code/train.py, code/net/resnet.py, code/dataset/utils.py",
    common=MappingProxyType(dict(
        backbone="resnet50.tv_in1k", pretrained="timm", embedding_dim=512, pooling="avg+max", head_init="kaiming",
        freeze_bn=True, optimizer="adamw", lr=1e-4, weight_decay=1e-4, loss_lr=None, head_lr=None,
        schedule="step", lr_gamma=0.5, warmup_epochs=0.0, clip_grad_value=10.0, epochs=60, sampler="random",
        crop_scale=0.08, input_size=224, cache_size=256, cache_mode="aspect",
    )),
    per_dataset=MappingProxyType({
        "cub": MappingProxyType(dict(batch_size=120, freeze_trunk_epochs=5, lr_step_epochs=5)),
        "cars": MappingProxyType(dict(batch_size=120, freeze_trunk_epochs=5, lr_step_epochs=10)),
        "sop": MappingProxyType(dict(batch_size=180, lr=6e-4, freeze_bn=False, freeze_trunk_epochs=1,
                                     lr_step_epochs=20, lr_gamma=0.25)),
    }),
    published=MappingProxyType({("cub", "resnet50"): 69.9, ("cars", "resnet50"): 87.7,
                                ("cub", "bn_inception"): 69.1, ("cars", "bn_inception"): 86.4,
                                ("sop", "bn_inception"): 79.2}),
    notes="SOP's values come from the Inception-BN command (timm has no BN-Inception); its ResNet-50 runs them "
          "unchanged. The reference reports the best test epoch: run with --eval-every 1 to compare.",
)

# Musgrave et al., "A Metric Learning Reality Check": KevinMusgrave/powerful-benchmarker
# powerful_benchmarker/configs/config_optimizers/default.yaml and with_metric_loss_optimizer.yaml
# (RMSprop lr 1e-6, momentum 0.9 for trunk, embedder and loss parameters; weight decay 1e-4 in
# v0.9.32, the release the paper's instructions install — 5e-5 was a pre-release value, changed in
# commit 0f12790), config_general/default.yaml freeze_batchnorm (PML's trainer then puts the trunk's
# BatchNorm layers in eval mode each step; their affine parameters still train: freeze_bn="stats"),
# config_general/default.yaml (meta_testing_method ConcatenateEmbeddings, num_training_partitions 4:
# class-disjoint 4-fold cross-validation on the train classes, the 4 models' embeddings
# concatenated at test), config_loss_and_miners/default.yaml (MPerClassSampler m = 4),
# configs/config_transforms/default.yaml (RandomResizedCrop scale 0.16-1); the paper's setting of
# 128-d embeddings, batch 32, frozen trunk BatchNorm and MAP@R as the lead metric.
MLRC = Protocol(
    name="mlrc",
    source="KevinMusgrave/powerful-benchmarker powerful_benchmarker/configs/{config_optimizers/default.yaml, "
           "config_optimizers/with_metric_loss_optimizer.yaml, config_general/default.yaml, "
           "config_loss_and_miners/default.yaml}, configs/config_transforms/default.yaml",
    common=MappingProxyType(dict(
        backbone="resnet50.tv_in1k", pretrained="timm", embedding_dim=128, freeze_bn="stats", pooling="avg",
        batch_size=32, samples_per_class=4, optimizer="rmsprop", lr=1e-6, head_lr=1e-6, loss_lr=1e-6,
        weight_decay=1e-4, schedule="constant", warmup_epochs=0.0, crop_scale=0.16, input_size=224, cache_size=256,
        cache_mode="aspect", cv_folds=4, lead_metric="map_at_r", sampler="m-per-class",
    )),
    per_dataset=MappingProxyType({}),
    notes="The benchmark trained BN-Inception (not in timm; ResNet-50 here) at 227 px and stopped each fold on a "
          "validation plateau; pmlbal trains a fixed --epochs (the data set's default unless given).",
)

# Roth et al., "Revisiting Training Strategies and Generalization Performance in Deep Metric
# Learning": Confusezius/Revisiting_Deep_Metric_Learning_PyTorch parameters.py (--arch
# resnet50_frozen_normalize: ImageNet ResNet-50 with frozen BatchNorm and normalised output,
# --embed_dim 128, --bs 112, --samples_per_class 2, --optim adam, --lr 1e-5, --decay 4e-4,
# --n_epochs 150, --scheduler step with --tau 1000 > 150 epochs: a constant rate) and
# architectures/resnet50.py (average pooling before the linear embedding).
ROTH = Protocol(
    name="roth",
    source="Confusezius/Revisiting_Deep_Metric_Learning_PyTorch parameters.py, architectures/resnet50.py",
    common=MappingProxyType(dict(
        backbone="resnet50.tv_in1k", pretrained="timm", embedding_dim=128, freeze_bn="stats", pooling="avg",
        batch_size=112, samples_per_class=2, optimizer="adam", lr=1e-5, weight_decay=4e-4, epochs=150,
        schedule="constant", warmup_epochs=0.0, crop_scale=0.08, input_size=224, cache_size=256,
        cache_mode="aspect", sampler="m-per-class",
    )),
    per_dataset=MappingProxyType({}),
    notes="Roth's frozen BatchNorm keeps its statistics but still trains its affine parameters, as "
          "--freeze-bn-stats (freeze_bn='stats') does.",
)

PROTOCOLS: Mapping[str, Protocol] = MappingProxyType({p.name: p for p in (PROXY_ANCHOR, MLRC, ROTH)})


def list_protocols() -> list[str]:
    """Names `--protocol` accepts."""
    return sorted(PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose from {', '.join(list_protocols())}")
    return PROTOCOLS[name]


def protocol_values(name: str, dataset: str) -> dict[str, Any]:
    """The `TrainConfig` values preset `name` sets on `dataset`."""
    return get_protocol(name).values(dataset)
