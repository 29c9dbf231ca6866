#!/usr/bin/env python3
"""`make demo`: the whole of gpushift on this machine, with JupyterLab in the browser.

See testing/gpushift_testing/demo.py (and README.md). Run it with the project's
environment: `.venv/bin/python hack/demo.py [--state DIR] [--port N] [--exit-after-ready]`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "testing"))

from gpushift_testing.demo import main

if __name__ == "__main__":
    sys.exit(main())
