"""pycri.procs: start times that tell a recorded pid's process from a later one with its number; the boot ID."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from pycri.host import boot
from pycri.procs import same_process, start_time


def test_start_time_is_field_22_of_stat() -> None:
    fields = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    assert start_time(os.getpid()) == int(fields[19]) > 0


def test_start_time_of_a_process_named_with_parentheses_and_spaces(tmp_path: Path) -> None:
    program = tmp_path / "odd ) name ("
    program.symlink_to("/bin/sleep")
    proc = subprocess.Popen([str(program), "100"])
    try:
        deadline = time.monotonic() + 5
        while "odd" not in Path(f"/proc/{proc.pid}/comm").read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert start_time(proc.pid) >= start_time(os.getpid()) > 0
    finally:
        proc.kill()
        proc.wait()


def test_gone_and_zombie_processes_have_no_start_time() -> None:
    proc = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert start_time(proc.pid) == 0, "a zombie has exited"
    proc.wait()
    assert start_time(proc.pid) == 0
    assert start_time(0) == start_time(-1) == 0


def test_same_process() -> None:
    me = start_time(os.getpid())
    assert same_process(os.getpid(), me)
    assert not same_process(os.getpid(), me + 1), "the pid names a process that started at another time"
    assert same_process(os.getpid(), 0), "no start time recorded: the pid alone"
    assert not same_process(0, 0)


def test_boot_id(tmp_path: Path) -> None:
    assert len(boot.boot_id()) == 36
    assert boot.boot_id() == boot.boot_id()
    fake = tmp_path / "boot_id"
    fake.write_text("another-boot\n")
    assert boot.boot_id(fake) == "another-boot"
    assert boot.boot_id(tmp_path / "missing") == ""
