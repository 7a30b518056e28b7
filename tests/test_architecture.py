"""ARCHITECTURE.md names every module of the package: a module added without its line fails here."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_of_the_package_is_named_in_architecture_md():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    missing = []
    for path in sorted((ROOT / "pmlbal").rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        rel = path.relative_to(ROOT / "pmlbal")
        # Named as `name.py` (a package's modules are listed under the package's own heading) or by path.
        if f"`{path.name}`" not in text and f"`{rel.as_posix()}`" not in text and f"{rel.parent.as_posix()}/{path.name}" not in text:
            missing.append(rel.as_posix())
    assert not missing, f"ARCHITECTURE.md does not name: {', '.join(missing)}"
