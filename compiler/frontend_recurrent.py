"""Recurrent layers: aten.gru.input / aten.lstm.input as first-class gru / lstm ops.

Lowerings of aten ops to tinyc IR (see tinyc.frontend_ops for the Builder and the conventions);
tinyc.frontend_table merges this module's LOWERINGS with the others.

nn.GRU and nn.LSTM export as one aten.gru.input / aten.lstm.input node holding every layer's
weights. Each layer becomes one `gru` / `lstm` op (both directions in one op), the next layer
reading its output sequence; dropout between layers is an identity in eval mode. The ops are
batch first: a batch_first=False input is transposed in and the output transposed back (a
reshape for a batch of 1). Initial states that are zero (nn.GRU's default, exported as
aten.zeros and folded to a constant) are left out of the op. The final hidden state h_n of a
layer is a slice of that layer's output sequence (last step forward, first step reverse); an
LSTM's c_n comes from a second lstm op of the layer with `result = "cell"` (only built when the
model uses c_n: unused ops are dropped).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from tinyc.frontend_ops import Builder, ConstRef
from tinyc.ir import Value
from tinyc.ops.recurrent import GATES


def _slice(b: Builder, x: Value, axis: int, start: int, stop: int, tag: str) -> Value:
    """x[start:stop] along axis (x itself when that is the whole dim)."""
    shape = list(x.type.shape)
    if (start, stop) == (0, shape[axis]):
        return x
    shape[axis] = stop - start
    return b.emit("slice", [x], shape, {"axis": axis, "start": start, "stop": stop, "step": 1}, tag)


def _swap01(b: Builder, x: Value, tag: str) -> Value:
    """[A, B, C] -> [B, A, C]: a reshape when A or B is 1, else a transpose."""
    a_, b_, c_ = x.type.shape
    if a_ == 1 or b_ == 1:
        return b.reshape(x, [b_, a_, c_], tag)
    return b.emit("transpose", [x], [b_, a_, c_], {"perm": [1, 0, 2]}, tag)


def _layer_state(b: Builder, s, layer: int, dirs: int, role: str):
    """The [D, N, H] initial state of one layer out of [L*D, N, H]: a ConstRef (None when it is
    all zero) or a Value."""
    if s is None:
        return None
    if isinstance(s, ConstRef):
        part = np.ascontiguousarray(s.array[layer * dirs:(layer + 1) * dirs])
        return None if not np.any(part) else ConstRef(f"{s.name}_l{layer}", part)
    v = b.value(s)
    if v.type.rank != 3:
        b.unsupported(f"an initial {role} of shape {list(v.type.shape)} (expected [layers * directions, N, H])")
    return _slice(b, v, 0, layer * dirs, (layer + 1) * dirs, f"{role}_l{layer}")


def _zeros(b: Builder, name: str, shape) -> ConstRef:
    return ConstRef(f"{b.node.name}.{name}", np.zeros(shape, np.float32))


def _lower(kind: str) -> Callable[[Builder, dict], Any]:
    gates = GATES[kind]

    def lower(b: Builder, a: dict):
        if a["train"]:
            b.unsupported(f"{kind} in training mode", "call model.eval() before exporting")
        x = b.value(a["input"])
        if x.type.rank != 3:
            b.unsupported(f"a rank-{x.type.rank} input (expected [N, T, F] or [T, N, F])")
        layers, dirs = int(a["num_layers"]), 2 if a["bidirectional"] else 1
        params = list(a["params"])
        per = 4 if a["has_biases"] else 2
        if kind == "lstm" and len(params) == layers * dirs * (per + 1):
            b.unsupported("an LSTM with proj_size != 0 (a projection of the hidden state)",
                          "tinyc's lstm has no projection: use proj_size=0 and an nn.Linear after the LSTM")
        if len(params) != layers * dirs * per:
            b.unsupported(f"{len(params)} weight tensors for {layers} layers x {dirs} directions")
        batch_first = bool(a["batch_first"])
        if not batch_first:
            x = _swap01(b, x, "in")
        n = x.type.shape[0]
        if kind == "gru":
            h0, c0 = a["hx"], None
        else:
            h0, c0 = list(a["hx"]) if a["hx"] is not None else (None, None)
        seqs, cells = [], []
        for layer in range(layers):
            weights = []
            hidden = None
            for d in range(dirs):
                p = params[(layer * dirs + d) * per:(layer * dirs + d + 1) * per]
                w_ih, w_hh = p[0], p[1]
                shape = w_ih.array.shape if isinstance(w_ih, ConstRef) else b.value(w_ih).type.shape
                hidden = shape[0] // gates
                if len(p) == 2:      # bias=False: zero biases (the op always has them)
                    p = [w_ih, w_hh, _zeros(b, f"b_ih_l{layer}_d{d}", (gates * hidden,)),
                         _zeros(b, f"b_hh_l{layer}_d{d}", (gates * hidden,))]
                weights += [b.value(w) for w in p]
            states = [_layer_state(b, h0, layer, dirs, "h0"), _layer_state(b, c0, layer, dirs, "c0")]
            if states[1] is None:
                states = states[:1]
            if states[0] is None and len(states) == 2:       # c0 without h0: h0 is zero
                states[0] = _zeros(b, f"h0_l{layer}", (dirs, n, hidden))
            states = [b.value(s) for s in states if s is not None]
            attrs = {"hidden": hidden, "bidirectional": dirs == 2}
            last = layer == layers - 1
            y = b.emit(kind, [x, *states, *weights], attrs=attrs,
                       tag=None if last and batch_first else f"l{layer}")
            seqs.append(y)
            if kind == "lstm":
                cells.append(b.emit(kind, [x, *states, *weights], attrs={**attrs, "result": "cell"},
                                    tag=f"c_l{layer}"))
            x = y
        out = x if batch_first else _swap01(b, x, None)
        steps = seqs[0].type.shape[1]
        finals = []
        for layer, seq in enumerate(seqs):
            for d in range(dirs):
                tag = f"h_l{layer}_d{d}"
                h = _slice(b, seq, 1, steps - 1 if d == 0 else 0, steps if d == 0 else 1, tag + "_t")
                h = _slice(b, h, 2, d * hidden, (d + 1) * hidden, tag + "_h")
                finals.append(b.reshape(h, [1, n, hidden], tag))
        h_n = finals[0] if len(finals) == 1 else b.emit("cat", finals, [len(finals), n, hidden], {"axis": 0}, "h_n")
        if kind == "gru":
            return out, h_n
        c_n = cells[0] if len(cells) == 1 else b.emit("cat", cells, [len(cells) * dirs, n, hidden], {"axis": 0}, "c_n")
        return out, h_n, c_n

    return lower


LOWERINGS: dict[str, Callable[[Builder, dict], Any]] = {
    "aten.gru.input": _lower("gru"),
    "aten.lstm.input": _lower("lstm"),
}
