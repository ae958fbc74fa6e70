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
Training is seeded and single-threaded, so the result does not depend on the machine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tinyc.errors import PassError, TinycError
from tinyc.ir import Graph, Value
from tinyc.ops import OPS
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


@register
@dataclass(frozen=True)
class Distill(Pass):
    """Knowledge distillation: retrains the graph's weights (Adam, cosine schedule) to match the
    outputs of the model as imported on --train inputs (no labels): KL on softened logits for
    classifiers, relative MSE otherwise. Zero weights (pruned) stay zero. Run before quantize-int8."""

    name = "distill"
    trains = True
    epochs: int = option(10, "passes over the training inputs")
    lr: float = option(3e-3, "Adam learning rate, cosine-annealed to zero (try 1e-4 for deep regression models)")
    batch: int = option(64, "training inputs per step")
    temperature: float = option(4.0, "softening temperature of the classification (KL) loss")
    seed: int = option(0, "random seed (sample order)")

    def __post_init__(self):
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

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
        module, loss_before, loss_after, masked = self._train(graph, samples, soft, targets)
        check(math.isfinite(loss_after), f"distill diverged (loss {loss_after} after training)",
              f"lower the learning rate, e.g. distill{{lr={self.lr / 10:g}}}")
        out, trained, why = update_graph(graph, module), None, None
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
            "loss_before": loss_before, "loss_after": loss_after, "masked_zero_weights": masked,
            "metric": ctx.metric or None, "score_before": before, "score_after": after,
            "score_trained": trained, "kept_weights": why is not None,
        }
        note = f"distill: {self.epochs} epochs on {n} training inputs, loss {loss_before:.4g} -> {loss_after:.4g}"
        if before is not None:
            note += f", {ctx.metric or 'score'} {before:.2f} -> {after:.2f}"
        if why:
            note += f"; {why}: weights unchanged"
        if masked:
            note += f"; {masked} zero weights kept at zero"
        ctx.notes.append(note)
        return out

    # ---- training ----
    def _train(self, graph: Graph, samples: list[np.ndarray], soft: list[np.ndarray], targets: list[Target]):
        import torch
        import torch.nn.functional as F

        from tinyc.to_torch import to_torch

        module = to_torch(graph)
        xs = [torch.from_numpy(s) for s in samples]
        ts = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in soft]
        # relative MSE: divide by the teacher's mean square over the whole training set
        scales = [float(np.mean(np.square(a, dtype=np.float64))) or 1.0 for a in soft]
        T = self.temperature
        names = [t.student for t in targets]

        def loss_fn(idx) -> torch.Tensor:
            outs = module(*(x[idx] for x in xs), names=names)
            outs = outs if isinstance(outs, tuple) else (outs,)
            total = 0.0
            for tgt, s, t, scale in zip(targets, outs, ts, scales):
                t = t[idx]
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
                    for _ in range(self.epochs):
                        for idx in torch.randperm(n).split(self.batch):
                            opt.zero_grad()
                            loss = loss_fn(idx)
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
