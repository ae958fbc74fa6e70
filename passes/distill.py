"""`distill`: recover accuracy lost to compression by knowledge distillation.

The graph becomes a torch module (tinyc.to_torch), whose weights train to reproduce the outputs of
`ctx.reference` (the model as imported, the teacher) on the `--train` inputs; no labels are needed.
Per output, the loss is the KL divergence of temperature-softened logits for a classifier (a
softmax output is distilled on its input, the logits) or, for other outputs, the mean squared
error relative to the teacher's mean square (so 10 log10(1 / loss) is the SQNR in dB). Weights
that are exactly zero in the weight matrices the registry names (OpDef.weights: conv2d / linear
weights, gru / lstm w_ih and w_hh: prune-weights' pruned connections) and in the codebooks feeding
them (share-weights' reserved zero) are masked and stay zero; other parameters train even where
they are zero (a LayerNorm's zero-initialised bias). The structure is untouched.
Trained: every op's trainable operands (OpDef.trainable): conv2d / linear / conv_transpose2d
weights and biases, batch_norm / layer_norm / group_norm affine weights, prelu slopes, gru / lstm
weights, biases and initial states, embedding tables, and the codebooks of shared weights
(decode), whose indices stay.
Binarized layers (binarize) train too: `sign` passes its gradient straight through inside the
hardtanh window |x - t| <= 1, and a bin_conv2d / bin_linear's u1 sign weight trains as a latent
float weight initialised to (2b - 1) * alpha[o] (its magnitude is how far a weight is from a sign
flip: about alpha / lr Adam steps), used as sign(latent) with the identity as gradient; alpha and
the bias train as they are. The written-back graph holds the latent's sign bits (latent >= 0 is
+1), alpha > 0 (a channel whose alpha went negative flips its bits) floored as binarize floors it.
Quantization-aware training (qat=on; qat=auto: when quantize-int8 follows in the pipeline and will
calibrate): the forward rounds as the int8 graph will (to_torch.FakeQuantModule), with
straight-through gradients: the weight matrices quantize-int8 quantizes (conv2d / linear /
conv_transpose2d weights and shared-weight codebooks per output channel, symmetric, at its
weight-bits with quant.weight_params' scales recomputed from the current weights each step;
gru / lstm weights at 8 bits), and every float activation it quantizes, per tensor, asymmetric
int8 with quantize-int8's parameters (quant.range_params, a softmax's fixed output quantization,
shared quantization through reshapes and pools) at the min/max over the training inputs:
observed on the graph as given (interpreter) for the first epoch, re-observed on the module's float
forward at the start of each later epoch (ranges fixed at the start alone cost 2.5 points on a
binary-activation CNN whose ranges move as it recovers; docs/compression_formats.md). The
weights written back are float; quantize-int8 quantizes them as usual.
Training is seeded and single-threaded, so the result does not depend on the machine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tinyc.errors import PassError, TinycError
from tinyc.ir import Graph, Value
from tinyc.ops import OPS, Trait
from tinyc.passes.base import Pass, PassContext, check, option, register

TRAIN_HINT = "pass --train X.npy: N sample inputs (N x the input shape); no labels needed"


def _producer(graph: Graph, v: Value):
    for op in graph.ops:
        if op.result is v:
            return op
    return None


def _is_softmax_output(graph: Graph, v: Value) -> bool:
    op = _producer(graph, v)
    return op is not None and op.kind == "softmax" and len(op.operands) == 1 and op.attrs["axis"] == v.type.rank - 1


def masked_consts(graph: Graph) -> set[str]:
    """Names of the consts whose zeros distill keeps at zero: the registry's weight matrices
    (OpDef.weights) and the trainable operands of the ops producing them (a decode's codebook)."""
    producers = graph.producers()
    out = set()
    for op in graph.compute_ops():
        for w in OPS[op.kind].weights(op):
            p = producers.get(id(op.operands[w.slot]))
            if p is None:
                continue
            if p.is_const:
                out.add(p.result.name)
                continue
            for i in OPS[p.kind].trainable:
                src = producers.get(id(p.operands[i])) if i < len(p.operands) else None
                if src is not None and src.is_const:
                    out.add(src.result.name)
    return out


def _is_classifier_output(graph: Graph, v: Value) -> bool:
    """The evaluator's rule (tinyc.evaluate.choose_metric): [B, C] with C > 1, not shaped like an input."""
    t = v.type
    return t.rank == 2 and t.shape[-1] > 1 and not any(t.shape == i.type.shape for i in graph.inputs)


@dataclass(frozen=True)
class Target:
    """What one output is distilled on: a value of the teacher and one of the student, and the loss."""

    loss: str            # "kl" (logits), "kl-probs" (student gives probabilities) or "mse"
    teacher: str
    student: str


def distill_targets(teacher: Graph, student: Graph) -> list[Target]:
    targets = []
    for t, s in zip(teacher.outputs, student.outputs):
        s_logits = _producer(student, s).operands[0].name if _is_softmax_output(student, s) else None
        if _is_softmax_output(teacher, t):
            t_logits = _producer(teacher, t).operands[0].name
            targets.append(Target("kl", t_logits, s_logits) if s_logits else Target("kl-probs", t_logits, s.name))
        elif _is_classifier_output(teacher, t):
            targets.append(Target("kl", t.name, s.name))
        else:
            targets.append(Target("mse", t.name, s.name))
    return targets


def canonical_binary(graph: Graph) -> int:
    """Binary layers as binarize leaves them, after training: alpha > 0 (a channel whose alpha
    went negative takes |alpha| and its sign bits flipped: the same products) and floored like
    binarize's (alpha_floor), in place. Returns the number of channels flipped."""
    from tinyc.passes.binarize import alpha_floor
    producers = graph.producers()
    flipped = 0
    for op in graph.compute_ops():
        if not OPS[op.kind].has(Trait.BINARY_LAYER):
            continue
        w_op, a_op = producers.get(id(op.operands[1])), producers.get(id(op.operands[2]))
        if w_op is None or a_op is None or not (w_op.is_const and a_op.is_const):
            continue
        alpha = a_op.attrs["value"].astype(np.float32)
        neg = alpha < 0
        if neg.any():
            bits = w_op.attrs["value"].copy()
            bits[neg] ^= 1
            w_op.attrs["value"] = bits
            flipped += int(neg.sum())
        a_op.attrs["value"] = alpha_floor(np.abs(alpha)).astype(np.float32)
    return flipped


def changed_sign_bits(before: Graph, after: Graph) -> int:
    """How many sign bits of the binary layers' u1 weights differ between two versions of a graph
    (consts matched by name)."""
    consts = {op.result.name: op.attrs["value"] for op in after.const_ops()}
    producers = before.producers()
    n = 0
    for op in before.compute_ops():
        p = producers.get(id(op.operands[1])) if OPS[op.kind].has(Trait.BINARY_LAYER) else None
        if p is not None and p.is_const and p.result.name in consts:
            n += int(np.count_nonzero(consts[p.result.name] != p.attrs["value"]))
    return n


@dataclass(frozen=True)
class QatPlan:
    """Quantization-aware training (to_torch.FakeQuantModule): const name -> weight bits, value
    name -> per-tensor int8 QuantParams of the activation."""

    weights: dict
    acts: dict
    bits: int
    keep: frozenset = frozenset()


RANGE_CHUNK = 256     # training inputs interpreted at a time when observing activation ranges


def qat_plan(graph: Graph, samples: list[np.ndarray], weight_bits: int = 8, keep_float: set[str] = frozenset()) -> QatPlan:
    """The weights and activations quantize-int8 (weight-bits, keep-float) would quantize:
    each registry weight matrix (OpDef.weights) that is a const or a decode of a const codebook,
    per output channel at `weight_bits` when the op's int8 rule is the layer one (conv2d, linear,
    conv_transpose2d), at 8 bits otherwise (gru / lstm: their kernels read int8); every float graph
    input and op result that is not a weight nor kept float, per tensor, asymmetric, with
    quantize-int8's parameters (assign_quant: range_params of the min/max over `samples`, a softmax's
    fixed output quantization, shared quantization through reshapes and pools)."""
    from tinyc.evaluate import run_batch
    producers = graph.producers()
    weights: dict[str, int] = {}
    weight_values: set[str] = set()
    for op in graph.compute_ops():
        if op.result.name in keep_float:
            continue
        bits = weight_bits if OPS[op.kind].int8 == "layer" else 8
        for w in OPS[op.kind].weights(op):
            v = op.operands[w.slot]
            p = producers.get(id(v))
            if p is None or v.type.dtype != "f32":
                continue
            weight_values.add(v.name)
            book = producers.get(id(p.operands[1])) if OPS[p.kind].int8 == "codebook" else None
            if p.is_const:
                weights[v.name] = bits
            elif book is not None and book.is_const and book.result.type.dtype == "f32":
                weights[book.result.name] = bits
    names = [v.name for v in graph.inputs if v.type.dtype == "f32"] + \
        [op.result.name for op in graph.compute_ops() if op.result.type.dtype == "f32"
         and op.result.name not in weight_values and op.result.name not in keep_float]
    n = len(samples[0])
    parts = (run_batch(graph, [s[i:i + RANGE_CHUNK] for s in samples], names) for i in range(0, n, RANGE_CHUNK))
    acts = _act_quant(graph, names, parts, frozenset(keep_float))
    return QatPlan(weights, acts, weight_bits, frozenset(keep_float))


def _act_quant(graph: Graph, names: list[str], parts, keep: frozenset) -> dict:
    """name -> quantize-int8's activation quantization (assign_quant) at the min/max of the finite
    values over `parts` (per chunk of inputs, one array per name)."""
    from tinyc.passes.quantize_int8 import assign_quant
    lo = dict.fromkeys(names, np.inf)
    hi = dict.fromkeys(names, -np.inf)
    for arrays in parts:
        for name, a in zip(names, arrays):
            a = np.asarray(a)
            a = a[np.isfinite(a)]
            if a.size:
                lo[name], hi[name] = min(lo[name], float(a.min())), max(hi[name], float(a.max()))
    ranges = {k: (lo[k], hi[k]) if lo[k] <= hi[k] else (0.0, 0.0) for k in names}
    qmap = assign_quant(graph, ranges, set(keep))
    return {k: qmap[k] for k in names}


def observe_module(graph: Graph, module, xs, plan: QatPlan) -> dict:
    """The activation quantization of `plan`'s values at the min/max the module's float forward
    (fake-quant off) has on the inputs `xs` (tensors [N, ...])."""
    import torch
    names = list(plan.acts)

    def parts():
        with torch.no_grad():
            for idx in torch.arange(len(xs[0])).split(RANGE_CHUNK):
                outs = module(*(x[idx] for x in xs), names=names)
                yield [o.numpy() for o in (outs if isinstance(outs, tuple) else (outs,))]

    module.enabled = False
    try:
        return _act_quant(graph, names, parts(), plan.keep)
    finally:
        module.enabled = True


@register
@dataclass(frozen=True)
class Distill(Pass):
    """Knowledge distillation: retrains the graph's weights (Adam, cosine schedule) to match the
    outputs of the model as imported on --train inputs (no labels): KL on softened logits for
    classifiers, relative MSE otherwise. Zero weights (pruned) stay zero; binary layers train
    through straight-through estimators (latent sign weights). Run before quantize-int8, which it
    then anticipates (qat=auto: fake-quantized weights and activations in training)."""

    name = "distill"
    trains = True
    epochs: int = option(10, "passes over the training inputs")
    lr: float = option(3e-3, "Adam learning rate, cosine-annealed to zero (try 1e-4 for deep regression models)")
    batch: int = option(64, "training inputs per step")
    temperature: float = option(4.0, "softening temperature of the classification (KL) loss")
    seed: int = option(0, "random seed (sample order)")
    mixup: float = option(0.0, "a > 0: also train each step on mixtures of training inputs (x = l x_i + "
                                "(1 - l) x_j, l ~ Beta(a, a), e.g. 0.4) labelled by the teacher, inputs the "
                                "training set lacks (float inputs); not a clear win on digits, so off by default")
    qat: Literal["auto", "on", "off"] = option(
        "auto", "quantization-aware training: the forward rounds weights and activations as quantize-int8 "
                "will (fake-quant, straight-through gradients); auto: on when quantize-int8 follows")

    def __post_init__(self):
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not self.mixup >= 0:
            raise ValueError(f"mixup must be >= 0, got {self.mixup}")

    def apply(self, graph: Graph, ctx: PassContext) -> Graph:
        from tinyc.evaluate import as_samples, run_batch
        from tinyc.to_torch import check_float, update_graph

        check(ctx.train is not None, "distill needs training inputs", TRAIN_HINT)
        try:
            check_float(graph, "distill")
        except TinycError as e:
            raise PassError(e.what, where=e.where, hint=e.hint + ", e.g. -p 'fuse,distill,quantize-int8'") from None
        teacher = ctx.reference
        check(teacher is not None, "distill needs the model before compression as its teacher (ctx.reference)",
              "the CLI sets it; from Python, use tinyc.evaluate.make_context(graph, train=...)")
        check(len(teacher.outputs) == len(graph.outputs) and
              all(t.type.shape == s.type.shape for t, s in zip(teacher.outputs, graph.outputs)),
              "distill: the graph's outputs differ in number or shape from the reference's")
        samples = as_samples(graph, ctx.train, "training", "--train")
        targets = distill_targets(teacher, graph)
        soft = run_batch(teacher, samples, [t.teacher for t in targets])

        before = ctx.evaluate(graph) if ctx.evaluate else None
        qat = self._qat_plan(graph, ctx, samples)
        mix_teacher = self._mixup_teacher(teacher, samples)
        module, loss_before, loss_after, masked = self._train(graph, samples, soft, targets, qat, mix_teacher)
        check(math.isfinite(loss_after), f"distill diverged (loss {loss_after} after training)",
              f"lower the learning rate, e.g. distill{{lr={self.lr / 10:g}}}")
        out, trained, why = update_graph(graph, module), None, None
        flips = canonical_binary(out)
        bits_changed = changed_sign_bits(graph, out)
        if not loss_after < loss_before:
            why = "the loss did not improve"
        elif ctx.evaluate:
            trained = ctx.evaluate(out)
            if trained < before:
                why = f"{ctx.metric or 'the score'} fell to {trained:.2f}"
        if why:     # never worse than before: keep the weights
            out = graph.copy()
        after = before if why else trained

        n = len(samples[0])
        ctx.stats[self.name] = {
            "epochs": self.epochs, "samples": n, "losses": sorted({t.loss for t in targets}),
            "mixup": self.mixup if mix_teacher is not None else 0.0,
            "loss_before": loss_before, "loss_after": loss_after, "masked_zero_weights": masked,
            "metric": ctx.metric or None, "score_before": before, "score_after": after,
            "score_trained": trained, "kept_weights": why is not None,
            "qat": qat is not None, "sign_bits_changed": 0 if why else bits_changed,
        }
        if qat is not None:
            ctx.stats[self.name]["qat_weight_bits"] = qat.bits
        note = f"distill: {self.epochs} epochs on {n} training inputs, loss {loss_before:.4g} -> {loss_after:.4g}"
        if qat is not None:
            note += (f" (quantization-aware: {len(qat.weights)} weight tensors fake-quantized per channel at "
                     f"{qat.bits} bits, {len(qat.acts)} activations to int8 at their ranges on the training inputs)")
        if before is not None:
            note += f", {ctx.metric or 'score'} {before:.2f} -> {after:.2f}"
        if why:
            note += f"; {why}: weights unchanged"
        if masked:
            note += f"; {masked} zero weights kept at zero"
        if bits_changed and not why:
            note += f"; {bits_changed} sign bits of binary layers flipped"
            if flips:
                note += f" ({flips} by negative alphas turned positive)"
        ctx.notes.append(note)
        return out

    # ---- quantization-aware training ----
    def _qat_plan(self, graph: Graph, ctx: PassContext, samples: list[np.ndarray]) -> "QatPlan | None":
        """What the forward fake-quantizes (None: no QAT): the weights quantize-int8 will quantize
        and every float activation it will quantize, at the ranges the graph as given (before
        training) has on the training inputs."""
        from tinyc.passes.quantize_int8 import QuantizeInt8
        quantizer = next((p for p in ctx.later if isinstance(p, QuantizeInt8)), None)
        if self.qat == "off":
            return None
        if self.qat == "auto":
            if quantizer is None:
                return None
            from tinyc.passes import quant_from_model
            if quantizer.qparams == "model" or (quantizer.qparams == "auto" and quant_from_model.has_model_quant(graph)):
                return None     # the model's own quantization (its fake_quant ops) is in the graph already
        return qat_plan(graph, samples, quantizer.weight_bits if quantizer else 8,
                        set(quantizer.keep_float) if quantizer else set())

    # ---- training ----
    def _mixup_teacher(self, teacher: Graph, samples: list[np.ndarray]):
        """The teacher as a torch module for labelling mixed inputs, or None (mixup=0, integer
        inputs such as token ids, or a teacher with no torch form: plain distillation)."""
        if not self.mixup or not all(np.issubdtype(s.dtype, np.floating) for s in samples):
            return None
        from tinyc.to_torch import to_torch
        try:
            return to_torch(teacher, trainable=False)
        except TinycError:
            return None

    def _train(self, graph: Graph, samples: list[np.ndarray], soft: list[np.ndarray], targets: list[Target],
               qat: "QatPlan | None" = None, mix_teacher=None):
        import torch
        import torch.nn.functional as F

        from tinyc.to_torch import FakeQuantModule, to_torch

        module = to_torch(graph) if qat is None else FakeQuantModule(graph, qat.acts, qat.weights)
        xs = [torch.from_numpy(s) for s in samples]
        ts = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in soft]
        # relative MSE: divide by the teacher's mean square over the whole training set
        scales = [float(np.mean(np.square(a, dtype=np.float64))) or 1.0 for a in soft]
        T = self.temperature
        names = [t.student for t in targets]

        def loss_fn(idx, inputs=None, wants=None) -> torch.Tensor:
            inputs = inputs if inputs is not None else [x[idx] for x in xs]
            wants = wants if wants is not None else [t[idx] for t in ts]
            outs = module(*inputs, names=names)
            outs = outs if isinstance(outs, tuple) else (outs,)
            total = 0.0
            for tgt, s, t, scale in zip(targets, outs, wants, scales):
                if tgt.loss == "mse":
                    total = total + F.mse_loss(s, t) / scale
                    continue
                c = t.shape[-1]
                s = s.reshape(-1, c)
                if tgt.loss == "kl-probs":
                    s = torch.log(s.clamp_min(1e-30))
                total = total + F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t.reshape(-1, c) / T, -1),
                                         log_target=True, reduction="batchmean") * T * T
            return total

        n = len(samples[0])

        def full_loss() -> float:
            with torch.no_grad():
                parts = [float(loss_fn(idx)) * len(idx) for idx in torch.arange(n).split(256)]
            return max(0.0, sum(parts) / n)   # KL is >= 0 but may round below

        params = [p for p in module.parameters()]
        keep = masked_consts(graph)
        masks = [(p, (p.detach() != 0).to(p.dtype)) for name, p in module.named_consts()
                 if name in keep and isinstance(p, torch.nn.Parameter)]
        masks = [(p, m) for p, m in masks if not bool(m.all())]
        masked = sum(int((m == 0).sum()) for _, m in masks)

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                loss_before = full_loss()
                steps = self.epochs * math.ceil(n / self.batch)
                if steps and params:
                    opt = torch.optim.Adam(params, lr=self.lr)
                    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
                    for epoch in range(self.epochs):
                        if qat is not None and epoch:    # the ranges follow the weights, epoch by epoch
                            module.set_acts(observe_module(graph, module, xs, qat))
                        for idx in torch.randperm(n).split(self.batch):
                            opt.zero_grad()
                            loss = loss_fn(idx)
                            if mix_teacher is not None and len(idx) > 1:
                                loss = loss + loss_fn(idx, *self._mixed(idx, xs, mix_teacher, targets))
                            loss.backward()
                            for p, m in masks:
                                if p.grad is not None:
                                    p.grad.mul_(m)
                            opt.step()
                            sched.step()
                            with torch.no_grad():
                                for p, m in masks:
                                    p.mul_(m)
                loss_after = full_loss()
        finally:
            torch.set_num_threads(threads)
        return module, loss_before, loss_after, masked

    def _mixed(self, idx, xs, teacher, targets):
        """A batch of mixtures of the batch's inputs with a permutation of them, and the teacher's
        values on them (its logits, or the outputs the losses compare)."""
        import torch
        n = len(idx)
        lam = torch.distributions.Beta(self.mixup, self.mixup).sample((n,))
        perm = torch.randperm(n)
        mixed = []
        for x in xs:
            b = x[idx]
            w = lam.reshape((n,) + (1,) * (b.dim() - 1)).to(b.dtype)
            mixed.append(w * b + (1 - w) * b[perm])
        with torch.no_grad():
            outs = teacher(*mixed, names=[t.teacher for t in targets])
        return mixed, list(outs if isinstance(outs, tuple) else (outs,))
