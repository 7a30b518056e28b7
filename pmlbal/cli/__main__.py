"""`python -m pmlbal.cli ...` (and `torchrun ... -m pmlbal.cli train ...`): the `pmlbal` command."""

import sys

from . import main

if __name__ == "__main__":  # importing the module (a doctest walk, a tool) must not run the command
    sys.exit(main())
