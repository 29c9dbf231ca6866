"""The one place that says which gpushift this is."""

__version__ = "0.1.0"
