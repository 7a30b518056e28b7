"""`EmbeddingModel`: a timm backbone and a linear head to the embedding."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from . import HEAD_INITS, POOLINGS, check_backbone_name, check_weights_available


class EmbeddingModel(nn.Module):
    """``timm.create_model(backbone, num_classes=0)`` followed by a linear head to `embedding_dim`.

    Args:
        backbone: any timm model name (``timm.list_models()``), optionally with a pretrained
            tag (``resnet50.tv_in1k``): the tag chooses which weights ``"timm"`` fetches and,
            with a local file too, the input mean/std (from the tag's ``pretrained_cfg``).
        embedding_dim: output size of the head.
        pretrained: None (random init), ``"timm"`` (timm's own cache/hub; fails offline
            unless the weights are already cached) or a path to a local weights file
            (``.safetensors`` or a torch file, as timm's ``load_state_dict`` reads them);
            keys the backbone lacks (its classifier) are ignored, and a file with none of
            its keys is refused.
        freeze_bn: True keeps every BatchNorm in eval mode with frozen affine parameters, the
            usual practice in deep metric learning with small class-balanced batches;
            ``"stats"`` keeps them in eval mode (running statistics fixed) while the affine
            parameters train, as PML's trainer's ``freeze_trunk_batchnorm`` (MLRC) does.
        pooling: ``avg`` (timm's own head), ``max`` or ``avg+max`` (global average plus global
            max pooling, summed, as Proxy-Anchor's ResNets do) of the last feature map; the
            last two need a backbone whose ``forward_features`` returns an NCHW map.
        head_init: ``default`` or ``kaiming`` (see `HEAD_INITS`).
    """

    def __init__(self, backbone: str, embedding_dim: int = 128, pretrained: str | None = None,
                 freeze_bn: bool | str = False, pooling: str = "avg", head_init: str = "default"):
        import timm

        super().__init__()
        check_backbone_name(backbone)
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {', '.join(HEAD_INITS)}, got {head_init!r}")
        if pretrained == "timm":
            check_weights_available(backbone)
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
        self.pooling = pooling
        if pooling == "avg":
            # Models with a pre-logits MLP (MobileNetV3, ...) output head_hidden_size, not num_features.
            width = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        else:
            width = self.backbone.num_features
        self.head = nn.Linear(width, embedding_dim)
        if head_init == "kaiming":
            nn.init.kaiming_normal_(self.head.weight, mode="fan_out")
            nn.init.zeros_(self.head.bias)
        self.freeze_bn = freeze_bn
        # The model's own pretrained_cfg: a tagged name carries its tag's mean/std (DINO, RA4, ...).
        cfg = timm.data.resolve_data_config({}, model=self.backbone)
        self.mean: tuple[float, ...] = tuple(cfg["mean"])
        self.std: tuple[float, ...] = tuple(cfg["std"])
        if freeze_bn is True:
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

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled backbone output, before the head (``--eval-on backbone``)."""
        if self.pooling == "avg":
            return self.backbone(x)
        f = self.backbone.forward_features(x)
        if f.dim() != 4:
            raise ValueError(f"pooling {self.pooling!r} needs an NCHW feature map, but "
                             f"{type(self.backbone).__name__}.forward_features gives shape {tuple(f.shape)}")
        mx = f.amax(dim=(2, 3))
        return mx if self.pooling == "max" else f.mean(dim=(2, 3)) + mx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
