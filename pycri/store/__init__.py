"""pycri's persistent state: sandboxes, containers, images and runtime settings."""

from pycri.store.db import ContainerRow, ImageRow, Row, SandboxRow, Store, StoreError, Table

__all__ = ["ContainerRow", "ImageRow", "Row", "SandboxRow", "Store", "StoreError", "Table"]
