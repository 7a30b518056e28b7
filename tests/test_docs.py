"""The documentation: README.md stays short, every ```python block in it and in docs/ runs as written,
and the MkDocs site in docs/ builds under --strict (a broken link or a page left out of nav fails).

A block that cannot run offline or in a few seconds (one that trains) is written as ```text instead."""

import importlib.util
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
README_MAX_LINES = 160


def python_blocks() -> list:
    return [pytest.param(page, m[1], id=f"{page.relative_to(REPO).as_posix()}#{i}")
            for page in PAGES for i, m in enumerate(PYTHON_BLOCK.finditer(page.read_text()))]


@pytest.mark.parametrize(("page", "code"), python_blocks())
def test_python_block_runs(page, code):
    torch.manual_seed(0)
    scope: dict = {"__name__": "__docs__"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's experimental-feature warnings
        exec(compile(code, str(page.relative_to(REPO)), "exec"), scope)  # noqa: S102 - our own documentation


def test_readme_shows_only_what_the_docs_hold():
    # The README's examples are excerpts of the docs pages, kept identical so neither drifts.
    docs = "\n".join(p.read_text() for p in PAGES[1:])
    for code in PYTHON_BLOCK.findall((REPO / "README.md").read_text()):
        assert code in docs, f"a README.md python block that no docs/ page holds:\n{code}"


def test_readme_is_short():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move reference material to docs/"


def test_links_and_paths_resolve():
    # README.md links files relative to the root; docs/ pages name files outside docs/ as `code`
    # (mkdocs --strict refuses links out of docs_dir), so those are checked here instead.
    readme = (REPO / "README.md").read_text()
    links = {m.split("#")[0] for m in re.findall(r"\]\(([^)\s]+)\)", readme) if not m.startswith(("http", "#"))}
    paths = {m for page in PAGES[1:] for m in re.findall(r"`((?:results|benchmarks|tests|pmlbal)/[^`\s<>*]+\.\w+)`",
                                                           page.read_text())}
    missing = sorted(p for p in links | paths if not (REPO / p).exists())
    assert links and paths and not missing, missing


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[test]' installs it)")
    # No -q: mkdocs 1.6's --quiet drops the warnings before --strict counts them.
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=config.parent, capture_output=True, text=True, timeout=120)


def test_mkdocs_build_strict(tmp_path):
    built = mkdocs_build(REPO / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def test_mkdocs_strict_fails_on_a_broken_link_and_an_unlisted_page(tmp_path):
    # mkdocs.yml's validation settings are what make --strict catch these; a copy proves they still do.
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    with (tmp_path / "docs" / "index.md").open("a") as f:
        f.write("\n[a page that is not there](missing.md) and [one outside docs/](../README.md)\n")
    (tmp_path / "docs" / "unlisted.md").write_text("# Not in nav\n")
    built = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    out = built.stdout + built.stderr
    assert built.returncode != 0, out
    assert "missing.md" in out and "../README.md" in out and "unlisted.md" in out, out
