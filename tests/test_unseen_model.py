"""A model defined outside the project, saved with torch.export.save by a separate process,
goes through the CLI, and a user-style harness that includes only OUT/model.h builds it for the
host and for a Cortex-M4 with its own start-up code."""
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_close

THEIR_SCRIPT = textwrap.dedent('''
    import sys, numpy as np, torch, torch.nn as nn, torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
            self.bn = nn.BatchNorm2d(c)
            self.pw = nn.Conv2d(c, c, 1)
        def forward(self, x):
            return x + self.pw(F.relu6(self.bn(self.dw(x))))

    class TheirNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(2, 12, 3, stride=2), nn.Hardswish())
            self.block = Block(12)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                                      nn.Linear(12, 5), nn.Tanh())
        def forward(self, x):
            return self.head(self.block(self.stem(x))) * 2.0

    torch.manual_seed(7)
    net = TheirNet().eval()
    with torch.no_grad():
        net.block.bn.running_mean.uniform_(-0.5, 0.5); net.block.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 2, 20, 18)
    ep = torch.export.export(net, (x[:1],))
    torch.export.save(ep, sys.argv[1] + "/their_model.pt2")
    np.save(sys.argv[1] + "/x.npy", x.numpy())
    with torch.no_grad():
        np.save(sys.argv[1] + "/want.npy", torch.cat([net(x[i:i+1]) for i in range(3)]).numpy())
''')

APP_C = textwrap.dedent('''
    #include "model.h"
    #include <stdint.h>
    #include <string.h>
    void put(const char *s);
    static const float inputs[][model_INPUT_SIZE] = { @INPUTS@ };
    static float output[model_OUTPUT_SIZE];
    static void put_hex(uint32_t v) {
        char buf[10]; int i;
        for (i = 0; i < 8; i++) buf[i] = "0123456789abcdef"[(v >> (28 - 4 * i)) & 15u];
        buf[8] = ' '; buf[9] = 0; put(buf);
    }
    int app_main(void) {
        unsigned r, i;
        for (r = 0; r < sizeof inputs / sizeof inputs[0]; r++) {
            if (model_invoke(inputs[r], output) != 0) return 1;
            for (i = 0; i < model_OUTPUT_SIZE; i++) { uint32_t bits; memcpy(&bits, &output[i], 4); put_hex(bits); }
            put("\\n");
        }
        return 0;
    }
''')

HOST_MAIN_C = '#include <stdio.h>\nint app_main(void);\nvoid put(const char *s) { fputs(s, stdout); }\nint main(void) { return app_main(); }\n'

# Our own minimal Cortex-M4 start-up: vector table, .data/.bss init, FPU on, semihosting out.
M4_START_C = textwrap.dedent('''
    #include <stdint.h>
    extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
    int app_main(void);
    static int semihost(int op, const void *arg) {
        register int r0 __asm__("r0") = op; register const void *r1 __asm__("r1") = arg;
        __asm__ volatile ("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
        return r0;
    }
    void put(const char *s) { semihost(0x04, s); }
    void Reset_Handler(void) {
        uint32_t *src = &_sidata, *dst = &_sdata;
        while (dst < &_edata) *dst++ = *src++;
        for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
        *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20;   /* CPACR: CP10, CP11 full access */
        __asm__ volatile ("dsb\\n isb");
        { uint32_t block[2] = { 0x20026u, (uint32_t)app_main() }; semihost(0x20, block); }
        for (;;) {}
    }
    static void Fault_Handler(void) { uint32_t b[2] = { 0x20026u, 99u }; put("fault\\n"); semihost(0x20, b); for (;;) {} }
    __attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
        (void (*)(void))&_estack, Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
        Fault_Handler, Fault_Handler };
''')

M4_LD = textwrap.dedent('''
    MEMORY { FLASH (rx) : ORIGIN = 0x00000000, LENGTH = 4M
             RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 4M }
    ENTRY(Reset_Handler)
    SECTIONS {
      .text : { KEEP(*(.vectors)) *(.text*) *(.rodata*) . = ALIGN(4); } > FLASH
      .ARM.exidx : { *(.ARM.exidx*) } > FLASH
      _sidata = LOADADDR(.data);
      .data : { _sdata = .; *(.data*) . = ALIGN(4); _edata = .; } > RAM AT > FLASH
      .bss (NOLOAD) : { _sbss = .; *(.bss*) *(COMMON) . = ALIGN(4); _ebss = .; } > RAM
      _estack = ORIGIN(RAM) + LENGTH(RAM);
    }
''')


def tinyc(*args, cwd):
    result = subprocess.run([sys.executable, "-m", "tinyc", *map(str, args)], cwd=cwd,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def parse_hex_rows(text: str) -> np.ndarray:
    rows = [[struct.unpack("<f", struct.pack("<I", int(h, 16)))[0] for h in line.split()]
            for line in text.strip().splitlines()]
    return np.array(rows, np.float32)


@pytest.fixture(scope="module")
def their_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("theirs")
    subprocess.run([sys.executable, "-c", THEIR_SCRIPT, str(root)], check=True)
    return root


def write_app(root: Path, x: np.ndarray) -> Path:
    rows = ",\n".join("{" + ", ".join(f"{float(v)!r}f" for v in row.ravel()) + "}" for row in x)
    app = root / "app.c"
    app.write_text(APP_C.replace("@INPUTS@", rows))
    return app


@pytest.mark.qemu
def test_their_model_through_the_cli_on_cortex_m4(their_model):
    tinyc("compile", "their_model.pt2", "--target", "cortex-m4", "-o", "out_m4", cwd=their_model)
    tinyc("run", "out_m4", "--input", "x.npy", "-o", "got.npy", cwd=their_model)
    assert_close(np.load(their_model / "got.npy"), np.load(their_model / "want.npy"), 1e-4)


def test_user_harness_on_host(their_model, tmp_path):
    tinyc("compile", "their_model.pt2", "--target", "host", "-o", "out_host", cwd=their_model)
    out = their_model / "out_host"
    app = write_app(tmp_path, np.load(their_model / "x.npy"))
    (tmp_path / "main.c").write_text(HOST_MAIN_C)
    exe = tmp_path / "app"
    cmd = ["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-I", str(out),
           *map(str, sorted(out.glob("*.c"))), str(app), str(tmp_path / "main.c"), "-lm", "-o", str(exe)]
    subprocess.run(cmd, check=True)
    got = parse_hex_rows(subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout)
    assert_close(got, np.load(their_model / "want.npy"), 1e-4)


@pytest.mark.qemu
def test_user_harness_with_own_startup_on_cortex_m4(their_model, tmp_path):
    tinyc("compile", "their_model.pt2", "--target", "cortex-m4", "-o", "out_m4b", cwd=their_model)
    out = their_model / "out_m4b"
    app = write_app(tmp_path, np.load(their_model / "x.npy"))
    (tmp_path / "start.c").write_text(M4_START_C)
    (tmp_path / "app.ld").write_text(M4_LD)
    elf = tmp_path / "app.elf"
    cmd = ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard",
           "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-I", str(out),
           *map(str, sorted(out.glob("*.c"))), str(app), str(tmp_path / "start.c"),
           "-nostartfiles", "-T", str(tmp_path / "app.ld"), "--specs=nano.specs", "--specs=nosys.specs",
           "-lm", "-o", str(elf)]
    subprocess.run(cmd, check=True)
    qemu = ["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "none",
            "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
    result = subprocess.run(qemu, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # QEMU 7.2 writes the semihosting console (SYS_WRITE0) to its stderr
    assert_close(parse_hex_rows(result.stderr), np.load(their_model / "want.npy"), 1e-4)


def test_two_bundles_with_different_names_link_into_one_program(their_model, tmp_path):
    for name in ("alpha", "beta"):
        tinyc("compile", "their_model.pt2", "--name", name, "-o", tmp_path / name, cwd=their_model)
    (tmp_path / "both.c").write_text(
        '#include "alpha.h"\n#include "beta.h"\nstatic float x[alpha_INPUT_SIZE], a[alpha_OUTPUT_SIZE], b[beta_OUTPUT_SIZE];\n'
        'int main(void) { unsigned i; if (alpha_invoke(x, a) || beta_invoke(x, b)) return 1;\n'
        '  for (i = 0; i < alpha_OUTPUT_SIZE; i++) { if (a[i] != b[i]) return 2; }\n  return 0; }\n')
    srcs = [str(p) for name in ("alpha", "beta") for p in sorted((tmp_path / name).glob("*.c"))]
    cmd = ["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-I", str(tmp_path / "alpha"), "-I", str(tmp_path / "beta"),
           *srcs, str(tmp_path / "both.c"), "-lm", "-o", str(tmp_path / "both")]
    subprocess.run(cmd, check=True)
    assert subprocess.run([str(tmp_path / "both")]).returncode == 0


def test_their_model_imports_fuses_dumps_round_trips_and_interprets(their_model, tmp_path):
    from tinyc.interpreter import run
    from tinyc.text import parse_file
    tinyc("opt", "their_model.pt2", "-p", "fuse", "-o", tmp_path / "a.tir", cwd=their_model)
    tinyc("opt", tmp_path / "a.tir", "-o", tmp_path / "b.tir", cwd=their_model)
    assert (tmp_path / "a.tir").read_bytes() == (tmp_path / "b.tir").read_bytes()
    graph = parse_file(tmp_path / "a.tir")
    assert "batch_norm" not in [op.kind for op in graph.ops]
    x, want = np.load(their_model / "x.npy"), np.load(their_model / "want.npy")
    got = np.concatenate([run(graph, [x[i:i + 1]])[0] for i in range(len(x))])
    assert_close(got, want, 1e-5)
