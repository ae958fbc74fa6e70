"""The register-blocked int8 GEMM (tinyc_s8_conv_gemm) and fully connected kernel (tinyc_s8_fc)
under every build a user may choose: the
14-register DSP block (-O1 and up), its 13-register form for frame-pointer builds
(-DTINYC_S8_FRAME_POINTER), the plain C form (-O0, and cores without DSP), each bit-exact with the
interpreter. The shapes cover both block sizes (3 pixels x 2 channels; 4 x 1 for k <= 8), odd
channel counts, an odd number of 4-k chunks and partial pixel blocks of 1 and 2; the linear layers
a reduction of 4-chunk trips plus a rest (k = 100: 25 chunks), one of under 4 chunks and output
rows beyond the blocks of 4."""
import pytest

from test_int8_backend import assert_exact, quantize
from tinyc.frontend import from_torch

pytestmark = pytest.mark.qemu


def model():
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 5, 3, padding=1)        # k = 27: 7 chunks (odd), 5 channels (odd), 25 pixels (8 x 3 + 1)
            self.b = nn.Conv2d(5, 8, 1)                   # k = 5: 2 chunks, blocks of 4 pixels (6 x 4 + 1)
            self.c = nn.Conv2d(8, 7, (3, 2), stride=(2, 1))   # k = 48: 12 chunks, 2 x 4 = 8 pixels (2 x 3 + 2)
            self.d = nn.Conv2d(7, 6, 1)                   # k = 7: 2 chunks, 8 pixels in blocks of 4

            self.e = nn.Linear(48, 100)                   # k = 48: 12 chunks, 100 rows
            self.f = nn.Linear(100, 14)                   # k = 100: 25 chunks, 3 blocks of 4 rows + 2
            self.g = nn.Linear(14, 6)                     # k = 14: 4 chunks (padded), 1 block + 2

        def forward(self, x):
            y = torch.relu(self.b(torch.relu(self.a(x))))
            y = self.d(torch.relu(self.c(y))).flatten(1)
            return self.g(torch.relu(self.f(torch.relu(self.e(y)))))

    torch.manual_seed(3)
    return from_torch(Net().eval(), (torch.zeros(1, 3, 5, 5),), name="gemm_flags")


@pytest.fixture(scope="module")
def graph():
    g = quantize(model())
    assert len(list(g.compute_ops())) >= 4
    return g


@pytest.mark.parametrize("target, flags", [
    ("cortex-m4", ()),
    ("cortex-m4", ("-O0",)),
    ("cortex-m4", ("-Os",)),
    ("cortex-m4", ("-fno-omit-frame-pointer", "-DTINYC_S8_FRAME_POINTER")),
    ("cortex-m33", ()),
    ("cortex-m3", ()),
])
def test_gemm_is_exact_under_every_build(graph, tmp_path, target, flags):
    assert_exact(graph, tmp_path / "b", target, rows=3, extra_cflags=flags)


def test_block_sizes_follow_the_reduction():
    from tinyc.backends.c_ops_int8 import gemm_pixels
    assert [gemm_pixels(kp) for kp in (4, 8, 12, 28, 72)] == [4, 4, 3, 3, 3]
