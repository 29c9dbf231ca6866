"""gpushift's mutating admission webhook.

`review.review()` is the pure core (AdmissionReview in, AdmissionReview out);
`server` is the aiohttp adapter around it; `cli` is the `gpushift-webhook` command.
"""

from gpushift_core.version import __version__

__all__ = ["__version__"]
