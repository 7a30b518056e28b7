"""`python -m pmlbal.cli ...` (and `torchrun ... -m pmlbal.cli train ...`): the `pmlbal` command."""

import sys

from . import main

sys.exit(main())
