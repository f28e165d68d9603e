"""OCI runtime handlers: the runtime interface (pycri.oci.interface) and runc/crun under conmon."""

from pycri.oci.interface import (
    ConmonError,
    ContainerState,
    ExecResult,
    ExitStatus,
    Probe,
    RuntimeCommandError,
    RuntimeContainer,
    RuntimeImpl,
)
from pycri.oci.runtime import OCIRuntime, handlers_from_config, retired_handler

__all__ = [
    "ConmonError",
    "ContainerState",
    "ExecResult",
    "ExitStatus",
    "OCIRuntime",
    "Probe",
    "RuntimeCommandError",
    "RuntimeContainer",
    "RuntimeImpl",
    "handlers_from_config",
    "retired_handler",
]
