"""`prune-channels`: structured filter pruning. Removes whole output channels of layers (conv2d,
linear, conv_transpose2d, gru/lstm hidden units, embedding columns) and whole attention heads, and
shrinks every consumer to match, so MACs and weight bytes really drop."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tinyc.ir import Graph
from tinyc.passes.base import Pass, PassContext, check, option, refuse_quantized, register
from tinyc.passes.budget import Trial, accuracy_budget, budgeted_search, recovery
from tinyc.passes.channels import ChannelAnalysis, ChannelGroup, filter_norms, remove_channels
from tinyc.passes.heads import find_heads, head_norms, remove_heads
from tinyc.stats import graph_stats

AUTO_RATIOS = (0.25, 0.5, 0.75, 0.875)   # the sensitivity analysis tries each group at these


def kept_count(group: ChannelGroup, ratio: float) -> int:
    """Channels left after removing `ratio` of them: at least one run of `unit` per block, equal per
    block (unit: channels that go together, e.g. a group_norm's groups; 1 otherwise)."""
    runs = group.size // group.blocks // group.unit
    return group.blocks * group.unit * max(1, math.floor(runs * (1.0 - ratio) + 0.5))


def choose_kept(group: ChannelGroup, scores: np.ndarray, count: int) -> np.ndarray:
    """The `count` highest-scoring channels (the same number from each block, in whole runs of
    `unit` scored by their summed scores), sorted."""
    size, u = group.size // group.blocks, group.unit
    per_block = count // group.blocks // u
    kept = []
    for b in range(group.blocks):
        runs = scores[b * size:(b + 1) * size].reshape(-1, u).sum(axis=1)
        top = np.sort(np.argsort(-runs, kind="stable")[:per_block])
        kept.append(b * size + (top[:, None] * u + np.arange(u)).ravel())
    return np.concatenate(kept)


@register
@dataclass(frozen=True)
class PruneChannels(Pass):
    """Channel pruning: remove the lowest-norm output filters of each conv2d/linear (ratio per
    layer, or ratio=auto within --max-accuracy-drop) and shrink what reads them: the next layers'
    input channels (grouped convs per group), depthwise convs (whose filters follow their input),
    batch_norm, constants of add/sub/mul/div, cat offsets and flatten->linear columns. Layers whose
    outputs are joined by add/sub/mul/div (residual connections) or contracted together by a matmul
    form one tied group, pruned jointly (same kept channels, scored by summed norms) or left alone
    (tied=skip). Layers feeding a graph output, and channels an op mixes (softmax or mean over
    them, matmul with other data, layer_norm over them, group_norm with groups=1), are never pruned.
    Beyond convnets: gru/lstm hidden units, conv_transpose2d filters, embedding columns, group_norm
    channels in whole groups, and whole attention heads (passes/heads.py; key <in-projection>.heads)."""

    name = "prune-channels"
    searches = ("ratio",)   # ratio=auto: chosen against the accuracy budget
    ratio: float | str = option(0.5, "fraction of each layer's output channels removed, in [0, 1), "
                                     "or auto (needs evaluation data and --max-accuracy-drop)")
    criterion: Literal["l1", "l2"] = option("l1", "filter importance: l1 or l2 norm of its weights")
    layers: tuple[str, ...] = option((), "prune only these layers (result names); default all")
    tied: Literal["joint", "skip"] = option("joint", "tied groups (residual adds): prune jointly or skip")
    recover: int = option(0, "with ratio=auto: epochs of distillation each candidate gets before it is "
                             "scored, and the result keeps (needs --train); 0 scores candidates as pruned")

    def __post_init__(self):
        if isinstance(self.ratio, str):
            if self.ratio != "auto":
                raise ValueError(f"ratio must be a number in [0, 1) or 'auto', got {self.ratio!r}")
        elif not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"ratio must be in [0, 1) (the fraction of channels removed), got {self.ratio}")
        if self.recover < 0:
            raise ValueError(f"recover must be >= 0 epochs, got {self.recover}")

    def apply(self, graph: Graph, ctx: PassContext) -> Graph:
        refuse_quantized(graph, self.name)
        analysis = ChannelAnalysis(graph)
        heads = self._head_groups(graph, analysis, ctx)
        groups = self._candidates(analysis, ctx, heads)
        scores = {g.key: filter_norms(analysis, g, self.criterion) for g in groups if g.key not in heads}
        scores.update({key: head_norms(graph, region, self.criterion) for key, (_, region) in heads.items()})
        head_notes: list[str] = []

        def build(ratios: dict[str, float]) -> Graph:
            keep = {g.key: choose_kept(g, scores[g.key], kept_count(g, ratios[g.key]))
                    for g in groups if g.key in ratios}
            out = remove_channels(graph, {k: v for k, v in keep.items() if k not in heads})
            keep_heads = {k: v for k, v in keep.items() if k in heads}
            if keep_heads:
                out, notes = remove_heads(out, keep_heads)
                head_notes.extend(n for n in notes if n not in head_notes)
            return out

        if self.ratio == "auto":
            ratios, out, info = self._auto(graph, groups, build, ctx)
        else:
            ratios, info = {g.key: float(self.ratio) for g in groups}, {}
            out = build(ratios)
        ctx.notes.extend(head_notes)
        self._report(graph, out, analysis, groups, ratios, ctx, info, [g for g, _ in heads.values()])
        return out

    # ---- attention heads ----
    def _head_groups(self, graph: Graph, analysis: ChannelAnalysis, ctx: PassContext) -> dict:
        """Attention regions whose heads may go whole: key -> (a group of `heads` channels, region)."""
        found = find_heads(graph)
        by_layer = {p.result.name: g for g in analysis.groups for p in g.producers}
        out = {}
        for r in found.regions:
            live = [lin.result.name for lin in r.linears if not by_layer[lin.result.name].frozen]
            if live or id(r.out.operands[0]) in analysis.layout:
                what = ", ".join(live) or f"the input of {r.out.result.name}"
                ctx.notes.append(f"prune-channels: left the heads of {r.key} whole: channel pruning already "
                                 f"shrinks {what}")
                continue
            out[r.key] = (ChannelGroup(r.key, r.heads, [r.linears[0]]), r)
        ctx.notes.extend(f"prune-channels: attention heads not pruned: {why}" for why in found.skipped)
        return out

    # ---- which groups ----
    def _candidates(self, analysis: ChannelAnalysis, ctx: PassContext, heads: dict) -> list[ChannelGroup]:
        by_layer = {p.result.name: g for g in analysis.groups for p in g.producers}
        unknown = [n for n in self.layers if n not in by_layer and n not in heads]
        check(not unknown, f"prune-channels: no layer named {', '.join(unknown)}",
              "layers= takes result names of the layers (conv2d, linear, conv_transpose2d, gru, lstm, embedding) "
              "or attention heads (<in-projection>.heads): " + ", ".join(list(by_layer) + list(heads)))
        out = []
        for g in analysis.groups + [g for g, _ in heads.values()]:
            named = not self.layers or g.key in self.layers or any(p.result.name in self.layers for p in g.producers)
            if not named:
                continue
            if g.frozen:
                if self.layers:
                    ctx.notes.append(f"prune-channels: cannot prune {g.key}: {g.frozen[0]}")
            elif g.tied and self.tied == "skip":
                ctx.notes.append(f"prune-channels: left tied group {g.key} ({g.size} channels, joined by "
                                 f"{', '.join(g.ties)}) alone (tied=skip)")
            else:
                out.append(g)
        return out

    # ---- ratio=auto ----
    def _auto(self, graph: Graph, groups: list[ChannelGroup], build, ctx: PassContext):
        baseline, budget = accuracy_budget(graph, ctx, "prune-channels{ratio=auto}")
        recovered = recovery(ctx, self.recover, "prune-channels{ratio=auto}")
        build_recovered = lambda ratios: recovered(build(ratios))
        macs = graph_stats(graph).macs
        trials: dict[str, list[Trial]] = {}
        for g in groups:
            seen = set()
            for r in AUTO_RATIOS:
                n = kept_count(g, r)
                if n >= g.size or n in seen:
                    continue
                seen.add(n)
                pruned = build_recovered({g.key: r})
                trials.setdefault(g.key, []).append(
                    Trial(r, macs - graph_stats(pruned).macs, baseline - ctx.evaluate(pruned)))
        ratios, out, drop, undone = budgeted_search(trials, budget, baseline, build_recovered, ctx.evaluate)
        ctx.notes.append(f"prune-channels: ratio=auto pruned {len(ratios)} of {len(groups)} groups "
                         f"({', '.join(f'{k}={v:g}' for k, v in ratios.items()) or 'none'}); {ctx.metric or 'score'} "
                         f"drop {drop:.3g} (budget {budget:g}, {len(trials)} groups x {len(AUTO_RATIOS)} "
                         f"ratios tried alone, {undone} step(s) undone after the combined check"
                         + (f"; every candidate retrained {self.recover} epochs first)" if self.recover else ")"))
        info = {"baseline": baseline, "drop": drop, "budget": budget,
                "sensitivity": {k: [[t.setting, t.saved, t.drop] for t in ts] for k, ts in trials.items()}}
        return ratios, out, info

    # ---- report ----
    def _report(self, graph: Graph, out: Graph, analysis: ChannelAnalysis, groups, ratios, ctx, info,
                head_groups=()) -> None:
        layers = {}
        heads_now = {r.key: r.heads for r in find_heads(out, min_heads=1).regions} if head_groups else {}
        for g in analysis.groups + list(head_groups):
            ratio = ratios.get(g.key, 0.0)
            kept = kept_count(g, ratio) if g.key in ratios else g.size
            if g in head_groups:     # what remove_heads did (it leaves a region whole when its check fails)
                kept = heads_now.get(g.key, g.size)
                if kept < g.size:
                    ctx.notes.append(f"prune-channels: attention {g.key}: {g.size} -> {kept} heads (their q/k/v "
                                     "rows and output-projection columns), checked equal to the original with "
                                     "those heads' output columns zeroed")
            layers[g.key] = {"channels": g.size, "kept": kept, "ratio": ratio,
                             "tied_by": list(g.ties), "frozen": g.frozen[0] if g.frozen else None}
            if g.tied and g.key in ratios and kept < g.size:
                ctx.notes.append(f"prune-channels: tied group {g.key} (joined by {', '.join(g.ties)}) pruned "
                                 f"jointly {g.size} -> {kept} channels, scored by summed {self.criterion} norms")
            elif g.tied and self.ratio == "auto" and g.key in {c.key for c in groups}:
                ctx.notes.append(f"prune-channels: tied group {g.key} (joined by {', '.join(g.ties)}) left "
                                 "alone: no ratio within the accuracy budget")
        before, after = graph_stats(graph), graph_stats(out)
        ctx.stats[self.name] = {
            **info,
            "criterion": self.criterion,
            "ratio": self.ratio,
            "ratios": {k: ratios.get(k, 0.0) for k in layers},
            "layers": layers,
            "macs": [before.macs, after.macs],
            "params": [before.params, after.params],
        }
        if self.ratio != "auto":
            in_heads = {p.result.name for g in head_groups if layers[g.key]["kept"] < g.size for p in g.producers}
            frozen = [f"{g.key} ({g.frozen[0]}" + ("; its heads go whole instead" if g.key in in_heads else "") + ")"
                      for g in analysis.groups if g.frozen]
            ctx.notes.append(f"prune-channels: removed {self.ratio:g} of the channels of {len(groups)} group(s); "
                             f"MACs {before.macs:,} -> {after.macs:,}, params {before.params:,} -> {after.params:,}"
                             + (f"; not pruned: {'; '.join(frozen)}" if frozen else ""))
