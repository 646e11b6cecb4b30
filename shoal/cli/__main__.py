"""`python -m shoal.cli`: the same as the `shoal` console script."""

from __future__ import annotations

import sys

from shoal.cli import main

sys.exit(main())
