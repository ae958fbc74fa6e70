"""The external programs the backends drive: finding them, QEMU's command line, running them.

Every other backend module that starts a program goes through here, so a missing tool or
a hanging process always gives the same kind of error: what was missing or timed out, and
which package to install.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tinyc.backends.targets import ARM_PACKAGES, Target
from tinyc.errors import BackendError

QEMU = "qemu-system-arm"


def install_hint(target: Target) -> str:
    if target.is_host:
        return "install a host C compiler: apt-get install gcc"
    return f"apt-get install {ARM_PACKAGES}"


def require_tool(exe: str, target: Target) -> str:
    """The path of ``exe``, or a BackendError naming the package to install."""
    path = shutil.which(exe)
    if path is None:
        raise BackendError(f"'{exe}' was not found on PATH (needed for target {target.name})",
                           hint=install_hint(target))
    return path


def qemu_command(target: Target, elf: Path | str | None = None) -> list[str]:
    """The QEMU command line for a target (without -kernel if elf is None)."""
    if target.qemu_machine is None:
        raise BackendError(
            f"target {target.name} has no emulator, so it can be built but not run",
            hint=target.no_emulator_reason or "build it and run it on hardware")
    cmd = [QEMU, "-M", target.qemu_machine]
    if target.qemu_cpu:
        cmd += ["-cpu", target.qemu_cpu]
    cmd += ["-nographic", "-monitor", "none", "-serial", "none",
            "-semihosting-config", "enable=on,target=native", "-icount", "shift=0"]
    if elf is not None:
        cmd += ["-kernel", str(elf)]
    return cmd


def run_process(cmd: list[str], cwd: Path, timeout: float, what: str,
                env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` with no stdin, capturing its output; a timeout is a BackendError."""
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=env)
    except subprocess.TimeoutExpired as e:
        tail = (e.stderr or b"").decode(errors="replace")[-2000:]
        raise BackendError(f"{what} did not finish within {timeout:g} s",
                           hint=("it was killed; " + tail) if tail else
                           "the model may hang, or raise timeout=") from None
