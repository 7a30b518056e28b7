import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _not_in_the_checkout(monkeypatch, request):
    """The suite runs from pmlbal's checkout, where the CLI refuses a default --results-dir (the committed
    boards); tests that leave the option out only check parsing or errors before any write, so the guard is
    off for them. `results_dir_guard` marks the test that checks the guard itself."""
    if "results_dir_guard" not in request.keywords:
        import pmlbal.cli.options

        monkeypatch.setattr(pmlbal.cli.options, "is_checkout_results", lambda path: False)
