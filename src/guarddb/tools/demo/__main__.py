"""``python -m guarddb.tools.demo --child NAME DRIVER JSON``: one scenario run's child process.

See :func:`guarddb.tools.demo.process.main`.
"""

from __future__ import annotations

import sys

from .process import main

if __name__ == "__main__":
    sys.exit(main())
