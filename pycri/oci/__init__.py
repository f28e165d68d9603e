"""OCI runtime handlers: probing, lifecycle commands (runc and crun share a command line)."""

from pycri.oci.runtime import (
    ContainerState,
    OCIRuntime,
    Probe,
    RuntimeCommandError,
    delete,
    handlers_from_config,
    kill,
    start,
    state,
)

__all__ = [
    "ContainerState",
    "OCIRuntime",
    "Probe",
    "RuntimeCommandError",
    "delete",
    "handlers_from_config",
    "kill",
    "start",
    "state",
]
