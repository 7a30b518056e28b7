"""ARCHITECTURE.md names every module of the package (a module added without its line fails here), and no module
or function outgrows one idea."""

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


def test_no_module_past_400_lines_and_no_function_past_60():
    """The brief's sizes: a module past ~400 lines, or a function past ~60, holds two ideas."""
    import ast

    long_modules, long_functions = [], []
    for path in sorted((ROOT / "pmlbal").rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 400:
            long_modules.append(f"{path.relative_to(ROOT)} ({len(text.splitlines())})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long_functions.append(f"{path.relative_to(ROOT)}:{node.name} ({node.end_lineno - node.lineno + 1})")
    assert not long_modules and not long_functions, long_modules + long_functions
