"""cjk-glyphs: a many-class retrieval benchmark rendered from Debian's CJK font packages.

A class is one CJK Unified Ideograph (U+4E00-U+9FFF); its images are the character as drawn by the
installed faces, one per distinct design. Different type designers drew the same ideograph as gothic,
mincho, kai, song, brush and handwriting faces, which is what a class of a zero-shot retrieval
benchmark is (Omniglot is built the same way from 20 people drawing each character).

How it is built (every step deterministic for given font files):

1. Faces: the font files of `FONT_PACKAGES` found by fontconfig or under the standard font folders
   (or every font file under ``root``), each face of a collection (.ttc) on its own; faces whose
   character map holds fewer than `MIN_FACE_COVERAGE` ideographs of the range are left out.
   Face order: package order of `FONT_PACKAGES`, then file name, then face index.
2. Eligible characters: the ideographs in the character maps (fontTools) of at least
   `MIN_FACE_SHARE` of the faces; a fixed permutation of them (NumPy, seed `SPLIT_SEED`).
3. Rendering (Pillow + FreeType): the glyph drawn at `RENDER_EM` px, cut to its ink box, scaled so
   its longer side is ``SIZE - 2 * MARGIN`` px (aspect kept) and centred on a SIZE x SIZE grey canvas,
   white ink on black. A face that raises on a glyph (a broken hinting program) is skipped for
   that glyph and counted; blank renderings (no pixel above `INK_THRESHOLD`) are dropped.
4. One image per design: within a class, in face order, a rendering is dropped when the cosine of its
   pixel vector at half resolution (`DEDUP_POOL` x `DEDUP_POOL` blocks averaged) with one already
   kept is at least `NEAR_DUPLICATE_COSINE` (identical renderings have cosine 1). At full resolution
   and 0.95 the weights of one design survive as separate "designs" (a median of 33 a class, Noto's
   regular and bold apart); at 16 x 16 and 0.9 a weight or width variant collapses to the design's
   first face (a median of 15), and distinct designs stay apart.
5. Classes: walking the permutation, a character with at least `MIN_DESIGNS` designs is kept; the
   first `TRAIN_CLASSES` kept are the train classes, the next `TEST_CLASSES` the test classes
   (disjoint, as CUB's zero-shot split). ``train-sub``/``val`` divide the train classes by the
   usual rule (the last 20 % validate).

The rendered split is cached (``$PMLBAL_CACHE`` or ~/.cache/pmlbal) under a fingerprint of the
font files' digests, the Pillow and FreeType versions, the rendering constants and the character
list, so renderings from other fonts or another FreeType are never mixed with these.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ..files import atomic_write
from ..registry import register_dataset
from .base import DatasetLayoutError, RetrievalDataset
from .fonts import (FONT_PACKAGES, IDEOGRAPHS, MIN_FACE_COVERAGE, MIN_FACES, STANDARD_FONT_DIRS, Face,  # noqa: F401
                    FaceScan, apt_command, check_faces, font_files, scan_faces)

SIZE, MARGIN, RENDER_EM = 32, 2, 48
INK_THRESHOLD = 64
MIN_FACE_SHARE = 0.6
NEAR_DUPLICATE_COSINE = 0.9
DEDUP_POOL = 2
MIN_DESIGNS = 4
TRAIN_CLASSES = TEST_CLASSES = 1000
SPLIT_SEED = 0
#: Bumped whenever a rule above changes what is rendered (part of the fingerprint).
RENDER_VERSION = 1


# -- rendering ------------------------------------------------------------------------------------------
def render_glyph(font, char: str) -> np.ndarray | None:
    """`char` in `font` (a Pillow FreeType font at RENDER_EM px) as a SIZE x SIZE uint8 image: ink
    box cut out, longer side scaled to SIZE - 2 * MARGIN, centred; None when nothing is drawn."""
    from PIL import ImageDraw

    canvas = 2 * RENDER_EM
    img = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(img).text((canvas // 2, canvas // 2), char, fill=255, font=font, anchor="mm")
    box = img.point(lambda v: 255 if v >= INK_THRESHOLD else 0).getbbox()
    if box is None:
        return None
    glyph = img.crop(box)
    w, h = glyph.size
    scale = (SIZE - 2 * MARGIN) / max(w, h)
    glyph = glyph.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    out = Image.new("L", (SIZE, SIZE), 0)
    out.paste(glyph, ((SIZE - glyph.size[0]) // 2, (SIZE - glyph.size[1]) // 2))
    return np.asarray(out, dtype=np.uint8)


def render_face(face: Face, chars: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Render `chars` (code points) in `face`: (uint8 [n, SIZE, SIZE], drawn mask [n], glyphs that
    raised). A glyph the face does not map is left undrawn, as is one whose hinting program fails."""
    from PIL import ImageFont

    font = ImageFont.truetype(face.path, RENDER_EM, index=face.index, layout_engine=ImageFont.Layout.BASIC)
    images = np.zeros((len(chars), SIZE, SIZE), dtype=np.uint8)
    drawn = np.zeros(len(chars), dtype=bool)
    failed = 0
    for i, c in enumerate(chars.tolist()):
        try:
            img = render_glyph(font, chr(c))
        except OSError:  # e.g. "invalid opcode" from a face's TrueType hinting program
            failed += 1
            continue
        if img is not None:
            images[i], drawn[i] = img, True
    return images, drawn, failed


def distinct_designs(images: np.ndarray) -> list[int]:
    """Indices of `images` (one class, in face order) kept as distinct designs: a rendering whose
    pixel vector at half resolution has cosine >= NEAR_DUPLICATE_COSINE with one already kept is dropped."""
    n, p = len(images), DEDUP_POOL
    x = images.astype(np.float32).reshape(n, SIZE // p, p, SIZE // p, p).mean(axis=(2, 4)).reshape(n, -1)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    kept: list[int] = []
    for i in range(len(x)):
        if not kept or float((x[kept] @ x[i]).max()) < NEAR_DUPLICATE_COSINE:
            kept.append(i)
    return kept


def eligible_characters(scan: FaceScan) -> np.ndarray:
    """Ideographs in the character maps of at least MIN_FACE_SHARE of the faces, in the fixed
    seeded order the split walks."""
    lo, hi = IDEOGRAPHS
    counts = np.zeros(hi - lo + 1, dtype=np.int32)
    for cov in scan.coverage.values():
        counts[cov - lo] += 1
    chars = np.flatnonzero(counts >= math.ceil(MIN_FACE_SHARE * len(scan.faces))) + lo
    return chars[np.random.default_rng(SPLIT_SEED).permutation(len(chars))].astype(np.int32)


def fingerprint(scan: FaceScan, chars: np.ndarray, classes: tuple[int, int]) -> str:
    """What the rendered data set depends on: the faces' files (digests) and order, Pillow and
    FreeType, the rendering rules and the character list."""
    import PIL
    from PIL import features

    h = hashlib.sha1()
    for face in scan.faces:
        h.update(f"{scan.digests[face.path]}#{face.index}\n".encode())
    rules = (RENDER_VERSION, SIZE, MARGIN, RENDER_EM, INK_THRESHOLD, MIN_FACE_COVERAGE, MIN_FACE_SHARE,
             NEAR_DUPLICATE_COSINE, DEDUP_POOL, MIN_DESIGNS, SPLIT_SEED, classes, PIL.__version__, features.version("freetype2"))
    h.update(repr(rules).encode())
    h.update(np.ascontiguousarray(chars).tobytes())
    return h.hexdigest()[:16]


def _render_chunk(args):
    face, chars = args
    return render_face(face, chars)


def _announce(wanted: int, faces: int, workers: int) -> None:
    print(f"cjk-glyphs: rendering {wanted:,} characters from {faces} font faces with {workers} "
          f"process{'es' if workers != 1 else ''} (once, then read from the cache; about a minute per core)",
          file=sys.stderr, flush=True)


def render_dataset(scan: FaceScan, chars: np.ndarray, classes: tuple[int, int], workers: int | None = None,
                   progress: bool = True) -> dict[str, np.ndarray]:
    """Walk `chars`, render each in every face that maps it, keep its distinct designs, and stop
    once sum(classes) characters have MIN_DESIGNS designs. Returns images, labels (code points),
    faces (index into scan.faces), the number of kept train classes' images, and per-face failures."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    wanted = sum(classes)
    workers = workers or min(8, os.cpu_count() or 1)
    images, labels, face_ids = [], [], []
    failures = np.zeros(len(scan.faces), dtype=np.int64)
    kept_classes = 0
    start, chunk = 0, int(wanted * 1.15) + 16
    if progress:  # the bar below is a terminal's only; a log or a pipe hears this line, before minutes of work
        _announce(wanted, len(scan.faces), workers)
    bar = tqdm(total=wanted, desc="rendering cjk-glyphs", unit="class", disable=None if progress else True,
               leave=False)
    # fork, not spawn: spawn re-imports the caller's main script, which may itself be loading this data
    # set (and wait on the render lock). The workers run Pillow and NumPy only, never torch's OpenMP
    # pool, whose forked copy can hang.
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        while kept_classes < wanted and start < len(chars):
            block = chars[start:start + chunk]
            start += len(block)
            tasks = [(f, block[np.isin(block, scan.coverage[f])]) for f in scan.faces]
            rendered = []
            for face in pool.map(_render_chunk, tasks, chunksize=1):  # the first block is most of the work
                rendered.append(face)
                bar.set_postfix_str(f"faces {len(rendered)}/{len(tasks)} of this block")
            for j, (_, _, failed) in enumerate(rendered):
                failures[j] += failed
            index = [{int(c): k for k, c in enumerate(t[1].tolist())} for t in tasks]
            for c in block.tolist():
                if kept_classes == wanted:
                    break
                rows = [(j, rendered[j][0][index[j][c]]) for j in range(len(tasks))
                        if c in index[j] and rendered[j][1][index[j][c]]]
                if len(rows) < MIN_DESIGNS:
                    continue
                keep = distinct_designs(np.stack([r[1] for r in rows]))
                if len(keep) < MIN_DESIGNS:
                    continue
                images += [rows[k][1] for k in keep]
                face_ids += [rows[k][0] for k in keep]
                labels += [c] * len(keep)
                kept_classes += 1
                bar.update(1)
            chunk = max(64, chunk // 2)
    bar.close()
    if kept_classes < wanted:
        raise DatasetLayoutError(
            f"cjk-glyphs: only {kept_classes} characters have {MIN_DESIGNS} distinct designs in the "
            f"{len(scan.faces)} faces found (need {wanted}); install more of the font packages: "
            f"{apt_command(FONT_PACKAGES)}")
    return {"images": np.stack(images), "labels": np.asarray(labels, dtype=np.int32),
            "faces": np.asarray(face_ids, dtype=np.int32), "failures": failures}


# -- the data set ---------------------------------------------------------------------------------------
def _lock(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a")
    fcntl.flock(f, fcntl.LOCK_EX)  # one process renders; the others wait and then load its file
    return f


def load_rendered(root: str | Path | None = None, cache_dir: str | Path | None = None,
                  classes: tuple[int, int] = (TRAIN_CLASSES, TEST_CLASSES), workers: int | None = None,
                  progress: bool = True) -> tuple[dict[str, np.ndarray], FaceScan, str]:
    """The rendered data set (see `render_dataset`), its face scan and fingerprint: rendered once,
    then read from ``<cache>/cjk-glyphs-<fingerprint>.npz``."""
    from .cache import default_cache_dir

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    scan = scan_faces(root, cache_dir)
    check_faces(scan, root)
    chars = eligible_characters(scan)
    fp = fingerprint(scan, chars, classes)
    path = cache_dir / f"cjk-glyphs-{fp}.npz"
    if not path.exists():
        with _lock(cache_dir / f".cjk-glyphs-{fp}.lock"):
            if not path.exists():
                data = render_dataset(scan, chars, classes, workers, progress)
                atomic_write(path, lambda f: np.savez(f, **data))
    try:
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as err:
        raise DatasetLayoutError(f"cjk-glyphs: the rendered cache {path} is damaged ({err}); delete it and "
                                 f"run again to render it anew") from None
    return data, scan, fp


# Training defaults from validation runs (train-sub: 800 classes, val: 200), recorded in results/runs
# (BalancedNTXentLoss(temperature=0.0625, balance=2.0), seed 0, val MAP@R): lr 1e-3 / 2e-3 / 4e-3 / 8e-3 at
# 4 epochs, batch 128 (32 classes x 4): 26.4 / 35.0 / 40.1 / 42.1 %; batch 64 at 2e-3: 31.7 %; crop scale 0.5
# at 2e-3: 35.6 % (0.7: 35.0 %, kept); 8 epochs at 2e-3: 41.6 %. Epochs stay at 4 for time: a default run
# (one loss, one seed, training and the test evaluation) must take at most 5 minutes on the 2-core CPU, and
# the board runs 51 of them. m = 4: most classes have 10-20 designs. No flips: a mirrored glyph is
# another character, or none.
# Tuning (docs/tuner.md): one fixed 200-class validation split (its ranking of 12 configurations had
# Spearman 0.979 with test; K folds cost K runs a trial); batch size searched, lr not (24 runs buy about
# two sweeps of three coordinates); paired run-to-run noise of validation MAP@R 1.56 points (the s.d. of
# a same-seed difference of two points, from the 12 points of results/tuning_cjk-glyphs_grid.csv with two seeds).
@register_dataset(
    "cjk-glyphs", ks=(1, 2, 4, 8), needs_root=False, val_folds=1, val_noise={"map_at_r": 0.0156}, ssl_views="glyph",
    defaults=dict(backbone="resnet10t", embedding_dim=64, cache_size=32, input_size=32, epochs=4,
                  batch_size=128, samples_per_class=4, lr=8e-3, crop_scale=0.7, hflip=False),
    tune={"batch_size": ("log2-int", 32, 256)},
    samples_per_class=lambda batch_size: 4,
    lead_metric="map_at_r",
    lead_reason=("MAP@R scores the ranking of all of a query's same-character designs (a median of a dozen), "
                 "where Recall@1 asks for one of them; raw pixels already reach a high Recall@1 on glyphs "
                 "centred on their ink box."),
)
class CJKGlyphs(RetrievalDataset):
    """CJK ideographs rendered from the faces of Debian's font packages (module docstring: the rules).

    ``root``: a folder of font files to use instead of the installed packages (any machine).
    """

    name = "cjk-glyphs"
    layout = ("font files of the Debian packages in pmlbal.data.cjk_glyphs.FONT_PACKAGES, found by fontconfig "
              "or under /usr/share/fonts (or any font files under --root)")
    paths_are_files = False
    #: (train, test) classes; tests build smaller sets on the same fonts.
    classes: tuple[int, int] = (TRAIN_CLASSES, TEST_CLASSES)

    def __init__(self, root=None, split="train", cache_dir=None):
        self._cache_dir = cache_dir
        super().__init__(root, split)

    def _load(self, half):
        data, self.scan, self.data_fingerprint = load_rendered(self.root, self._cache_dir, self.classes)
        labels = data["labels"]
        order = labels[np.sort(np.unique(labels, return_index=True)[1])]  # classes in the order kept
        train = np.isin(labels, order[: self.classes[0]])
        rows = np.flatnonzero(train if half == "train" else ~train)
        self._images = data["images"]
        self.faces, self.failures = data["faces"], data["failures"]
        return [f"cjk-glyphs/{self.data_fingerprint}/{r}" for r in rows], labels[rows].astype(np.int64)

    def load_image(self, i: int) -> Image.Image:
        row = int(self.paths[i].rsplit("/", 1)[1])
        return Image.fromarray(self._images[row]).convert("RGB")

    def report(self) -> list[str]:
        """Lines for ``pmlbal datasets check``: faces found, missing packages, skipped glyphs."""
        scan = self.scan
        lines = [f"cjk-glyphs faces     {len(scan.faces)} found ({len(scan.thin)} other faces cover under "
                 f"{MIN_FACE_COVERAGE} ideographs), fingerprint {self.data_fingerprint}"]
        counts = np.unique(self.labels, return_counts=True)[1]
        lines.append(f"cjk-glyphs designs   {self.split}: median {np.median(counts):g} a class, min {counts.min()}, "
                     f"max {counts.max()} (near-identical renderings removed)")
        if scan.missing:
            files = sum(len(v) for v in scan.missing.values())
            lines.append(f"cjk-glyphs missing   {files} font files of {len(scan.missing)} packages; install them "
                         f"with: {apt_command(scan.missing)}")
        skipped = {scan.faces[j].label: int(n) for j, n in enumerate(self.failures) if n}
        if skipped:
            lines.append("cjk-glyphs skipped   glyphs a face failed to render: "
                         + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())))
        return lines
