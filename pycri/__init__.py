"""pycri: a Kubernetes container runtime (CRI runtime.v1) in Python."""

__version__ = "0.1.0"
RUNTIME_NAME = "pycri"
