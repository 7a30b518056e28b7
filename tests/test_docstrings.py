"""Every docstring example in the package runs and shows what it says (doctest)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import pmlbal

MODULES = sorted(m.name for m in pkgutil.walk_packages(pmlbal.__path__, "pmlbal."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ImportError as err:  # an optional extra (pmlbal.tune.ray needs Ray)
        pytest.skip(f"{name}: {err}")
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):  # examples see the module's own names, as in pytest --doctest-modules
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (output above)"
