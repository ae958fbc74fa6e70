"""Running a bundle: its run harness natively on the host, or under QEMU for Cortex-M.

The harness reads rows of the model's input (float32, or int32 token ids when the
bundle's inputs are i32) from ``input.bin`` and writes the rows of outputs (float32)
to ``output.bin``; the row sizes and the input dtype come from the bundle manifest.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from tinyc.backends.build import build
from tinyc.backends.manifest import read_manifest
from tinyc.backends.targets import Board, Target, resolve
from tinyc.backends.tools import QEMU, qemu_command, require_tool, run_process
from tinyc.errors import BackendError


def _as_rows(inputs: np.ndarray, in_size: int, dtype: str = "f32") -> np.ndarray:
    if dtype == "i32":
        return _token_rows(inputs, in_size)
    x = np.asarray(inputs, dtype=np.float32)
    if x.ndim == 1 and x.size == in_size:
        x = x.reshape(1, in_size)
    elif x.ndim >= 2:
        x = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))
    if x.ndim != 2 or x.shape[1] != in_size:
        raise BackendError(f"inputs have shape {np.shape(inputs)}, expected rows of {in_size} floats",
                           hint="pass an array of shape (rows, INPUT_SIZE)")
    return np.ascontiguousarray(x, dtype="<f4")


def _token_rows(inputs: np.ndarray, in_size: int) -> np.ndarray:
    """Rows of int32 token ids: integer arrays (or floats holding whole numbers) within int32."""
    x = np.asarray(inputs)
    if x.dtype.kind not in "biuf" or (x.dtype.kind == "f" and not np.array_equal(x, np.floor(x))):
        raise BackendError(f"the bundle takes int32 token ids; the inputs are {x.dtype} values"
                           + (" with fractions" if x.dtype.kind == "f" else ""),
                           hint="pass an integer array of token ids (rows of INPUT_SIZE)")
    if x.size and (x.min() < -2 ** 31 or x.max() > 2 ** 31 - 1):
        raise BackendError("token ids do not fit int32", hint="token ids index an embedding table: 0 <= id < V")
    rows = _as_rows(np.zeros(x.shape, np.float32), in_size)   # the same shape rules as float inputs
    return np.ascontiguousarray(x.reshape(rows.shape), dtype="<i4")


# The default time limit of a run: a fixed allowance plus one per row (an emulated Cortex-M runs an
# MCU-sized model in well under a quarter of a second per inference; the host in far less).
TIMEOUT_BASE_S = 60.0
TIMEOUT_PER_ROW_S = {True: 0.25, False: 0.02}     # bare metal (QEMU) / host


def default_timeout(rows: int, bare_metal: bool) -> float:
    return TIMEOUT_BASE_S + rows * TIMEOUT_PER_ROW_S[bare_metal]


def run_model(out_dir: Path | str, target: "str | Target | Board" = "host", name: str = "model",
        inputs: np.ndarray | None = None, *, timeout: float | None = None, sanitize: bool = False,
        profile: bool = False, cc: str | None = None, extra_cflags: Sequence[str] = ()) -> np.ndarray:
    """Run the model on every row of ``inputs`` on ``target`` (natively for host,
    under QEMU for Cortex-M); returns the outputs, shape (rows, OUTPUT_SIZE).
    ``timeout`` (seconds) defaults to default_timeout(rows) for the target.
    ``cc`` builds with another compiler than the target's, ``extra_cflags`` adds flags after the
    target's (see build)."""
    out = Path(out_dir).resolve()
    t, _ = resolve(target)
    if not t.can_run:
        qemu_command(t)  # raises the "no emulator" error
    if inputs is None:
        raise BackendError("run() needs inputs (rows of INPUT_SIZE float32)")
    manifest = read_manifest(out, name)
    x = _as_rows(inputs, manifest.input_size, manifest.input_dtype)
    if timeout is None:
        timeout = default_timeout(x.shape[0], t.bare_metal)
    elif not timeout > 0:
        raise BackendError(f"timeout must be a positive number of seconds, got {timeout}")
    exe = build(out, t, name, "run", profile, sanitize=sanitize, cc=cc, extra_cflags=extra_cflags)
    if t.bare_metal:
        require_tool(QEMU, t)
        cmd = qemu_command(t, exe)
        what = f"'{name}' on {t.name} (QEMU {t.qemu_machine})"
    else:
        cmd = [str(exe)]
        what = f"'{name}' on the host"
    env = None
    if sanitize:
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=0",
                   UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    with tempfile.TemporaryDirectory(prefix="tinyc-run-") as tmp:
        tmpdir = Path(tmp)
        x.tofile(tmpdir / "input.bin")
        proc = run_process(cmd, tmpdir, timeout, what, env)
        err = (proc.stderr + proc.stdout).decode(errors="replace").strip()
        if proc.returncode != 0:
            raise BackendError(f"running {what} failed with exit status {proc.returncode}",
                               where=str(exe), hint=err[-4000:] or None)
        result = tmpdir / "output.bin"
        if not result.exists():
            raise BackendError(f"running {what} wrote no output.bin", where=str(exe),
                               hint=err or None)
        y = np.fromfile(result, dtype="<f4")
    expected = x.shape[0] * manifest.output_size
    if y.size != expected:
        raise BackendError(f"running {what} produced {y.size} floats, expected {expected}",
                           where=str(exe))
    return y.reshape(x.shape[0], manifest.output_size).astype(np.float32)
