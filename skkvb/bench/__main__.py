"""``python -m skkvb.bench``: the same as the ``skkvb-bench`` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
