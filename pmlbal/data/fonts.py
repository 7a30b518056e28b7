"""Fonts for glyph data sets: which Debian packages, which faces of their files, and each face's
ideographs (fontTools character maps), with the digests that fingerprint what is rendered from them.

Faces come from fontconfig or the standard font folders (the files of `FONT_PACKAGES`), or from every
font file under a folder the user names (``--root``). Scans are memoised per file (path, size,
mtime), so a second scan reads no font file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files import atomic_write_text
from .base import DatasetLayoutError

#: Debian packages the data set is rendered from, and the font files each installs (package order
#: is face order, which decides which face of a set of near-identical renderings is kept).
FONT_PACKAGES: dict[str, tuple[str, ...]] = {
    # Japanese: gothic, mincho, rounded, brush, handwriting and textbook designs.
    "fonts-ipafont-gothic": ("ipag.ttf", "ipagp.ttf"),
    "fonts-ipafont-mincho": ("ipam.ttf", "ipamp.ttf"),
    "fonts-vlgothic": ("VL-Gothic-Regular.ttf", "VL-PGothic-Regular.ttf"),
    "fonts-seto": ("setofont.ttf", "setofont-ex.ttf"),
    "fonts-horai-umefont": tuple(f"ume-{s}.ttf" for s in (
        "hgo4", "hgo5", "pgc4", "pgc5", "pgo4", "pgo5", "pgs4", "pgs5", "pmo3", "pms3", "tgc4", "tgc5", "tgo4",
        "tgo5", "tgs4", "tgs5", "tmo3", "tms3", "ugo4", "ugo5")),
    "fonts-hanazono": ("HanaMinA.ttf",),
    "fonts-aoyagi-kouzan-t": ("AoyagiKouzanT.ttf",),
    "fonts-kouzan-mouhitsu": ("kouzan-mouhitsu.ttf", "kouzan-mouhitsu-gyosho.ttf", "KouzanBrushFontSousyo.ttf"),
    "fonts-mplus": ("Mplus1-Regular.otf", "Mplus1-Thin.otf", "Mplus1-Black.otf", "Mplus2-Regular.otf"),
    "fonts-yozvox-yozfont-standard-kana": ("YOzRS_.ttf", "YOzBS_.ttf"),
    "fonts-yozvox-yozfont-edu": ("YOzRE_.ttf", "YOzBE_.ttf"),
    "fonts-klee": ("KleeOne-Regular.ttf", "KleeOne-SemiBold.ttf"),
    "fonts-sawarabi-gothic": ("sawarabi-gothic-medium.ttf",),
    "fonts-sawarabi-mincho": ("sawarabi-mincho-medium.ttf",),
    "fonts-motoya-l-cedar": ("MTLc3m.ttf",),
    "fonts-motoya-l-maruberi": ("MTLmr3m.ttf",),
    "fonts-takao-gothic": ("TakaoGothic.ttf",),
    "fonts-takao-mincho": ("TakaoMincho.ttf",),
    # Chinese: kai, ming/song, hei, fangsong and round designs (traditional and simplified).
    "fonts-arphic-ukai": ("ukai.ttc",),
    "fonts-arphic-uming": ("uming.ttc",),
    "fonts-arphic-bkai00mp": ("bkai00mp.ttf",),
    "fonts-arphic-bsmi00lp": ("bsmi00lp.ttf",),
    "fonts-arphic-gbsn00lp": ("gbsn00lp.ttf",),
    "fonts-arphic-gkai00mp": ("gkai00mp.ttf",),
    "fonts-cwtex-fs": ("cwfs.ttf",),
    "fonts-cwtex-heib": ("cwheib.ttf",),
    "fonts-cwtex-kai": ("cwkai.ttf",),
    "fonts-cwtex-ming": ("cwming.ttf",),
    "fonts-cwtex-yen": ("cwyen.ttf",),
    "fonts-cns11643-kai": ("TW-Kai-98_1.ttf",),
    "fonts-cns11643-sung": ("TW-Sung-98_1.ttf",),
    "fonts-wqy-zenhei": ("wqy-zenhei.ttc",),
    "fonts-wqy-microhei": ("wqy-microhei.ttc",),
    "fonts-lxgw-wenkai": ("LXGWWenKai-Regular.ttf", "LXGWWenKai-Light.ttf", "LXGWWenKai-Bold.ttf"),
    "fonts-noto-cjk": ("NotoSansCJK-Regular.ttc", "NotoSerifCJK-Regular.ttc", "NotoSansCJK-Bold.ttc",
                       "NotoSerifCJK-Bold.ttc"),
}
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
STANDARD_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
IDEOGRAPHS = (0x4E00, 0x9FFF)
MIN_FACE_COVERAGE = 3000
#: Fewer faces than this cannot give a median of 10 designs a class: a named error, not a thin data set.
MIN_FACES = 20


def apt_command(packages) -> str:
    return "apt-get install " + " ".join(sorted(packages))


@dataclass(frozen=True)
class Face:
    """One face of a font file (`index` > 0 only inside a .ttc/.otc collection)."""

    path: str
    index: int
    package: str  # the Debian package, or "" for a file under --root

    @property
    def label(self) -> str:
        return f"{Path(self.path).name}#{self.index}"


@dataclass
class FaceScan:
    """The faces found, the packages whose files were not, and each face's ideographs."""

    faces: list[Face]
    missing: dict[str, list[str]]  # package -> its font files not found
    coverage: dict[Face, np.ndarray] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)  # path -> sha1
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> error
    thin: list[Face] = field(default_factory=list)  # under MIN_FACE_COVERAGE ideographs


# -- finding faces ------------------------------------------------------------------------------------
def _fontconfig_files() -> list[Path]:
    if shutil.which("fc-list") is None:
        return []
    try:
        out = subprocess.run(["fc-list", "--format", "%{file}\n"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return []
    return [Path(line) for line in out.stdout.splitlines() if line.strip()]


def _folder_files(folders) -> list[Path]:
    files = []
    for folder in folders:
        folder = Path(folder).expanduser()
        if folder.is_dir():
            files += [p for p in folder.rglob("*") if p.suffix.lower() in FONT_SUFFIXES and p.is_file()]
    return files


def font_files(root: str | Path | None) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """(basename -> file, package -> missing basenames). Without `root`: the files of
    `FONT_PACKAGES` that fontconfig or the standard folders know; with it: every font file under it."""
    if root is not None:
        files = sorted(_folder_files([root]))
        return {p.name: p for p in files}, {}
    found: dict[str, Path] = {}
    for p in sorted(set(_fontconfig_files()) | set(_folder_files(STANDARD_FONT_DIRS))):
        found.setdefault(p.name, p)  # first in path order: a deterministic pick among copies
    wanted = {name for names in FONT_PACKAGES.values() for name in names}
    missing = {pkg: [n for n in names if n not in found] for pkg, names in FONT_PACKAGES.items()}
    return {n: p for n, p in found.items() if n in wanted}, {k: v for k, v in missing.items() if v}


def _digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_coverage(path: Path) -> list[np.ndarray]:
    """Ideographs of each face of a font file (fontTools character maps); raises on a broken file."""
    from fontTools.ttLib import TTCollection, TTFont

    lo, hi = IDEOGRAPHS
    with open(path, "rb") as f:
        magic = f.read(4)
    fonts = TTCollection(str(path), lazy=True).fonts if magic == b"ttcf" else [TTFont(str(path), lazy=True)]
    out = []
    for font in fonts:
        cmap = font.getBestCmap() or {}
        out.append(np.array(sorted(c for c in cmap if lo <= c <= hi), dtype=np.int32))
    return out


def _scan_memo_path(cache_dir: Path) -> Path:
    return cache_dir / "cjk-glyphs-faces.json"


def scan_faces(root: str | Path | None, cache_dir: str | Path) -> FaceScan:
    """Find the faces, their digests and character maps. Digests and maps are memoised per file
    (path, size, mtime) in `cache_dir`, so a second scan reads no font file."""
    files, missing = font_files(root)
    package_of = {n: pkg for pkg, names in FONT_PACKAGES.items() for n in names}
    order = {n: i for i, n in enumerate(n for names in FONT_PACKAGES.values() for n in names)}
    names = sorted(files, key=lambda n: (order.get(n, len(order)), n))
    cache_dir = Path(cache_dir)
    memo_path = _scan_memo_path(cache_dir)
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    scan = FaceScan([], missing)
    changed = False
    for name in names:
        path = files[name]
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        entry = memo.get(key)
        if not isinstance(entry, dict) or "digest" not in entry:
            try:
                faces = _read_coverage(path)
            except Exception as err:  # fontTools raises many types on a damaged file
                scan.unreadable[str(path)] = f"{type(err).__name__}: {err}".strip()
                continue
            entry = {"digest": _digest(path), "coverage": [c.tolist() for c in faces]}
            memo[key], changed = entry, True
        scan.digests[str(path)] = entry["digest"]
        for i, cov in enumerate(entry["coverage"]):
            face = Face(str(path), i, package_of.get(name, "") if root is None else "")
            if len(cov) < MIN_FACE_COVERAGE:
                scan.thin.append(face)
                continue
            scan.faces.append(face)
            scan.coverage[face] = np.asarray(cov, dtype=np.int32)
    if changed:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(memo_path, json.dumps(memo))
        except OSError:
            pass  # a read-only cache only costs a rescan next time
    return scan


def check_faces(scan: FaceScan, root: str | Path | None) -> None:
    """One-line named errors: no fonts, a font file that cannot be read, too few CJK faces."""
    where = f"under {root}" if root is not None else "by fontconfig or under " + ", ".join(STANDARD_FONT_DIRS)
    install = f"; install them with: {apt_command(FONT_PACKAGES)}" if root is None else ""
    if scan.unreadable:
        path, err = next(iter(scan.unreadable.items()))
        raise DatasetLayoutError(f"cjk-glyphs: cannot read font file {path} ({err}); reinstall or remove it")
    if not scan.faces and not scan.thin:
        raise DatasetLayoutError(f"cjk-glyphs: no font files found {where}{install}")
    if len(scan.faces) < MIN_FACES:
        raise DatasetLayoutError(
            f"cjk-glyphs: {len(scan.faces)} faces with at least {MIN_FACE_COVERAGE} CJK ideographs found {where} "
            f"(need {MIN_FACES}; {len(scan.thin)} other faces cover too few){install}")
