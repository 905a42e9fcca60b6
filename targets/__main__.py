"""``python -m targets``: see :mod:`targets.serve`."""

import sys

from targets.serve import main

sys.exit(main())
