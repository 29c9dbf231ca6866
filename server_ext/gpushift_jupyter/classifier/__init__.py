"""The GPU-need classifier: decides from a cell's code whether running it needs a GPU, with
a reason (user's line, rule, source text) per hit. Pure Python (stdlib + IPython).

`KernelClassifier` keeps one kernel's memory across cells (a later `model.to(device)` needs
a GPU when `device` was bound to CUDA earlier); `classify_cell` classifies a cell alone.
"""

from __future__ import annotations

from gpushift_jupyter.classifier.kernel import KernelClassifier, classify_cell
from gpushift_jupyter.classifier.verdict import Reason, Verdict

__all__ = ["KernelClassifier", "Reason", "Verdict", "classify_cell"]
