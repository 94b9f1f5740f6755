"""`python -m lumos.cli ...`: the same as the `lumos` command."""

import sys

from lumos.cli import main

sys.exit(main())
