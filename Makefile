# tinyc: two commands for a fresh Debian machine.
#   make demo   compile an example model for cortex-m4, run it under QEMU, compare with PyTorch, bench it
#   make test   run the test suite
# Both install what is missing first (apt: Arm toolchain, QEMU, clang; torch 2.13.0 CPU, the package).

PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm clang
STAMP := .setup-done

.PHONY: setup test demo bench compression-docs clean fuzz

setup:
	@command -v arm-none-eabi-gcc >/dev/null && command -v qemu-system-arm >/dev/null \
	  && command -v clang >/dev/null && [ -f "$$(arm-none-eabi-gcc -print-file-name=libc.a)" ] \
	  || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); }
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q torch==2.13.0
	@# (re)install unless tinyc already imports from this checkout with its dev extras
	@$(PYTHON) -c "import os, tinyc, lark, jinja2, pytest, sklearn, filecheck, xdist, torchao, ray, mnist1d; \
	  assert os.path.samefile(os.path.dirname(tinyc.__file__), 'compiler')" 2>/dev/null \
	  || $(PYTHON) -m pip install -q -e '.[dev,ray]'

test: setup
	$(PYTHON) -m pytest -n 2 -q

demo: setup
	$(PYTHON) examples/demo.py

bench: setup
	$(PYTHON) -m bench.benchmarks --out docs/benchmarks.md

# The IR text fuzzer (tools/fuzz_ir.py) for FUZZ_SECONDS; findings land in fuzz-findings/ (exit 1 if any).
FUZZ_SECONDS ?= 300
FUZZ_SEED ?= 1
fuzz: setup
	$(PYTHON) tools/fuzz_ir.py --seconds $(FUZZ_SECONDS) --seed $(FUZZ_SEED) --corpus tests/fuzz_corpus --findings fuzz-findings

clean:
	rm -rf demo-out build .pytest_cache

compression-docs: setup
	$(PYTHON) -m bench.compression_report --out docs/compression.md
