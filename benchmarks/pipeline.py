"""Training throughput: pmlbal's device batches vs a torchvision ImageFolder + PIL DataLoader vs the model alone.

Usage:
    python benchmarks/pipeline.py [--device cuda] [--backbones resnet50,vit_small_patch16_224]
                                  [--images 2048] [--input-size 224] [--batch-size 128] [--steps 30]

All three run the same training step (forward, NT-Xent loss, backward, AdamW; bf16
autocast + channels-last on CUDA) on the same images:
  (a) pmlbal: uint8 cache held on the device, random-resized-crop/flip/normalise as tensor ops;
      (a') the same from the aspect-preserving cache (`--cache-mode aspect`: whole images on a
      4/3-larger canvas, crops inside each image's valid box);
  (b) torchvision ImageFolder + PIL transforms in a DataLoader with one worker per core;
  (c) the model alone on a synthetic batch already on the device (the ceiling).
The images are synthetic JPEGs of CUB's typical size (500 x 375) written to a temp
folder in ImageFolder layout. Prints images/s and the ratios (a)/(c), (a)/(b) and (a')/(c);
then the batch preparation alone (take + crop + flip + normalise, no model) from each cache,
and each cache's bytes per image.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_jpegs(folder: Path, n: int, classes: int = 32) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d = folder / f"c{i % classes:03d}"
        d.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, size=(47, 63, 3), dtype=np.uint8)  # smooth-ish content, realistic JPEG size
        Image.fromarray(base).resize((500, 375), Image.BICUBIC).save(d / f"{i}.jpg", quality=90)


def step_fn(model, loss_fn, opt, device):
    from pmlbal.loop import train_step

    return lambda x, y: train_step(model, loss_fn, opt, x, y, amp=device.type == "cuda")


def timed(run, steps, batch, device, warmup=3) -> float:
    for _ in range(warmup):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def bench_backbone(name, folder, args, device) -> dict[str, float]:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    from pmlbal.data.gpu_batches import ImageBank, normalize, random_resized_crop_flip
    from pmlbal.losses import BalancedNTXentLoss
    from pmlbal.models import EmbeddingModel

    model = EmbeddingModel(name, 128).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    step = step_fn(model, BalancedNTXentLoss(temperature=0.1), opt, device)
    b, s = args.batch_size, args.input_size
    labels = torch.arange(b, device=device) // 4
    out = {}

    # (c) model alone
    x_syn = torch.randn(b, 3, s, s, device=device)
    nan = float("nan")
    out["model_only"] = nan if args.prep_only else timed(lambda: step(x_syn, labels), args.steps, b, device)

    # (a) pmlbal device batches: decode once (not timed: it is reused by every later run)
    ds = ImageFolder(str(folder))
    from pmlbal.data.cache import square_resize

    cache = np.stack([square_resize(ds.loader(p).convert("RGB"), round(s * 256 / 224)) for p, _ in ds.samples])
    bank = ImageBank(cache, device)
    gen = torch.Generator().manual_seed(0)

    def pmlbal_step():
        idx = torch.randint(0, len(bank), (b,), generator=gen)
        x = normalize(random_resized_crop_flip(bank.take(idx), s, gen), model.mean, model.std)
        step(x, labels)

    out["pmlbal"] = nan if args.prep_only else timed(pmlbal_step, args.steps, b, device)

    # (a') the aspect-preserving cache: whole images, crops inside each valid box
    from pmlbal.data.cache import aspect_resize

    canvases, boxes = zip(*(aspect_resize(ds.loader(p).convert("RGB"), round(s * 256 / 224)) for p, _ in ds.samples))
    aspect = ImageBank(np.stack(canvases), device, np.array(boxes))

    def aspect_step():
        idx = torch.randint(0, len(aspect), (b,), generator=gen)
        x = normalize(random_resized_crop_flip(aspect.take(idx), s, gen, valid=aspect.take_boxes(idx)),
                      model.mean, model.std)
        step(x, labels)

    out["pmlbal_aspect"] = nan if args.prep_only else timed(aspect_step, args.steps, b, device)

    def prepare(source):
        def run():
            idx = torch.randint(0, len(source), (b,), generator=gen)
            x = normalize(random_resized_crop_flip(source.take(idx), s, gen, valid=source.take_boxes(idx)),
                          model.mean, model.std)
            if device.type == "cuda":
                x.sum().item()  # wait for it
        return run

    out["prep_square"] = timed(prepare(bank), args.steps, b, device)
    out["prep_aspect"] = timed(prepare(aspect), args.steps, b, device)
    out["bytes_square"] = cache[0].nbytes
    out["bytes_aspect"] = canvases[0].nbytes
    if args.skip_torchvision or args.prep_only:
        out["torchvision"] = nan
        return out

    # (b) torchvision ImageFolder + PIL, one worker per core
    tf = T.Compose([T.RandomResizedCrop(s), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(model.mean, model.std)])
    loader = torch.utils.data.DataLoader(
        ImageFolder(str(folder), transform=tf), batch_size=b, shuffle=True, drop_last=True,
        num_workers=os.cpu_count(), pin_memory=device.type == "cuda", persistent_workers=True,
    )

    def loader_batches():
        while True:
            yield from loader

    it = loader_batches()

    def torchvision_step():
        x, _ = next(it)
        step(x.to(device, non_blocking=True), labels)

    out["torchvision"] = timed(torchvision_step, args.steps, b, device)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backbones", default="resnet50,vit_small_patch16_224")
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--skip-torchvision", action="store_true", help="Leave out (b) (slow on a shared CPU).")
    ap.add_argument("--prep-only", action="store_true", help="Only the batch preparation from each cache (no model).")
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU x{os.cpu_count()} cores"
    print(f"# training throughput (images/s), batch {args.batch_size}, {args.input_size}px, {name}")
    print(f"{'backbone':<24}{'(a) pmlbal':>12}{'(a) aspect':>12}{'(b) tv+PIL':>12}{'(c) model':>12}{'a/c':>8}"
          f"{'a_asp/c':>8}{'a/b':>8}{'prep sq':>10}{'prep asp':>10}{'B/img sq':>10}{'B/img asp':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        make_jpegs(Path(tmp), args.images)
        for bb in args.backbones.split(","):
            r = bench_backbone(bb, Path(tmp), args, device)
            print(f"{bb:<24}{r['pmlbal']:>12.0f}{r['pmlbal_aspect']:>12.0f}{r['torchvision']:>12.0f}"
                  f"{r['model_only']:>12.0f}{r['pmlbal'] / r['model_only']:>7.0%} "
                  f"{r['pmlbal_aspect'] / r['model_only']:>7.0%} {r['pmlbal'] / r['torchvision']:>6.1f}x"
                  f"{r['prep_square']:>10.0f}{r['prep_aspect']:>10.0f}{r['bytes_square']:>10}{r['bytes_aspect']:>10}",
                  flush=True)


if __name__ == "__main__":
    main()
