"""lit-style tests: each tests/filecheck/*.tir has `// RUN: tinyc ... | filecheck %s` lines."""
import contextlib
import io
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tinyc.cli import main as tinyc_main

CASES = sorted((Path(__file__).parent / "filecheck").glob("*.tir"))


def run_lines(path: Path) -> list[str]:
    return [line.split("RUN:", 1)[1].strip() for line in path.read_text().splitlines() if line.startswith("// RUN:")]


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_filecheck(path):
    runs = run_lines(path)
    assert runs, f"{path.name} has no RUN line"
    for run in runs:
        producer, checker = (shlex.split(part.replace("%s", str(path))) for part in run.split("|"))
        assert producer[0] == "tinyc" and checker[0] == "filecheck"
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert tinyc_main(producer[1:]) == 0
        result = subprocess.run([sys.executable, "-m", "filecheck", *checker[1:]], input=out.getvalue(),
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
