"""OCI runtime handlers and (later) runtime-spec generation."""

from pycri.oci.runtime import OCIRuntime, Probe, handlers_from_config

__all__ = ["OCIRuntime", "Probe", "handlers_from_config"]
