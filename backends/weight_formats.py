"""Packed storage formats of conv2d / linear weights for the C backend (pure numpy).

A layer's weights reach the kernels as a matrix W [N, K]: one row per output channel, the K
weights of a row in the order the kernel reads them (tinyc.backends.c_ops_packed fixes that
order per kernel). This module encodes such a matrix in the formats below, measures each
(every byte the firmware stores for it: index streams, counts, codebooks) and decodes it
back (`Encoded.decode`, the exact semantics of the C kernels, used by the tests).

Value kinds (how one weight value is stored):

- `f32`: float32 (float graphs).
- `i8`, `i4`, `i2`: integer codes as two's complement fields of 8, 4 or 2 bits (int8 graphs;
  i4 needs every code in [-8, 7], i2 in [-2, 1]).
- `lut`: a b-bit index (b in 1, 2, 4, 8) into a codebook of the layer's distinct values, one
  codebook per layer `[k]` or per output channel `[N, k]` (float32 or int8 entries). It is
  derived from the values, so a `decode(indices, codebook)` weight of share-weights, a
  low-bit weight or any layer with few distinct values gets one; share-weights' 3-bit
  indices are stored in 4 bits.

Layouts:

- `dense`: the backend's ordinary kernels (f32 rows; int8 rows padded to a multiple of 4).
- `dense_lut` (b <= 4 for int8, <= 8 for float): every index, packed. int8 rows are whole
  32-bit words of chunks of 4 weights (w0, w1, w2, w3), each chunk's fields in the order
  idx(w0), idx(w2), idx(w1), idx(w3) (LSB first): the low 2b bits of a chunk select the pair
  (w0, w2), the high 2b bits the pair (w1, w3), the two int16 halves an SMLAD multiplies
  with the expanded input (a table of all 2^2b pairs turns one field into both values).
  Float rows: b-bit fields LSB first, each row starting on a byte.
- `dense_i4`, `dense_i2` (int8): 32-bit words of 8 (16) codes; byte j of a word holds code j
  of every chunk of 4: i4 `(w[j] & 15) | (w[4 + j] << 4)`, i2 bits 2c..2c+1 = w[4c + j]. The
  kernel isolates a field at the top of each byte with one AND (after a shift) and SXTB16
  sign-extends two of them: the products are 16 (64) times too large and the sum is shifted
  back (exact: every term is a multiple).
- `entries` (sparse): per row, one entry per non-zero weight in column order, each a
  (gap, value) pair: gap = columns skipped since the previous entry. A value field of b <= 4
  bits shares a byte with an (8 - b)-bit gap (low bits); 8-bit values make 2-byte entries
  (gap byte, value byte); f32 entries are a gap byte plus a float in a separate array. A gap
  longer than the field holds is bridged by filler entries of value zero (the lut gets a 0
  entry). `counts[r]` = entries of row r (uint8, or uint16 if a row has more than 255).
  Split variant for 8-bit and f32 values: 4-bit gaps, two per byte (low nibble first), each
  row's gaps starting on a byte, and the values in a stream of their own (`vals`, int8 or
  float): 12 bits an int8 entry instead of 16, at the price of more fillers.
- `bitmap` (sparse): per row ceil(K / 8) bytes, bit c % 8 of byte c // 8 set for a non-zero
  weight; the non-zero values follow in one stream of b-bit fields (LSB first) or floats.

`choose` picks the smallest (a packed format must save enough over dense to pay for its
kernel, see Policy). Everything is deterministic: a pure function of W.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LUT_BITS = (1, 2, 3, 4, 5, 6, 7, 8)
# Raw two's complement codes of any width 2..8 (i4 / i2 also have the dense_i4 / dense_i2 layouts).
RAW_BITS = {f"i{b}": b for b in range(8, 1, -1)}
RAW_RANGE = {k: (-(1 << (b - 1)), (1 << (b - 1)) - 1) for k, b in RAW_BITS.items()}
# Scaled accumulation of dense_i4 / dense_i2 (products are 16x / 64x the code products).
RAW_SCALE_SHIFT = {"i4": 4, "i2": 6}
# Bytes after a field stream (dense_bits, stream): the kernels read every field through a 32-bit
# window starting at one of its bytes, so the last window may reach 3 bytes past the data.
STREAM_PAD = 3
# stream entries: gap bits tried (an entry is gap + value bits, at most 16)
STREAM_GAP_BITS = tuple(range(1, 9))


def lut_bits(k: int) -> int:
    """Index bits for a codebook of k entries: ceil(log2 k), at least 1."""
    for b in LUT_BITS:
        if k <= 2 ** b:
            return b
    raise ValueError(f"a codebook of {k} entries needs more than 8 index bits")


# ---- bit packing -------------------------------------------------------------------------

def pack_fields(fields: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned `bits`-bit fields (1 to 16), LSB first, into a bit stream of bytes (the last
    byte zero-padded): field i occupies bits i*bits .. i*bits + bits - 1."""
    f = np.asarray(fields, np.int64).ravel() & ((1 << bits) - 1)
    if bits == 8:
        return f.astype(np.uint8)
    bitarr = ((f[:, None] >> np.arange(bits, dtype=np.int64)) & 1).astype(np.uint8).ravel()
    return np.packbits(bitarr, bitorder="little")


def unpack_fields(data: np.ndarray, bits: int, count: int, offset: int = 0) -> np.ndarray:
    """`count` unsigned fields from bit `offset * bits` of the packed bytes."""
    b = np.unpackbits(np.asarray(data, np.uint8), bitorder="little")
    sel = b[offset * bits:(offset + count) * bits].astype(np.int64).reshape(count, bits)
    return (sel << np.arange(bits, dtype=np.int64)).sum(axis=1)


def signed(fields: np.ndarray, bits: int) -> np.ndarray:
    """Two's complement `bits`-bit fields to int64."""
    f = np.asarray(fields, np.int64)
    return np.where(f >= 1 << (bits - 1), f - (1 << bits), f)


# ---- value kinds ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Values:
    """How the weight values are stored: kind f32 / i8 / i4 / i2 / lut."""

    kind: str
    bits: int                                  # field bits (32 for f32)
    codebook: np.ndarray | None = field(default=None, compare=False)   # lut: [k] or [N, k]
    per_channel: bool = False

    @property
    def lut(self) -> bool:
        return self.kind == "lut"

    def describe(self) -> str:
        if self.lut:
            k = self.codebook.shape[-1]
            per = f"x {self.codebook.shape[0]} per-channel " if self.per_channel else ""
            return f"{self.bits}-bit lut ({k} {per}entries)"
        return self.kind

    def fields(self, w2d: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The stored field of W[rows, cols] (unsigned for raw ints, the index for lut)."""
        v = w2d[rows, cols]
        if self.kind == "f32":
            return np.asarray(v, np.float32)
        if not self.lut:
            return np.asarray(v, np.int64) & ((1 << self.bits) - 1)
        if self.per_channel:
            rows = np.asarray(rows, np.int64).ravel()
            flat = np.asarray(v).ravel()
            # rows are sorted ascending: the index is the count of entries below the value
            idx = (self.codebook[rows] < flat[:, None]).sum(axis=1)
            return idx.astype(np.int64).reshape(np.shape(v))
        return _index(self.codebook, v)

    def value(self, fields: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Decoded values of stored fields (inverse of `fields`)."""
        if self.kind == "f32":
            return np.asarray(fields, np.float32)
        if not self.lut:
            return signed(fields, self.bits)
        if self.per_channel:
            return self.codebook[np.asarray(rows, np.int64), np.asarray(fields, np.int64)]
        return self.codebook[np.asarray(fields, np.int64)]

    @property
    def codebook_bytes(self) -> int:
        return 0 if self.codebook is None else int(self.codebook.nbytes)


def _index(book: np.ndarray, v) -> np.ndarray:
    """Positions of the values v in the sorted unique codebook `book` (every v is present)."""
    idx = np.searchsorted(book, v)
    return np.asarray(idx, np.int64)


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    u = np.unique(a)
    if u.dtype.kind == "f":           # one 0.0 for +-0, no NaN weights in practice
        u = u[~np.isnan(u)]
    return u


def lut_values(w2d: np.ndarray, per_channel: bool, pad_to_pow2: bool = False) -> Values | None:
    """A lut of the distinct values of W (sorted), per layer or per channel; None if more than
    256 distinct values. Unused entries (per-channel rows with fewer values; a per-layer
    codebook padded to 2^b entries for the int8 pair table, `pad_to_pow2`) repeat the last
    value, so every row stays sorted."""
    dtype = np.float32 if w2d.dtype.kind == "f" else np.int8
    if per_channel:
        books = [_sorted_unique(r) for r in w2d]
        k = max((len(b) for b in books), default=1)
        if k > 256:
            return None
        b = lut_bits(k)
        width = 2 ** b if pad_to_pow2 else max(k, 1)
        cb = np.zeros((w2d.shape[0], width), dtype)
        for i, book in enumerate(books):
            cb[i, :len(book)] = book
        # searchsorted needs each row sorted: pad with the row's last value instead of 0
        for i, book in enumerate(books):
            if len(book):
                cb[i, len(book):] = book[-1]
        return Values("lut", b, cb, True)
    book = _sorted_unique(w2d)
    if len(book) > 256:
        return None
    b = lut_bits(max(len(book), 1))
    width = 2 ** b if pad_to_pow2 and b <= 4 else max(len(book), 1)
    cb = np.zeros(width, dtype)
    cb[:len(book)] = book
    if len(book):
        cb[len(book):] = book[-1]
    return Values("lut", b, cb, False)


def raw_values(w2d: np.ndarray, kind: str) -> Values | None:
    """f32, or integer codes as `kind` if they all fit its range."""
    if kind == "f32":
        return Values("f32", 32) if w2d.dtype.kind == "f" else None
    if w2d.dtype.kind == "f":
        return None
    lo, hi = RAW_RANGE[kind]
    if w2d.size and (w2d.min() < lo or w2d.max() > hi):
        return None
    return Values(kind, RAW_BITS[kind])


# ---- encoded weights -------------------------------------------------------------------------

@dataclass
class Encoded:
    """A weight matrix in one format: the arrays the C kernels read, and their total bytes."""

    layout: str                     # dense / dense_lut / dense_i4 / dense_i2 / dense_bits / entries / stream / bitmap
    values: Values
    shape: tuple[int, int]          # (N, K)
    arrays: dict[str, np.ndarray]   # "w" (packed stream), "vals" (f32 values), "counts", "cb"
    gap_bits: int = 0               # entries, stream
    row_bytes: int = 0              # dense layouts: bytes per row
    nnz: int = 0
    entries: int = 0                # entries / stream layouts: stored entries (fillers included)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()))

    @property
    def split(self) -> bool:
        """entries with 4-bit gaps apart from 8-bit / f32 values"""
        return self.layout == "entries" and self.gap_bits == 4 and self.values.kind in ("i8", "f32")

    @property
    def sparse(self) -> bool:
        return self.layout in ("entries", "stream", "bitmap")

    @property
    def groups_per_row(self) -> int:
        """dense_bits: groups of 8 fields per row (each `bits` bytes)."""
        return -(-self.shape[1] // 8)

    def describe(self) -> str:
        n, k = self.shape
        text = f"{self.layout} {self.values.describe()}"
        if self.layout in ("entries", "stream"):
            text += f", {self.gap_bits}-bit gaps, {self.entries} entries for {self.nnz} non-zeros"
        elif self.layout == "bitmap":
            text += f", {self.nnz} non-zeros"
        return text + f": {self.nbytes} bytes for {n}x{k} weights"

    # -- reference decoder: the kernels' semantics
    def decode(self) -> np.ndarray:
        n, k = self.shape
        dtype = np.float32 if self.values.kind == "f32" or (self.values.lut and
                                                            self.values.codebook.dtype.kind == "f") else np.int64
        out = np.zeros((n, k), dtype)
        v = self.values
        if self.layout == "dense":
            return self.arrays["w"].reshape(n, -1)[:, :k].astype(dtype)
        if self.layout == "dense_lut" and self.values.codebook.dtype.kind == "f":
            for r in range(n):
                f = unpack_fields(self.arrays["w"][r * self.row_bytes:(r + 1) * self.row_bytes], v.bits, k)
                out[r] = v.value(f, np.full(k, r))
            return out
        if self.layout == "dense_bits":
            rb = self.row_bytes
            for r in range(n):
                f = unpack_fields(self.arrays["w"][r * rb:(r + 1) * rb], v.bits, k)
                out[r] = v.value(f, np.full(k, r))
            return out
        if self.layout == "stream":
            counts = self.arrays["counts"].astype(np.int64)
            g, nb = self.gap_bits, self.gap_bits + v.bits
            pos = 0
            for r in range(n):
                c = int(counts[r])
                f = unpack_fields(self.arrays["w"][pos:pos + -(-c * nb // 8)], nb, c)
                pos += -(-c * nb // 8)
                cols = np.cumsum(f & ((1 << g) - 1)) - 1
                out[r, cols] = v.value(f >> g, np.full(c, r))
            return out
        if self.layout in ("dense_lut", "dense_i4", "dense_i2"):
            words = self.arrays["w"].view("<u4").reshape(n, -1)
            for r in range(n):
                out[r] = _dense_word_row(words[r], self.layout, v, r)[:k]
            return out
        w = self.arrays["w"]
        if self.layout == "entries":
            counts = self.arrays["counts"].astype(np.int64)
            g = self.gap_bits
            e = 0
            fpos = 0
            gbyte = 0
            for r in range(n):
                col = 0
                for i in range(int(counts[r])):
                    if self.split:          # row-aligned gap nibbles, the values apart
                        gap = (int(w[gbyte]) >> (4 * (i & 1))) & 15
                        gbyte += i & 1
                        val = self.arrays["vals"][fpos]
                        fpos += 1
                    elif v.kind == "f32":
                        gap, val = int(w[e]), self.arrays["vals"][fpos]
                        fpos += 1
                    elif g + v.bits == 8:
                        byte = int(w[e])
                        gap, fld = byte & ((1 << g) - 1), byte >> g
                        val = v.value(np.array([fld]), np.array([r]))[0]
                    else:
                        gap, fld = int(w[2 * e]), int(w[2 * e + 1])
                        val = v.value(np.array([fld]), np.array([r]))[0]
                    e += 1
                    col += gap
                    out[r, col] = val
                    col += 1
                if self.split and counts[r] & 1:
                    gbyte += 1
            return out
        # bitmap
        rb = -(-k // 8)
        bits = np.unpackbits(w[:n * rb].reshape(n, rb), axis=1, bitorder="little")[:, :k].astype(bool)
        rows, cols = np.nonzero(bits)
        if v.kind == "f32":
            vals = self.arrays["vals"][:len(rows)]
        else:
            vals = v.value(unpack_fields(w[n * rb:], v.bits, len(rows)), rows)
        out[rows, cols] = vals
        return out


def _dense_word_row(words: np.ndarray, layout: str, v: Values, r: int) -> np.ndarray:
    """Decode one row of 32-bit words of a dense int8 packed layout."""
    out = []
    for u in (int(x) for x in words):
        if layout == "dense_i4":
            nib = [(u >> (8 * j + 4 * h)) & 15 for h in (0, 1) for j in range(4)]
            out += [x - 16 if x >= 8 else x for x in nib]
        elif layout == "dense_i2":
            crumbs = [(u >> (8 * j + 2 * c)) & 3 for c in range(4) for j in range(4)]
            out += [x - 4 if x >= 2 else x for x in crumbs]
        else:
            b = v.bits
            for c in range(32 // (4 * b)):
                f = [(u >> (c * 4 * b + i * b)) & ((1 << b) - 1) for i in range(4)]   # w0, w2, w1, w3
                idx = [f[0], f[2], f[1], f[3]]
                out += list(v.value(np.array(idx), np.full(4, r)))
    return np.array(out)


# ---- encoders ----------------------------------------------------------------------------------

def pad_cols(w2d: np.ndarray, multiple: int) -> np.ndarray:
    n, k = w2d.shape
    kp = -(-max(k, 1) // multiple) * multiple
    out = np.zeros((n, kp), w2d.dtype)
    out[:, :k] = w2d
    return out


def encode_dense(w2d: np.ndarray) -> Encoded:
    """The ordinary dense storage (its size is what a packed format must beat)."""
    if w2d.dtype.kind == "f":
        a = np.asarray(w2d, np.float32)
        return Encoded("dense", Values("f32", 32), w2d.shape, {"w": a.ravel()}, row_bytes=4 * w2d.shape[1])
    a = pad_cols(w2d.astype(np.int8), 4)
    return Encoded("dense", Values("i8", 8), w2d.shape, {"w": a.ravel()}, row_bytes=a.shape[1])


def encode_dense_words(w2d: np.ndarray, layout: str, v: Values) -> Encoded:
    """dense_lut (int8 codebook), dense_i4 or dense_i2: rows of 32-bit words."""
    n, k = w2d.shape
    if layout == "dense_i4":
        per_word = 8
    elif layout == "dense_i2":
        per_word = 16
    else:
        per_word = 32 // v.bits
    wp = pad_cols(w2d, per_word)
    rows = np.repeat(np.arange(n), wp.shape[1]).reshape(wp.shape)
    cols = np.tile(np.arange(wp.shape[1]), (n, 1))
    if v.lut:
        # padding columns take index 0 (the kernel's padded inputs are zero)
        f = np.zeros(wp.shape, np.int64)
        f[:, :k] = v.fields(w2d, rows[:, :k], cols[:, :k])
    else:
        f = wp.astype(np.int64) & ((1 << v.bits) - 1)
    words_per_row = wp.shape[1] // per_word
    g = f.reshape(n, words_per_row, per_word)
    if layout == "dense_i4":
        # byte j = w[j] | w[4 + j] << 4
        byte = g[:, :, 0:4] | (g[:, :, 4:8] << 4)
    elif layout == "dense_i2":
        byte = sum(g[:, :, 4 * c:4 * c + 4] << (2 * c) for c in range(4))
    else:
        b = v.bits
        chunks = g.reshape(n, words_per_row, per_word // 4, 4)
        order = chunks[..., [0, 2, 1, 3]]            # idx(w0), idx(w2), idx(w1), idx(w3)
        shifts = (np.arange(per_word // 4)[:, None] * 4 * b + np.arange(4)[None, :] * b)
        u = (order << shifts).sum(axis=(2, 3))
        byte = np.stack([(u >> (8 * j)) & 0xFF for j in range(4)], axis=-1)
    data = byte.astype(np.uint8).reshape(-1)
    arrays = {"w": data}
    if v.lut:
        arrays["cb"] = v.codebook.ravel()
    return Encoded(layout, v, (n, k), arrays, row_bytes=4 * words_per_row)


def encode_dense_lut_float(w2d: np.ndarray, v: Values) -> Encoded:
    """Float dense_lut: b-bit indices LSB first, each row starting on a byte."""
    n, k = w2d.shape
    rows = np.repeat(np.arange(n), k).reshape(n, k)
    cols = np.tile(np.arange(k), (n, 1))
    f = v.fields(w2d, rows, cols)
    rb = -(-k * v.bits // 8)
    data = np.concatenate([pack_fields(f[r], v.bits) for r in range(n)]) if n else np.zeros(0, np.uint8)
    return Encoded("dense_lut", v, (n, k), {"w": data.astype(np.uint8), "cb": v.codebook.ravel()}, row_bytes=rb)


def encode_dense_bits(w2d: np.ndarray, v: Values) -> Encoded:
    """dense_bits (int8): every weight a b-bit field (a codebook index or a two's complement
    code, any b in 1..8), LSB first; each row padded to a multiple of 8 fields (index 0 / code
    0; the kernels' padded inputs are zero), so a row is ceil(K / 8) groups of b bytes and
    starts on a byte; STREAM_PAD zero bytes after the last row."""
    n, k = w2d.shape
    kp8 = 8 * -(-max(k, 1) // 8)
    f = np.zeros((n, kp8), np.int64)
    rows = np.repeat(np.arange(n), k).reshape(n, k)
    cols = np.tile(np.arange(k), (n, 1))
    if k:
        f[:, :k] = v.fields(w2d, rows, cols)
    f &= (1 << v.bits) - 1
    data = np.concatenate([pack_fields(f.ravel(), v.bits), np.zeros(STREAM_PAD, np.uint8)])
    arrays = {"w": data.astype(np.uint8)}
    if v.lut:
        arrays["cb"] = v.codebook.ravel()
    return Encoded("dense_bits", v, (n, k), arrays, row_bytes=v.bits * kp8 // 8)


def _zero_fields(w2d: np.ndarray, v: Values) -> np.ndarray | None:
    """Per row, the field of a zero weight (fillers), -1 where the row's codebook has no 0."""
    n = w2d.shape[0]
    if not v.lut:
        return np.zeros(n, np.int64)
    book = v.codebook if v.per_channel else np.broadcast_to(v.codebook, (n, v.codebook.shape[-1]))
    has = (book == 0)
    return np.where(has.any(axis=1), has.argmax(axis=1), -1)


def stream_steps(w2d: np.ndarray) -> list[np.ndarray]:
    """Per row, the column steps to each non-zero weight from the previous one (from column -1)."""
    out = []
    for r in range(w2d.shape[0]):
        cols = np.flatnonzero(w2d[r] != 0)
        out.append(np.diff(np.concatenate([[-1], cols])))
    return out


def stream_bytes(steps: list[np.ndarray], bits: int, g: int, zero: np.ndarray) -> int | None:
    """Bytes of the stream layout with g-bit steps (None if a filler needs a missing zero)."""
    total = 0
    for r, d in enumerate(steps):
        fill = int(((d - 1) // ((1 << g) - 1)).sum())
        if fill and zero[r] < 0:
            return None
        total += -(-(len(d) + fill) * (g + bits) // 8)
    return total


def encode_stream(w2d: np.ndarray, v: Values, gap_bits: int | None = None) -> Encoded | None:
    """stream (int8, sparse): per row counts[r] entries of n = g + b bits, LSB first, the row
    starting on a byte: the step in the low g bits (columns from the previous entry, from column
    -1 at the row start: the kernel adds it to its column and reads the input there, one add and
    one load), the value field (b-bit codebook index or two's complement code) above it; steps
    over 2^g - 1 are bridged by fillers (step 2^g - 1, value zero). `gap_bits` (g) None: the g
    in STREAM_GAP_BITS giving the fewest bytes. None if fillers are needed and the codebook
    has no zero."""
    n, k = w2d.shape
    steps = stream_steps(w2d)
    zero = _zero_fields(w2d, v)
    if gap_bits is None:
        sizes = [(stream_bytes(steps, v.bits, g, zero), g) for g in STREAM_GAP_BITS if g + v.bits <= 16]
        sizes = [(b, g) for b, g in sizes if b is not None]
        if not sizes:
            return None
        gap_bits = min(sizes)[1]
    g = gap_bits
    gmax = (1 << g) - 1
    rows, counts, nnz, entries = [], [], 0, 0
    for r in range(n):
        cols = np.flatnonzero(w2d[r] != 0)
        nnz += len(cols)
        vals = v.fields(w2d, np.full(len(cols), r), cols) if len(cols) else np.zeros(0, np.int64)
        fields = []
        for d, f in zip(steps[r].tolist(), np.asarray(vals, np.int64).tolist()):
            while d > gmax:
                if zero[r] < 0:
                    return None
                fields.append(gmax | (int(zero[r]) << g))
                d -= gmax
            fields.append(d | ((f & ((1 << v.bits) - 1)) << g))
        counts.append(len(fields))
        entries += len(fields)
        rows.append(pack_fields(np.array(fields, np.int64), g + v.bits) if fields else np.zeros(0, np.uint8))
    counts = np.array(counts, np.int64)
    data = np.concatenate(rows + [np.zeros(STREAM_PAD, np.uint8)]).astype(np.uint8)
    arrays = {"w": data, "counts": counts.astype(np.uint8 if counts.max(initial=0) <= 255 else np.uint16)}
    if v.lut:
        arrays["cb"] = v.codebook.ravel()
    return Encoded("stream", v, (n, k), arrays, gap_bits=g, nnz=nnz, entries=entries)


def entry_gap_bits(v: Values) -> int:
    return 8 - v.bits if v.bits < 8 else 8


def encode_entries(w2d: np.ndarray, v: Values, gap_bits: int | None = None) -> Encoded | None:
    """Sparse (gap, value) entries, fillers of value zero bridging long gaps; None if a filler
    is needed and the value kind cannot store a zero (a lut without a 0 entry). gap_bits=4
    with 8-bit or f32 values: the split variant."""
    n, k = w2d.shape
    g = gap_bits or entry_gap_bits(v)
    split = g == 4 and v.kind in ("i8", "f32")
    if g != entry_gap_bits(v) and not split:
        raise ValueError(f"{g}-bit gaps do not go with {v.bits}-bit values")
    gmax = (1 << g) - 1
    zero_field = None
    if v.lut:
        book = v.codebook
        if v.per_channel:
            zero_rows = [np.flatnonzero(book[r] == 0) for r in range(n)]
        else:
            z = np.flatnonzero(book == 0)
    gaps, fields, counts, fvals = [], [], [], []
    nnz = 0
    for r in range(n):
        cols = np.flatnonzero(w2d[r] != 0)
        nnz += len(cols)
        prev, count = -1, 0
        row_fields = v.fields(w2d, np.full(len(cols), r), cols) if len(cols) else np.zeros(0)
        for c, f in zip(cols, row_fields):
            d = int(c) - prev - 1
            while d > gmax:
                if v.lut:
                    zr = zero_rows[r] if v.per_channel else z
                    if not len(zr):
                        return None
                    zero_field = int(zr[0])
                else:
                    zero_field = 0
                gaps.append(gmax)
                fields.append(zero_field)
                count += 1
                d -= gmax + 1
            gaps.append(d)
            fields.append(f)
            count += 1
            prev = int(c)
        counts.append(count)
    gaps = np.array(gaps, np.int64)
    counts = np.array(counts, np.int64)
    cdtype = np.uint8 if counts.max(initial=0) <= 255 else np.uint16
    arrays: dict[str, np.ndarray] = {}
    if split:
        rows, start = [], 0
        for c in counts:
            rows.append(pack_fields(gaps[start:start + c], 4))
            start += c
        arrays["w"] = np.concatenate(rows).astype(np.uint8) if rows else np.zeros(0, np.uint8)
        arrays["vals"] = np.array(fields, np.float32) if v.kind == "f32" else \
            (np.array(fields, np.int64) & 0xFF).astype(np.uint8).view(np.int8)
    elif v.kind == "f32":
        arrays["w"] = gaps.astype(np.uint8)
        arrays["vals"] = np.array(fields, np.float32)
    elif g + v.bits == 8:
        arrays["w"] = (gaps | (np.array(fields, np.int64) << g)).astype(np.uint8)
    else:
        arrays["w"] = np.stack([gaps, np.array(fields, np.int64) & 0xFF], axis=1).astype(np.uint8).ravel()
    arrays["counts"] = counts.astype(cdtype)
    if v.lut:
        arrays["cb"] = v.codebook.ravel()
    return Encoded("entries", v, (n, k), arrays, gap_bits=g, nnz=nnz, entries=len(gaps))


def encode_bitmap(w2d: np.ndarray, v: Values) -> Encoded:
    n, k = w2d.shape
    mask = w2d != 0
    rb = -(-k // 8)
    pm = np.zeros((n, rb * 8), bool)
    pm[:, :k] = mask
    bitmap = np.packbits(pm, axis=1, bitorder="little").ravel() if n else np.zeros(0, np.uint8)
    rows, cols = np.nonzero(mask)
    arrays: dict[str, np.ndarray] = {}
    if v.kind == "f32":
        arrays["w"] = bitmap.astype(np.uint8)
        arrays["vals"] = np.asarray(w2d[rows, cols], np.float32)
    else:
        f = v.fields(w2d, rows, cols) if len(rows) else np.zeros(0, np.int64)
        arrays["w"] = np.concatenate([bitmap, pack_fields(f, v.bits)]).astype(np.uint8)
    if v.lut:
        arrays["cb"] = v.codebook.ravel()
    return Encoded("bitmap", v, (n, k), arrays, nnz=len(rows))


# ---- choice -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Policy:
    """A packed format replaces dense storage when it saves at least `min_saving` bytes and
    the fraction `min_ratio` of the dense bytes: its kernel costs code (a few hundred bytes,
    shared by the layers using it) and, for dense packed formats, some speed. A sparse layout
    must also be `sparse_gain` smaller than the best dense layout (plain or packed): sparse
    kernels decode every stored weight, so on a mostly dense layer a small saving (often just
    a dense layout's row padding) would cost much time."""

    min_saving: int = 64
    min_ratio: float = 1 / 8
    sparse_gain: float = 1 / 4
    # int8 sparse layers, a per-kernel cost model (Cortex-M4 instructions, measured with
    # bench.packed_kernels on 784-300-100-10 and LeNet-5 shapes): per stored entry (fillers
    # included), and the int8 dense kernel per weight. A sparse format estimated slower than int8
    # dense is taken only if no sparse format is estimated as fast. stream's unrolled kernel costs
    # about `stream_code` more flash per layer than entries', counted when comparing them.
    cost_entries: float = 9.5
    cost_stream: float = 7.3
    cost_bitmap_nnz: float = 12.0
    cost_dense: float = 1.6
    stream_code: int = 250
    cost_dense_packed: float = 4.0      # dense_bits / dense_lut / dense_i4 / dense_i2, per weight
    # at this sparsity and above, only formats estimated no slower than int8 dense are taken
    fast_sparsity: float = 0.8


def candidates(w2d: np.ndarray, int8: bool) -> list[Encoded]:
    """Every packed encoding that applies to W, in a fixed order (ties go to the first)."""
    out: list[Encoded] = []
    n, k = w2d.shape
    dense_bits = 8 if int8 else 32
    nnz = int(np.count_nonzero(w2d))
    luts = [v for v in (lut_values(w2d, False, pad_to_pow2=int8), lut_values(w2d, True)) if v is not None]
    if int8:        # an 8-bit index is no smaller than an int8 code
        luts = [v for v in luts if v.bits <= 7]
        fits = [v for v in (raw_values(w2d, kind) for kind in RAW_BITS) if v is not None]
        raws = fits[:1] + fits[-1:] if fits[-1].bits < 8 else fits[:1]     # i8, and the narrowest that fits
    else:
        raws = [Values("f32", 32)]
    # dense packed
    if int8:
        for kind, layout in (("i4", "dense_i4"), ("i2", "dense_i2")):
            v = raw_values(w2d, kind)
            if v is not None:
                out.append(encode_dense_words(w2d, layout, v))
        for v in luts:
            if v.bits in (1, 2, 4):
                out.append(encode_dense_words(w2d, "dense_lut", v))
        for v in raws[1:] + luts:
            out.append(encode_dense_bits(w2d, v))
    else:
        for v in luts:
            out.append(encode_dense_lut_float(w2d, v))
    # sparse: only when the non-zeros alone are fewer bits than dense
    dense_bytes = n * k * dense_bits / 8
    for v in raws + luts:
        if nnz * v.bits / 8 >= dense_bytes:
            continue
        if int8:
            e = encode_stream(w2d, v)
            if e is not None:
                out.append(e)
        if nnz * max(v.bits, 8) / 8 < dense_bytes and (not int8 or v.bits in (1, 2, 4, 8)):
            e = encode_entries(w2d, v)
            if e is not None:
                out.append(e)
            if v.kind in ("i8", "f32"):
                e = encode_entries(w2d, v, gap_bits=4)
                if e is not None:
                    out.append(e)
        if n * (-(-k // 8)) + nnz * v.bits / 8 < dense_bytes:
            out.append(encode_bitmap(w2d, v))
    return out


def label(e: Encoded | None, int8: bool = True) -> str:
    """A short name of a format for reports: "codebook-5bit packed", "sparse 4-bit steps +
    int8", "int8 dense" (None: the dense arrays)."""
    if e is None:
        return "int8 dense" if int8 else "float32 dense"
    v = e.values
    val = (f"codebook-{v.bits}bit" + (" per-channel" if v.per_channel else "")) if v.lut else \
        ("float32" if v.kind == "f32" else f"int{v.bits}")
    if e.layout in ("dense_lut", "dense_i4", "dense_i2", "dense_bits"):
        return f"{val} packed"
    if e.layout == "stream":
        return f"sparse {e.gap_bits}-bit steps + {val}"
    if e.layout == "entries":
        return f"sparse entries {e.gap_bits}-bit gaps + {val}"
    if e.layout == "bitmap":
        return f"sparse bitmap + {val}"
    return f"{e.layout} {val}"


def choose_explained(w2d: np.ndarray, int8: bool, dense_bytes: int | None = None,
                     policy: Policy = Policy()) -> tuple[Encoded | None, str]:
    """`choose`, and why, naming the sizes: the chosen format against the dense arrays and the
    runner-up, or why the dense arrays stay."""
    if dense_bytes is None:
        dense_bytes = encode_dense(w2d).nbytes
    cands = candidates(w2d, int8)
    dense_name = label(None, int8)
    if not cands:
        distinct = len(np.unique(w2d))
        return None, (f"{dense_name}: no packed format applies ({distinct} distinct values, "
                      f"{np.count_nonzero(w2d == 0) / max(w2d.size, 1):.0%} zeros)")
    best_dense = min([e.nbytes for e in cands if not e.sparse] + [dense_bytes])
    smallest = min(cands, key=lambda e: e.nbytes)
    ok = [e for e in cands if not (e.sparse and e.nbytes > (1 - policy.sparse_gain) * best_dense)]
    slow: list[Encoded] = []
    if int8:
        n, k = w2d.shape
        limit = policy.cost_dense * n * k
        pruned = np.count_nonzero(w2d) <= (1 - policy.fast_sparsity) * n * k
        fast = [e for e in ok if (not e.sparse and not pruned) or estimated_cost(e, policy) <= limit]
        if pruned and not fast:
            return None, (f"{dense_name} {dense_bytes:,} B: {1 - np.count_nonzero(w2d) / (n * k):.0%} zeros, and every "
                          f"smaller format is estimated slower than {dense_name} (the smallest, {label(smallest)}, "
                          f"{smallest.nbytes:,} B)")
        if pruned or any(e.sparse for e in fast):
            slow = [e for e in ok if e not in fast]
            ok = fast
    # stable: ties keep the candidates' order; stream's larger kernel counted against entries
    ranked = sorted(ok, key=lambda e: e.nbytes + (policy.stream_code if int8 and e.layout == "stream" else 0))
    if not ranked:
        return None, (f"{dense_name} {dense_bytes:,} B: {label(smallest)} would be {smallest.nbytes:,} B, not "
                      f"{policy.sparse_gain:.0%} below the best dense layout (sparse kernels are slower per weight)")
    best = ranked[0]
    saving = dense_bytes - best.nbytes
    if saving <= 0:
        return None, (f"{dense_name} {dense_bytes:,} B: no packed format is smaller (the smallest, {label(best)}, "
                      f"would be {best.nbytes:,} B)")
    if saving < policy.min_saving or saving < policy.min_ratio * dense_bytes:
        return None, (f"{dense_name} {dense_bytes:,} B: {label(best)} would be {best.nbytes:,} B "
                      f"({dense_bytes / max(best.nbytes, 1):.2f}x smaller), under the margin that pays for its "
                      f"kernel ({policy.min_saving} B and 1/{round(1 / policy.min_ratio)} of dense)")
    why = f"{label(best)}: {best.nbytes:,} B, {dense_bytes / max(best.nbytes, 1):.2f}x smaller than {dense_name} " \
          f"({dense_bytes:,} B)"
    if len(ranked) > 1:
        nxt = ranked[1]
        why += f"; next best {label(nxt)} {nxt.nbytes:,} B ({nxt.nbytes / max(best.nbytes, 1):.2f}x larger)"
    if slow and min(e.nbytes for e in slow) < best.nbytes:
        s_ = min(slow, key=lambda e: e.nbytes)
        why += (f"; {label(s_)} ({s_.nbytes:,} B) not taken: estimated slower than {dense_name} "
                f"({estimated_cost(s_, policy):,.0f} vs {policy.cost_dense * s_.shape[0] * s_.shape[1]:,.0f} "
                "instructions)")
    elif smallest.nbytes < best.nbytes:
        why += (f"; {label(smallest)} ({smallest.nbytes:,} B) not taken: sparse, not {policy.sparse_gain:.0%} "
                "below the best dense layout")
    return best, why


def estimated_cost(e: Encoded, policy: Policy = Policy()) -> float:
    """Estimated Cortex-M4 instructions of an int8 sparse layer for one input row (Policy)."""
    n, k = e.shape
    if e.layout == "stream":
        return policy.cost_stream * e.entries
    if e.layout == "entries":
        return policy.cost_entries * e.entries
    if e.layout == "bitmap":
        return policy.cost_bitmap_nnz * e.nnz + 0.5 * n * k
    return (policy.cost_dense if e.layout == "dense" else policy.cost_dense_packed) * n * k


def choose(w2d: np.ndarray, int8: bool, dense_bytes: int | None = None,
           policy: Policy = Policy()) -> Encoded | None:
    """The smallest packed encoding of W if it beats dense storage by the policy's margin,
    else None (keep dense). `dense_bytes`: the dense storage to beat (default encode_dense).
    int8 sparse formats estimated slower than int8 dense are avoided (Policy's cost model)."""
    return choose_explained(w2d, int8, dense_bytes, policy)[0]


def encode(w2d: np.ndarray, layout: str, value_kind: str, int8: bool, per_channel: bool = False,
           gap_bits: int | None = None) -> Encoded:
    """One named format (tests, forced choices): layout in dense_lut / dense_i4 / dense_i2 /
    dense_bits / entries / stream / bitmap, value_kind in f32 / i2..i8 / lut. Raises ValueError
    if it cannot hold W."""
    if value_kind == "lut":
        v = lut_values(w2d, per_channel, pad_to_pow2=int8 and layout == "dense_lut" and not per_channel)
    else:
        v = raw_values(w2d, value_kind)
    if v is None:
        raise ValueError(f"{value_kind} values cannot hold these weights")
    if layout == "dense_lut":
        if int8:
            if v.bits > 4:
                raise ValueError("int8 dense_lut needs at most 16 distinct values")
            if v.bits == 3:         # whole chunks per word: 3-bit indices take 4 bits here
                cb = v.codebook
                if not v.per_channel:
                    cb = np.concatenate([cb, np.full(16 - cb.size, cb[-1], cb.dtype)])
                v = Values("lut", 4, cb, v.per_channel)
            return encode_dense_words(w2d, layout, v)
        return encode_dense_lut_float(w2d, v)
    if layout in ("dense_i4", "dense_i2"):
        if not int8 or v.kind != layout[-2:]:
            raise ValueError(f"{layout} stores {layout[-2:]} codes")
        return encode_dense_words(w2d, layout, v)
    if layout == "dense_bits":
        if not int8 or v.bits >= 8:
            raise ValueError("dense_bits stores int8 weights in fields of 1 to 7 bits")
        return encode_dense_bits(w2d, v)
    if layout == "stream":
        if not int8:
            raise ValueError("stream stores int8 weights")
        e = encode_stream(w2d, v, gap_bits)
        if e is None:
            raise ValueError("a long gap needs a zero filler the codebook cannot hold")
        return e
    if layout == "entries":
        e = encode_entries(w2d, v, gap_bits)
        if e is None:
            raise ValueError("a long gap needs a zero filler the codebook cannot hold")
        return e
    if layout == "bitmap":
        return encode_bitmap(w2d, v)
    raise ValueError(f"unknown layout {layout!r}")
