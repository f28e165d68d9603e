"""The ``pycri`` command."""

from pycri.cli.main import main

__all__ = ["main"]
