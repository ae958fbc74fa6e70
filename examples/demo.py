"""End-to-end demo: export a PyTorch model, compile it for a Cortex-M4, run it under QEMU,
compare with PyTorch and print the benchmark figures. Run with `make demo`."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the repo root: bench/
from bench import zoo  # noqa: E402

OUT = Path("demo-out")
MODEL = "ds_cnn"  # MLPerf Tiny keyword-spotting DS-CNN, 1x49x10 input


def tinyc(*args: str) -> None:
    cmd = [sys.executable, "-m", "tinyc", *args]
    print(f"\n$ tinyc {shlex.join(args)}", flush=True)
    subprocess.run(cmd, check=True)


def main() -> int:
    OUT.mkdir(exist_ok=True)
    module, example = zoo.get(MODEL)
    archive = OUT / f"{MODEL}.pt2"
    torch.export.save(torch.export.export(module, (example,)), str(archive))
    print(f"exported {MODEL} to {archive} with torch.export.save")

    tinyc("compile", str(archive), "--target", "cortex-m4", "-o", str(OUT / "bundle"))

    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((4, *example.shape[1:])).astype(np.float32)
    np.save(OUT / "inputs.npy", inputs)
    tinyc("run", str(OUT / "bundle"), "--input", str(OUT / "inputs.npy"), "-o", str(OUT / "outputs.npy"))

    got = np.load(OUT / "outputs.npy")
    with torch.no_grad():
        want = np.concatenate([module(torch.from_numpy(row[None])).numpy() for row in inputs])
    err = np.abs(got.reshape(want.shape) - want).max()
    rel = err / max(np.abs(want).max(), 1e-30)
    print(f"\nQEMU cortex-m4 vs PyTorch on {len(inputs)} inputs: max abs error {err:.3g}, "
          f"max error relative to output range {rel:.3g}")
    ok = rel <= 1e-4
    print("MATCH" if ok else "MISMATCH")

    tinyc("bench", str(OUT / "bundle"))

    # int8: calibrate on sample inputs; the C is bit-exact with tinyc's integer interpreter.
    np.save(OUT / "calib.npy", rng.standard_normal((32, *example.shape[1:])).astype(np.float32))
    tinyc("compile", str(archive), "--target", "cortex-m4", "--calib", str(OUT / "calib.npy"), "-o", str(OUT / "bundle-int8"))
    tinyc("run", str(OUT / "bundle-int8"), "--input", str(OUT / "inputs.npy"), "-o", str(OUT / "outputs-int8.npy"))
    got8 = np.load(OUT / "outputs-int8.npy").reshape(want.shape)
    agree = float(np.mean(got8.argmax(axis=1) == want.argmax(axis=1)))
    print(f"\nint8 on QEMU vs PyTorch float: max abs error {np.abs(got8 - want).max():.3g}, "
          f"top-1 agreement {agree:.0%}")
    tinyc("bench", str(OUT / "bundle-int8"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
