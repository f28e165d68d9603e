"""OCIRuntime.remove_leftovers: conmon's files go only once conmon itself has exited.

conmon writes a container's exit file when it notices the container's end, a moment after the
process is gone; removing the file before conmon has exited lets conmon write it afterwards.
A stand-in conmon here is a shell that writes the exit file after a pause.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from pycri.oci import OCIRuntime, RuntimeContainer, conmon


def make(tmp_path: Path) -> tuple[OCIRuntime, RuntimeContainer]:
    runtime = OCIRuntime(
        name="runc", path="/bin/true", root=str(tmp_path / "root"), exit_dir=tmp_path / "exits", socket_dir=tmp_path / "sockets"
    )
    c = RuntimeContainer(id="c0ffee" * 8, bundle=tmp_path / "bundle", persist_dir=tmp_path / "persist")
    for directory in (runtime.exit_dir, runtime.socket_dir, c.bundle, c.persist_dir):
        directory.mkdir()
    return runtime, c


def late_writer(exit_file: Path, cid: str) -> subprocess.Popen[bytes]:
    """A stand-in conmon of ``cid`` that writes its exit file half a second from now."""
    return subprocess.Popen(["/bin/sh", "-c", f"sleep 0.5; echo 137 > {exit_file}", f"conmon --cid {cid}"])


async def test_leftovers_wait_for_conmon_to_exit(tmp_path: Path) -> None:
    runtime, c = make(tmp_path)
    exit_file = conmon.exit_file(runtime.exit_dir, c.id)
    stand_in = late_writer(exit_file, c.id)
    conmon.conmon_pid_file(c).write_text(str(stand_in.pid))
    (runtime.socket_dir / c.id).symlink_to(c.bundle)
    try:
        await runtime.remove_leftovers(c)
        assert stand_in.poll() is not None, "returned only once conmon had exited"
        assert not exit_file.exists()
        assert not (runtime.socket_dir / c.id).is_symlink()
    finally:
        stand_in.kill()
        stand_in.wait()


async def test_leftovers_do_not_wait_for_a_process_that_is_not_its_conmon(tmp_path: Path) -> None:
    runtime, c = make(tmp_path)
    conmon.conmon_pid_file(c).write_text(str(os.getpid()))  # the pid now names another process
    conmon.exit_file(runtime.exit_dir, c.id).write_text("0")
    started = time.monotonic()
    await runtime.remove_leftovers(c)
    assert time.monotonic() - started < 1
    assert not conmon.exit_file(runtime.exit_dir, c.id).exists()
    await runtime.remove_leftovers(c)  # again: nothing left, no pid file needed
    conmon.conmon_pid_file(c).unlink()
    await runtime.remove_leftovers(c)
