"""``python -m targets``: see :mod:`targets.serve`."""

import os
import sys

from targets.serve import main

code = main()
# Everything is closed and flushed by now; skip interpreter teardown, where grpc's core
# takes over a second to wind down its threads (the harness waits for that at every run).
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
