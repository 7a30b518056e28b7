"""Batches prepared on the device: a uint8 image bank, augmentation as tensor ops."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align


class ImageBank:
    """All images of a split as one uint8 NCHW tensor on the device (pinned host memory as fallback).

    `boxes` ([N, 4] x0, y0, x1, y1, from the aspect cache) is each image's valid region; None
    means the whole image."""

    def __init__(self, images: np.ndarray, device: torch.device | str, boxes: np.ndarray | None = None) -> None:
        self.device = torch.device(device)
        self.boxes = None if boxes is None else torch.as_tensor(np.asarray(boxes), dtype=torch.float32).to(self.device)
        # np.array copies the read-only memmap into memory, which torch needs anyway.
        data = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).contiguous()
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if data.numel() < 0.5 * free:
                data = data.to(self.device)
            else:  # too large for the card: keep it pinned and copy each batch asynchronously
                data = data.pin_memory()
        self.data = data

    def __len__(self) -> int:
        return self.data.shape[0]

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(self.data.device)
        return self.data[idx].to(self.device, non_blocking=True)

    def take_boxes(self, idx: torch.Tensor) -> torch.Tensor | None:
        """The valid boxes of `idx` (None when every image fills its frame)."""
        return None if self.boxes is None else self.boxes[idx.to(self.boxes.device)]


def sample_crop_boxes(
    b: int,
    h: int,
    w: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    valid: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """RandomResizedCrop's boxes [b, 4] (x0, y0, x1, y1): area fraction in `scale` of each image's
    valid region (`valid` [b, 4], default the whole h x w frame), log-uniform aspect in `ratio`,
    clamped to and placed uniformly inside that region."""
    dev = torch.device(device)
    u = torch.rand(b, 4, generator=generator, device="cpu").to(dev)
    if valid is None:
        ox = oy = torch.zeros(b, device=dev)
        vw, vh = torch.full((b,), float(w), device=dev), torch.full((b,), float(h), device=dev)
    else:
        ox, oy = valid[:, 0], valid[:, 1]
        vw, vh = valid[:, 2] - ox, valid[:, 3] - oy
    # Same operation order as the whole-frame case always had, so its draws stay bit-identical.
    area = (scale[0] + (scale[1] - scale[0]) * u[:, 0]) * vh * vw
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    aspect = torch.exp(log_r)
    cw = torch.minimum(torch.sqrt(area * aspect), vw)
    ch = torch.minimum(torch.sqrt(area / aspect), vh)
    x0 = ox + (vw - cw) * u[:, 2]
    y0 = oy + (vh - ch) * u[:, 3]
    return torch.stack([x0, y0, x0 + cw, y0 + ch], dim=1)


def random_resized_crop_flip(
    images: torch.Tensor,
    out_size: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    valid: torch.Tensor | None = None,
    flip: bool = True,
) -> torch.Tensor:
    """torchvision's RandomResizedCrop + RandomHorizontalFlip (``flip=False``: no flip) for a whole uint8 batch at once.

    One crop box per image (`sample_crop_boxes`: inside each image's `valid` box when given, as
    the aspect cache records them), bilinear resampling with `roi_align` (adaptive sampling:
    ceil(box/out) points per output pixel, so downscaling is anti-aliased and a full-size crop is
    exact); float32 NCHW in [0, 255].
    """
    b, _, h, w = images.shape
    dev = images.device
    crop = sample_crop_boxes(b, h, w, generator, scale, ratio, valid, dev)
    boxes = torch.cat([torch.arange(b, device=dev, dtype=torch.float32)[:, None], crop], dim=1)
    out = roi_align(images.float(), boxes, output_size=out_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    flips = (torch.rand(b, generator=generator) < 0.5).to(dev)  # drawn either way: one stream for both
    return torch.where(flips[:, None, None, None], out.flip(-1), out) if flip else out


def center_crop_resize(images: torch.Tensor, out_size: int, crop_fraction: float = 0.875) -> torch.Tensor:
    """Evaluation transform: centre crop of `crop_fraction` of the side, resized to out_size."""
    _, _, h, w = images.shape
    ch, cw = round(h * crop_fraction), round(w * crop_fraction)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = images[:, :, top : top + ch, left : left + cw].float()
    return F.interpolate(crop, size=(out_size, out_size), mode="bilinear", align_corners=False, antialias=True)


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """[0, 255] -> the backbone's normalisation (mean/std in [0, 1] units, as timm gives them)."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1) * 255.0
    return (x - m) / s
