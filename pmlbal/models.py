"""Backbone + embedding head: timm's create_model, then a linear projection."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn


class EmbeddingModel(nn.Module):
    """``timm.create_model(backbone, num_classes=0)`` followed by a linear head to `embedding_dim`.

    Args:
        backbone: any timm model name (``timm.list_models()``).
        embedding_dim: output size of the head.
        pretrained: None (random init), ``"timm"`` (timm's own cache/hub; fails offline
            unless the weights are already cached) or a path to a local weights file
            (``.safetensors`` or a torch file, as timm's ``load_state_dict`` reads them);
            keys the backbone lacks (its classifier) are ignored, and a file with none of
            its keys is refused.
        freeze_bn: keep every BatchNorm in eval mode with frozen affine parameters, the
            usual practice in deep metric learning with small class-balanced batches.
    """

    def __init__(self, backbone: str, embedding_dim: int = 128, pretrained: str | None = None, freeze_bn: bool = False):
        super().__init__()
        if backbone not in timm.list_models():
            raise ValueError(f"unknown timm backbone {backbone!r} (see timm.list_models())")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.backbone = timm.create_model(backbone, pretrained=pretrained == "timm", num_classes=0)
        if pretrained not in (None, "timm"):
            path = Path(pretrained)
            if not path.is_file():
                raise FileNotFoundError(f"pretrained weights file not found: {path}")
            try:
                # timm's reader: .safetensors or torch files, state_dict / model / EMA keys, DDP prefixes.
                state = timm.models.load_state_dict(str(path), device="cpu")
            except Exception as err:  # pickle, zip, safetensors and key errors share no base class
                raise ValueError(f"cannot read pretrained weights {path}: not a torch or .safetensors weights file "
                                 f"({type(err).__name__}: {err})") from None
            if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
                raise ValueError(f"{path} is not a state dict of tensors")
            missing, unexpected = self.backbone.load_state_dict(state, strict=False)
            loaded = len(state) - len(unexpected)
            if loaded == 0:
                raise ValueError(f"{path} holds no weights for backbone {backbone!r}")
        # Models with a pre-logits MLP (MobileNetV3, ...) output head_hidden_size, not num_features.
        width = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.head = nn.Linear(width, embedding_dim)
        self.freeze_bn = freeze_bn
        cfg = timm.data.resolve_data_config({}, model=self.backbone)
        self.mean: tuple[float, ...] = tuple(cfg["mean"])
        self.std: tuple[float, ...] = tuple(cfg["std"])
        if freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    for p in m.parameters():
                        p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
