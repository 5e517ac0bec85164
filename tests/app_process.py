"""``python -m app`` as a real child process for the CLI and shutdown tests: flags, a
working directory (for ``.env``) and an environment of the test's choosing, on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from bench.server import wait_ready


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any POOLSERVE_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOLSERVE_")}
    return env | extra


def run_app(
    args: Sequence[str], env: Mapping[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m app ARGS`` to completion (``--help``, ``--print-settings``, bad flags)."""
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def served(
    args: Sequence[str], env: Mapping[str, str], cwd: Path, port: int
) -> Iterator[subprocess.Popen[bytes]]:
    """The server until the block exits (killed then if it still runs), once it is ready."""
    process = subprocess.Popen([sys.executable, "-m", "app", *args], env=dict(env), cwd=cwd)
    try:
        wait_ready(f"http://127.0.0.1:{port}/health/ready", process)
        yield process
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (workers and the graph builder go with it), then SIGKILL to the whole tree."""
    if process.poll() is not None:
        return
    tree = children(process.pid)
    tree += [grandchild for child in tree for grandchild in children(child)]
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        for pid in [process.pid, *tree]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=30)


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def environ_of(pid: int) -> dict[str, str]:
    """A process's environment as it is now (Linux /proc/PID/environ)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (entry.split(b"=", 1) for entry in raw.split(b"\0") if b"=" in entry)
    return {key.decode(): value.decode(errors="replace") for key, value in pairs}
