"""`tinyc bench --html`: one self-contained HTML page of a bundle's measurement.

Inline SVG only (no script, no network, no fonts), built from the bench figures
(compiler/compile.bench_figures: per-layer instructions, estimated cycles, MACs, weight bytes)
and the bundle's report.json (the arena plan: every arena tensor's offset, size and the ops it
is live over, planner.Plan.arena_tensors). Two charts:

- per layer, one row each: instructions (over the estimated cycles), instructions per MAC
  against the 0.75 a dense int8 kernel can approach on a Cortex-M4 (0.5 is SMLAD's ceiling),
  weight bytes, and the arena bytes live while the layer runs;
- the memory timeline: each arena tensor as a rectangle over the steps it is live (x) and the
  bytes it occupies (y), with the arena size, its lower bound and the bytes live at each step.

The page is a function of its inputs: the same measurement gives the same bytes (no times, no
paths, numbers formatted at fixed precision).
"""
from __future__ import annotations

from dataclasses import dataclass
from html import escape

import jinja2
from markupsafe import Markup

from tinyc.errors import BackendError

REFERENCE_INSTR_PER_MAC = 0.75   # a dense int8 kernel with operand loads and unpacking (issue 12)
SCRATCH = "#scratch"             # planner.SCRATCH_SUFFIX: a kernel's scratch bytes, live at its op only

# layer chart geometry (px)
LABEL_W = 250
PANEL_W = 190
GAP = 26
ROW_H = 18
HEAD_H = 40
# timeline geometry (px)
TL_LEFT, TL_RIGHT, TL_TOP, TL_BOTTOM = 70, 200, 20, 40
TL_PLOT_W, TL_PLOT_H = 760, 320

COLORS = {"instr": "#2f6ea8", "cycles": "#b7cde6", "good": "#3d8f57", "fair": "#d79b2b", "poor": "#c4513a",
          "weights": "#7a55a8", "live": "#2a8f8f", "ref": "#222222", "arena": "#c4513a", "bound": "#555555"}
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#86bcb6")
SCRATCH_COLOR = "#bbbbbb"

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("tinyc.backends", "templates"),
                          undefined=jinja2.StrictUndefined, autoescape=True,
                          trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


@dataclass(frozen=True)
class Panel:
    """One column of the layer chart: a bar per layer (None: no bar)."""

    key: str                        # CSS class and data attribute of its bars
    title: str
    values: tuple[float | None, ...]
    color: str | tuple[str, ...]    # one colour, or one per layer
    labels: tuple[str, ...]         # the figure printed at each bar's end
    under: tuple[float | None, ...] = ()   # a wider, lighter bar behind (estimated cycles)
    reference: float | None = None         # a vertical line at this value
    width: int = PANEL_W                   # px, the figures at the bars' ends included
    room: int = 50                         # px kept right of the longest bar for its figure


# ---- inputs -------------------------------------------------------------------------------

def check_report(report: dict) -> None:
    """The bundle's report.json has what the page needs (checked before measuring)."""
    tensors = report.get("arena_tensors")
    keys = ("name", "offset", "size", "first", "last")
    if not isinstance(tensors, list) or not all(isinstance(x, dict) and all(k in x for k in keys) for x in tensors):
        raise BackendError("the bundle's report.json has no arena plan (arena_tensors) for the memory timeline",
                           where=f"report.json of {report.get('graph', '?')}",
                           hint="compile the bundle again with this tinyc")


def check_inputs(report: dict, figures: dict) -> None:
    """What the page needs, or a BackendError saying what is missing and what to do."""
    check_report(report)
    where = f"bundle of {report.get('graph', '?')}"
    layers, n = figures.get("layers") or [], len(report.get("layers") or [])
    if not layers:
        raise BackendError("the measurement has no per-layer figures to draw", where=where,
                           hint="bench a bundle compiled by this tinyc (its report.json lists the layers)")
    if len(layers) != n:
        raise BackendError(f"the measurement has figures for {len(layers)} layers, the bundle has {n}",
                           where=where, hint="see the notes of `tinyc bench` (dropped layer stamps?)")
    if any(row.get("instructions") is None for row in layers):
        raise BackendError("the measurement has no per-layer instruction counts (the profiled build gave none)",
                           where=where, hint="see the notes of `tinyc bench`; compile the bundle again")


# ---- numbers --------------------------------------------------------------------------------

def fmt_int(n: float | None) -> str:
    return "-" if n is None else f"{round(n):,}"


def fmt_bytes(n: int) -> str:
    return f"{n:,} B"


def _num(x: float) -> str:
    """An SVG coordinate: fixed precision, no '-0'."""
    s = f"{x:.1f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def live_bytes(tensors: list[dict], steps: int) -> list[int]:
    """Bytes of the arena covered by tensors live at each step (the union of their byte ranges:
    a result written over its operand counts once)."""
    live = []
    for t in range(steps):
        spans = sorted((x["offset"], x["offset"] + x["size"]) for x in tensors if x["first"] <= t <= x["last"])
        total, end = 0, 0
        for lo, hi in spans:
            lo = max(lo, end)
            if hi > lo:
                total += hi - lo
                end = hi
        live.append(total)
    return live


def peak_offset(tensors: list[dict]) -> int:
    """The highest byte any arena tensor reaches (the arena size before rounding up)."""
    return max((x["offset"] + x["size"] for x in tensors), default=0)


def _share(n: int, total: int) -> str:
    """A count and its share of the total, e.g. '97,718 (76 %)'."""
    return f"{n:,} ({100 * n / total:.0f} %)" if total else f"{n:,}"


def _ratio_color(r: float) -> str:
    if r <= REFERENCE_INSTR_PER_MAC:
        return COLORS["good"]
    return COLORS["fair"] if r <= 2 * REFERENCE_INSTR_PER_MAC else COLORS["poor"]


# ---- layer chart ----------------------------------------------------------------------------

def layer_panels(figures: dict, live: list[int]) -> list[Panel]:
    rows = figures["layers"]
    instr = tuple(row["instructions"] for row in rows)
    cycles = tuple(row.get("cycles") for row in rows)
    has_cycles = any(c is not None for c in cycles)
    ratio = tuple(row["instructions"] / row["macs"] if row["macs"] else None for row in rows)
    weights = tuple(row["weight_bytes"] or None for row in rows)
    act = tuple(live[row["index"]] for row in rows)
    return [
        Panel("instr", "instructions" + (" (light: est. cycles)" if has_cycles else ""), instr, COLORS["instr"],
              tuple(_share(v, sum(instr)) for v in instr), under=cycles if has_cycles else (),
              width=PANEL_W + 80, room=110),
        Panel("ratio", f"instr / MAC (line: {REFERENCE_INSTR_PER_MAC})", ratio,
              tuple(_ratio_color(r) if r is not None else COLORS["good"] for r in ratio),
              tuple(f"{r:.2f}" if r is not None else "" for r in ratio), reference=REFERENCE_INSTR_PER_MAC),
        Panel("weights", "weight bytes", weights, COLORS["weights"], tuple(fmt_int(w) if w else "" for w in weights)),
        Panel("live", "arena bytes live", act, COLORS["live"], tuple(fmt_int(a) for a in act)),
    ]


def layer_chart(figures: dict, live: list[int]) -> str:
    rows = figures["layers"]
    panels = layer_panels(figures, live)
    width = LABEL_W + sum(p.width + GAP for p in panels) + 30
    height = HEAD_H + ROW_H * len(rows) + 6
    out = [f'<svg class="layers" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">']
    for i, row in enumerate(rows):
        y = HEAD_H + i * ROW_H
        if i % 2:
            out.append(f'<rect x="0" y="{y}" width="{width}" height="{ROW_H}" fill="#f4f4f4"/>')
        label = escape(f"{row['index']:>3} {row['name']}"[:34])
        out.append(f'<text x="4" y="{y + 13}" xml:space="preserve" font-family="monospace">{label}'
                   f'<title>{escape(row["name"])} ({escape(row["kind"])}, {row["macs"]:,} MACs)</title></text>')
        out.append(f'<text x="{LABEL_W - 6}" y="{y + 13}" text-anchor="end" fill="#666">{escape(row["kind"])}</text>')
    x0 = LABEL_W
    for panel in panels:
        out += _panel(panel, x0, rows, height)
        x0 += panel.width + GAP
    out.append("</svg>")
    return "\n".join(out)


def _panel(panel: Panel, x0: int, rows: list[dict], height: int) -> list[str]:
    top = max([v for v in panel.values + panel.under if v is not None] + [panel.reference or 0])
    scale = (panel.width - panel.room) / top if top > 0 else 0.0
    out = [f'<text x="{x0}" y="14" font-weight="bold">{escape(panel.title)}</text>',
           f'<line x1="{x0}" y1="{HEAD_H - 4}" x2="{x0}" y2="{height - 2}" stroke="#999"/>']
    for i, (row, value) in enumerate(zip(rows, panel.values)):
        y = HEAD_H + i * ROW_H
        under = panel.under[i] if panel.under else None
        if under is not None:
            out.append(f'<rect class="{panel.key}-under" data-layer="{row["index"]}" data-value="{under}" '
                       f'x="{x0}" y="{y + 2}" width="{_num(under * scale)}" height="{ROW_H - 4}" '
                       f'fill="{COLORS["cycles"]}"><title>{fmt_int(under)} estimated cycles</title></rect>')
        if value is None:
            continue
        color = panel.color if isinstance(panel.color, str) else panel.color[i]
        w = value * scale
        data = f"{value:.4f}" if isinstance(value, float) else str(value)
        out.append(f'<rect class="{panel.key}" data-layer="{row["index"]}" data-value="{data}" x="{x0}" '
                   f'y="{y + 5}" width="{_num(w)}" height="{ROW_H - 10 if under is not None else ROW_H - 8}" '
                   f'fill="{color}"><title>{escape(panel.labels[i])}</title></rect>')
        end = max(w, under * scale if under is not None else 0)
        out.append(f'<text x="{_num(x0 + end + 3)}" y="{y + 13}" fill="#333">{escape(panel.labels[i])}</text>')
    if panel.reference is not None and scale:
        x = _num(x0 + panel.reference * scale)
        out.append(f'<line class="reference" x1="{x}" y1="{HEAD_H - 10}" x2="{x}" y2="{height - 2}" '
                   f'stroke="{COLORS["ref"]}" stroke-dasharray="3,2"/>')
        out.append(f'<text x="{x}" y="{HEAD_H - 12}" text-anchor="middle" fill="#333">{panel.reference}</text>')
    return out


# ---- memory timeline -----------------------------------------------------------------------

def step_labels(figures: dict, steps: int) -> list[str]:
    names = [row["name"] for row in figures["layers"]]
    return [names[t] if t < len(names) else "output copy" for t in range(steps)]


def timeline_chart(report: dict, figures: dict, live: list[int]) -> str:
    tensors = [x for x in report["arena_tensors"] if x["size"] > 0]
    steps = len(live)
    arena, bound = report["arena_size"], report["arena_lower_bound"]
    top = max(arena, peak_offset(tensors), 1)
    sx, sy = TL_PLOT_W / max(steps, 1), TL_PLOT_H / top
    width, height = TL_LEFT + TL_PLOT_W + TL_RIGHT, TL_TOP + TL_PLOT_H + TL_BOTTOM
    base = TL_TOP + TL_PLOT_H

    def y(b: float) -> str:
        return _num(base - b * sy)

    labels = step_labels(figures, steps)
    out = [f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11" '
           f'data-arena="{arena}" data-lower-bound="{bound}" data-peak="{peak_offset(tensors)}" '
           f'data-steps="{steps}">',
           f'<rect x="{TL_LEFT}" y="{TL_TOP}" width="{TL_PLOT_W}" height="{TL_PLOT_H}" fill="#fafafa" stroke="#999"/>']
    names = []      # drawn over every rectangle
    for k, x in enumerate(tensors):
        scratch = x["name"].endswith(SCRATCH)
        color = SCRATCH_COLOR if scratch else PALETTE[k % len(PALETTE)]
        x0, x1 = TL_LEFT + x["first"] * sx, TL_LEFT + (x["last"] + 1) * sx
        steps_txt = f"step {x['first']}" if x["first"] == x["last"] else f"steps {x['first']}-{x['last']}"
        out.append(f'<rect class="tensor" data-name="{escape(x["name"])}" data-offset="{x["offset"]}" '
                   f'data-size="{x["size"]}" x="{_num(x0)}" y="{y(x["offset"] + x["size"])}" width="{_num(x1 - x0)}" '
                   f'height="{_num(x["size"] * sy)}" fill="{color}" fill-opacity="0.75" stroke="#fff" '
                   f'stroke-width="0.5"><title>%{escape(x["name"])}: {x["size"]:,} B at offset {x["offset"]:,}, '
                   f'{steps_txt}</title></rect>')
        # the name at the tensor's left edge, on one of three lines (a result written over its
        # operand starts a step later and one line lower), where the rectangle has room
        line = 0 if scratch else k % 3
        label = "scratch" if scratch else "%" + x["name"]
        if x1 - x0 >= 6 * min(len(label), 10) and x["size"] * sy >= 14 * (line + 1) + 2:
            names.append(f'<text x="{_num(x0 + 3)}" y="{y(x["offset"] + x["size"])}" dy="{12 + 14 * line}" '
                         f'font-size="10" fill="#222">{escape(label)}</text>')
    out += names
    points = []
    for t, b in enumerate(live):
        points += [f"{_num(TL_LEFT + t * sx)},{y(b)}", f"{_num(TL_LEFT + (t + 1) * sx)},{y(b)}"]
    out.append(f'<polyline class="live" points="{" ".join(points)}" fill="none" stroke="#000" stroke-width="1.5"/>')
    for value, name, dash, color in ((arena, f"arena {arena:,} B", "", COLORS["arena"]),
                                     (bound, f"lower bound {bound:,} B", ' stroke-dasharray="5,3"', COLORS["bound"])):
        out.append(f'<line x1="{TL_LEFT}" y1="{y(value)}" x2="{TL_LEFT + TL_PLOT_W}" y2="{y(value)}" '
                   f'stroke="{color}" stroke-width="1.5"{dash}/>')
    # right-hand legend: the two lines' labels, apart even when arena == bound
    lx = TL_LEFT + TL_PLOT_W + 8
    out.append(f'<text x="{lx}" y="{y(arena)}" dy="4" fill="{COLORS["arena"]}">arena {arena:,} B</text>')
    out.append(f'<text x="{lx}" y="{y(arena)}" dy="18" fill="{COLORS["bound"]}">lower bound {bound:,} B</text>')
    out.append(f'<text x="{lx}" y="{y(arena)}" dy="32">— bytes live (max {max(live, default=0):,})</text>')
    # axes: bytes every quarter, a step label per column (thinned to fit)
    for q in range(5):
        b = top * q / 4
        out.append(f'<text x="{TL_LEFT - 4}" y="{y(b)}" dy="4" text-anchor="end" fill="#333">{fmt_int(b)}</text>')
    every = max(1, -(-steps * 16 // TL_PLOT_W))
    for t in range(0, steps, every):
        cx = _num(TL_LEFT + (t + 0.5) * sx)
        out.append(f'<text x="{cx}" y="{base + 14}" text-anchor="middle" fill="#333">{t}'
                   f'<title>{escape(labels[t])}</title></text>')
    out.append(f'<text x="{_num(TL_LEFT + TL_PLOT_W / 2)}" y="{base + 32}" text-anchor="middle">step (layer index)</text>')
    out.append(f'<text x="14" y="{_num(TL_TOP + TL_PLOT_H / 2)}" text-anchor="middle" '
               f'transform="rotate(-90 14 {_num(TL_TOP + TL_PLOT_H / 2)})">arena offset (bytes)</text>')
    out.append("</svg>")
    return "\n".join(out)


# ---- page -----------------------------------------------------------------------------------

def summary_rows(report: dict, f: dict) -> list[tuple[str, str]]:
    per_mac = f"{f['instructions_per_mac']:.2f}" if f.get("instructions_per_mac") else "-"
    rows = [("instructions / inference", f"{f['instructions']:,} ({per_mac} per MAC, {f['macs']:,} MACs; "
                                         f"{f['method']} count)")]
    if f.get("cycles") is not None:
        rows.append(("estimated cycles", f"{f['cycles']:,} (CPI {f['cpi']:.2f}; {f['cycle_model']})"))
        if f.get("latency_ms") is not None:
            rows.append(("latency", f"{f['latency_ms']:.3f} ms at {f['clock_mhz']:g} MHz ({f['clock_from']})"))
    else:
        rows.append(("estimated cycles", f"unavailable ({f.get('cycle_model') or 'no class counts'})"))
    rows += [
        ("flash", f"{fmt_bytes(f['flash'])} (text + rodata + data, run image)"),
        ("RAM", f"{fmt_bytes(f['ram'])} = arena {f['arena']:,} + static {f['static_ram']:,} + stack {f['stack']:,}"),
        ("arena", f"{fmt_bytes(report['arena_size'])} (lower bound {report['arena_lower_bound']:,} B)"),
        ("pipeline", report.get("pipeline", "")),
    ]
    return rows


def render(report: dict, figures: dict) -> str:
    """The page for one bundle's report.json and its bench figures."""
    check_inputs(report, figures)
    tensors = report["arena_tensors"]
    steps = max([len(report["layers"])] + [x["last"] + 1 for x in tensors])
    live = live_bytes(tensors, steps)
    title = f"{report['graph']} on {figures['target']}"
    return _ENV.get_template("bench.html.j2").render(
        title=title, summary=summary_rows(report, figures), notes=list(figures.get("notes") or []),
        layer_chart=Markup(layer_chart(figures, live)),
        timeline=Markup(timeline_chart(report, figures, live)),
        reference=REFERENCE_INSTR_PER_MAC, version=report.get("tinyc_version", ""),
        n_layers=len(figures["layers"]), n_tensors=len(tensors))
