"""Backbone + embedding head: timm's create_model, then a linear projection (`EmbeddingModel`).

This package's own module holds what needs no torch: the option names (``--pooling``, ``--head-init``)
and the checks of a backbone's name and weights, which ``pmlbal --help`` and a config's validation
read; `EmbeddingModel` (torch) is imported on first use.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

# timm (and torchvision, huggingface_hub under it) is imported by the functions that use it: the names
# below are all that `pmlbal --help` and a config's validation of its choices need.

#: How the backbone's last feature map becomes one vector (``pmlbal train --pooling``).
POOLINGS = ("avg", "max", "avg+max")
#: Head initialisations (``--head-init``): PyTorch's default, or Proxy-Anchor's Kaiming-normal
#: (fan_out) weights with zero bias (tjddus9597/Proxy-Anchor-CVPR2020 code/net/resnet.py).
HEAD_INITS = ("default", "kaiming")


def check_backbone_name(backbone: str) -> None:
    """ValueError unless `backbone` is a timm model name, optionally with a pretrained tag
    (``resnet50.tv_in1k``) that timm knows for it."""
    import timm

    base, _, tag = backbone.partition(".")
    if not timm.is_model(base):
        raise ValueError(f"unknown timm backbone {backbone!r} (see timm.list_models())")
    if tag and backbone not in timm.list_pretrained(f"{base}.*"):
        tags = ", ".join(n.partition(".")[2] for n in timm.list_pretrained(f"{base}.*")) or "none"
        raise ValueError(f"unknown pretrained tag {tag!r} for timm backbone {base!r} (known tags: {tags})")


#: Seconds to wait for the Hub before calling it unreachable (timm's own download retries for a minute).
HUB_PROBE_TIMEOUT_S = 3.0


def _weights_cached(cfg: dict) -> bool:
    """Whether timm would find `cfg`'s weights without the network: the Hugging Face cache, or the
    torch hub folder for URL-only weights."""
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo = hub_id.split("@")[0]
        if any(isinstance(try_to_load_from_cache(repo, f), str)
               for f in ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin")):
            return True
    url = cfg.get("url")
    if url:
        import torch

        return (Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]).is_file()
    return False


def _hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_weights_available(backbone: str) -> None:
    """OSError in one line, within seconds, when timm's pretrained weights for `backbone` are neither
    cached nor reachable (``HF_HUB_OFFLINE`` set, or no answer from the Hub): name the two ways out."""
    import timm

    cfg = timm.models.get_pretrained_cfg(backbone)  # an untagged name resolves to its default tag
    if _weights_cached(cfg.to_dict() if cfg is not None else {}) or _hub_reachable():
        return
    raise OSError(f"pretrained weights for {backbone} are not in the local cache and the Hugging Face Hub cannot be "
                  f"reached: pass --pretrained PATH (a local weights file) or --pretrained none (random init)")


def __getattr__(name: str) -> Any:
    if name == "EmbeddingModel":
        return importlib.import_module(f"{__name__}.embedding").EmbeddingModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EmbeddingModel", "HEAD_INITS", "POOLINGS", "check_backbone_name", "check_weights_available"]
