"""The two augmented views of a self-supervised batch (``pmlbal train --task ssl``), drawn on the device.

A recipe is a kornia pipeline (batched, per-sample random parameters) from uint8 NCHW images to float
images in [0, 1] of the input size. Its draws come from torch's global generator, which a run seeds
and its checkpoint keeps (`pmlbal.resume`), so a resumed run draws the views it would have drawn. A data
set names its recipe (`register_dataset(ssl_views=...)`), and the run records it (`TrainConfig.views`):

- ``crop-flip-jitter``: SimCLR's recipe for small images: a random resized crop of 20-100 % of the image,
  a horizontal flip half of the time, brightness and contrast jitter of ±0.4 (80 % of the time);
- ``crop-jitter``: the same without the flip (images whose mirror is another thing);
- ``glyph``: characters: a random affine warp (±10°, ±10 % shift, 80-110 % scale, ±10° shear), then
  the strokes thickened or thinned by a 2x2 morphology half of the time; no flip, no colour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # the recipes' names are read by `pmlbal --help`, which starts no torch
    import torch

RECIPES = ("crop-flip-jitter", "crop-jitter", "glyph")


def make_views(recipe: str, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The recipe's view function: uint8 images [N, C, H, W] -> one random view each, float [N, C, size, size]."""
    import kornia.augmentation as K
    import torch

    if recipe not in RECIPES:
        raise ValueError(f"views must be one of {', '.join(RECIPES)}, got {recipe!r}")
    if recipe == "glyph":
        warp = torch.nn.Sequential(K.RandomAffine(degrees=10.0, translate=(0.1, 0.1), scale=(0.8, 1.1), shear=10.0,
                                                  padding_mode="border", p=1.0),
                                   K.Resize((size, size)))

        def glyph_view(images: torch.Tensor) -> torch.Tensor:
            return _stroke_width(warp(images.float() / 255.0))

        return glyph_view
    steps = [K.RandomResizedCrop((size, size), scale=(0.2, 1.0))]
    if recipe == "crop-flip-jitter":
        steps.append(K.RandomHorizontalFlip(p=0.5))
    steps.append(K.ColorJitter(brightness=0.4, contrast=0.4, p=0.8))
    pipeline = torch.nn.Sequential(*steps)

    def view(images: torch.Tensor) -> torch.Tensor:
        return pipeline(images.float() / 255.0).clamp_(0.0, 1.0)

    return view


def _stroke_width(x: torch.Tensor) -> torch.Tensor:
    """Each image dilated, eroded or left as it is (probabilities 1/4, 1/4, 1/2): thicker or thinner strokes."""
    import torch
    from kornia.morphology import dilation, erosion

    kernel = torch.ones(2, 2, device=x.device)
    choice = torch.randint(0, 4, (x.shape[0], 1, 1, 1), device=x.device)
    return torch.where(choice == 0, dilation(x, kernel), torch.where(choice == 1, erosion(x, kernel), x))
