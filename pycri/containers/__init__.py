"""Containers: OCI spec inputs, rootfs, lifecycle under conmon, exec, recovery."""
