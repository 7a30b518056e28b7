"""The README's PML-pipeline example runs as written and does what it says."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own documentation
    loss, loss_fn, emb = scope["loss"], scope["loss_fn"], scope["emb"]
    assert torch.isfinite(loss) and emb.grad is not None
    torch.testing.assert_close(loss.detach(), loss_fn.pos_term + 0.5 * loss_fn.entropy_term)
    assert type(scope["memory"]).__name__ == "CrossBatchMemory"


def test_readme_opens_with_the_two_setup_commands():
    text = README.read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert len(block) == 2
    assert "pmlbal bench --dataset digits" in block[0]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "python -m pytest -q tests" in block[1] and "python -m pytest -q tests" in ci
