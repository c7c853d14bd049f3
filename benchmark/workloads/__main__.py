"""``python -m benchmark.workloads``; see :mod:`benchmark.workloads.cli`."""

import sys

from benchmark.workloads.cli import main

sys.exit(main())
