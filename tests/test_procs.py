"""Child processes of the demo, the benchmark and the Envoy tests."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from authz.procs import Child


def _gone(pid: int) -> bool:
    """Whether a process has exited (a zombie nobody reaped counts as exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return True
    return fields[0] == "Z"


def _running(command: str, pid: int) -> bool:
    """Whether process `pid` is running `command` (and not still its launcher)."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except FileNotFoundError:
        return False
    return Path(argv0.decode()).name == command and not _gone(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
def test_a_child_dies_with_its_parent(tmp_path: Path) -> None:
    """A parent killed with SIGKILL leaves no orphan: its child gets SIGTERM and exits."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from authz.procs import Child\n"
        f"child = Child.spawn('sleeper', ['sleep', '300'], Path({str(tmp_path)!r}))\n"
        "print(child.proc.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    # The signal is armed just before the command is executed: wait for the command.
    deadline = time.monotonic() + 10
    while not _running("sleep", pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _running("sleep", pid)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid), "the child outlived its parent"


def test_a_child_runs_its_command_with_output_in_the_log(tmp_path: Path) -> None:
    """The command itself runs (whatever the prefix), its stderr in `<name>.log`."""
    child = Child.spawn(
        "echo", [sys.executable, "-c", "import sys; sys.stderr.write('hi')"], tmp_path
    )
    assert child.proc.wait(10) == 0
    assert child.tail() == "hi"
