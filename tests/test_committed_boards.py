"""Every committed board (results/*.md) and the README's excerpts: a reader can copy each row's command.

Each command names each option once (`--loss-arg` once per key), parses with `pmlbal train`'s own click
parser, and its label shows no float past four significant digits; no row is marked stale (‡)."""

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOARDS = sorted((ROOT / "results").glob("*.md"))
BOARD_ROW = re.compile(r"^\| \d+ \| (?P<label>.+?) \|.*`(?P<command>pmlbal train [^`]*)` \|$")


def _rows(path: Path) -> list[re.Match]:
    return [m for line in path.read_text().splitlines() if (m := BOARD_ROW.match(line))]


def _boards() -> list[Path]:
    return [p for p in BOARDS if p.name != "README.md"] + [ROOT / "README.md"]


@pytest.mark.parametrize("path", _boards(), ids=lambda p: p.name)
def test_every_board_command_names_each_option_once_and_parses(path):
    from pmlbal.cli.training import train

    rows = _rows(path)
    assert rows or path.name == "README.md" and "<!-- board:" not in path.read_text()
    for m in rows:
        args = shlex.split(m["command"].replace("--seed S", "--seed 0"))[2:]
        options = [a.split("=")[0] for a in args if a.startswith("--") and a != "--loss-arg"]
        assert len(options) == len(set(options)), f"{path.name}: an option repeats in {m['command']!r}"
        keys = [args[i + 1].split("=")[0] for i, a in enumerate(args) if a == "--loss-arg"]
        assert len(keys) == len(set(keys)), f"{path.name}: a --loss-arg key repeats in {m['command']!r}"
        ctx = train.make_context("train", args)  # click's own parser: raises on an unknown or malformed option
        assert ctx.params["seed"] == 0


@pytest.mark.parametrize("path", _boards(), ids=lambda p: p.name)
def test_no_board_row_is_stale_or_prints_a_long_float(path):
    for m in _rows(path):
        assert "‡" not in m["label"], f"{path.name}: stale row {m['label']!r}"
        digits = [d.replace(".", "").strip("0") for d in re.findall(r"=(\d+\.\d+)", m["label"])]
        assert all(len(d) <= 4 for d in digits), f"{path.name}: label {m['label']!r} prints a float past four significant digits"
