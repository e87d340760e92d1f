"""A self-contained HTML report of an ``analyze``, ``rank`` or ``certify`` result dict (their
``--json`` output): tables, and plots drawn as inline SVG here, so that the page needs no
network, no script and nothing beyond the light client to be written.

Everything that comes from the user or the model (layer and file names, warnings) is escaped.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from typing import Any

from ..local import write_atomic
from .report import INDEX_NAMES

NOT_RECORDED = "not recorded"
MAX_QUERY_ROWS = 1000  # certify rows shown; the rest are counted, not listed
# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
SKIP_KEYS = ("name", "kind", "op_type", "shape", "reduction", "dims", "cross", "probe", "notes",
             "error")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4}td.name,th.name{text-align:left;font-family:monospace}
tr.plateau td{background:#fff6d5}
.figs{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;border:1px solid #eee;padding:4px}figcaption{font-size:12px;color:#555}
.scroll{overflow-x:auto}.warn{color:#8a4b00}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px}
dt{font-weight:600}dd{margin:0;font-family:monospace}
"""


def kind_of(result: dict[str, Any]) -> str:
    """``analysis``, ``ranking`` or ``certification``: which command's result this is
    (ValueError for anything else)."""
    if isinstance(result, dict):
        if isinstance(result.get("layers"), list):
            return "analysis"
        if isinstance(result.get("models"), list) and "ranking" in result:
            return "ranking"
        if isinstance(result.get("reference"), dict) and isinstance(result.get("results"), list):
            return "certification"
    raise ValueError("expected the --json result of analyze, rank or certify (an object with "
                     "'layers', 'models' and 'ranking', or 'reference' and 'results')")


def write_report(result: dict[str, Any], path: str | os.PathLike[str],
                 title: str | None = None) -> Path:
    """Write the HTML report of ``result`` to ``path`` atomically; return the path."""
    page = render_report(result, title)
    return write_atomic(Path(path), lambda f: f.write(page.encode("utf-8")))


def report_from_json(json_path: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write the report of a saved ``--json`` result file (ValueError when it is not one)."""
    try:
        result = json.loads(Path(json_path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{json_path}: not a UTF-8 text file; expected the --json output "
                         "of analyze, rank or certify") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{json_path}: not JSON ({exc.msg} at line {exc.lineno}); expected "
                         "the --json output of analyze, rank or certify") from None
    try:
        kind_of(result)
    except ValueError as exc:
        raise ValueError(f"{json_path}: {exc}") from None
    return write_report(result, out, title=f"layerscope report: {Path(json_path).name}")


def render_report(result: dict[str, Any], title: str | None = None) -> str:
    """The HTML page of ``result``."""
    kind = kind_of(result)
    body = {"analysis": _analysis, "ranking": _ranking,
            "certification": _certification}[kind](result)
    title = title or f"layerscope {kind} report"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1>{body}{_run_section(result)}</body></html>\n"
    )


# formatting ---------------------------------------------------------------------------------
def _num(value: Any, digits: int = 4) -> str:
    if value is None or isinstance(value, bool):
        return "-" if value is None else escape(str(value))
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return escape(str(value))
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return escape(str(value))


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "",
           row_classes: Sequence[str] | None = None, name_cols: Sequence[int] = (1,)) -> str:
    """A table; ``head`` is escaped here, the cells are HTML already; ``name_cols`` are
    left-aligned."""
    name_col = ' class="name"'
    th = "".join(f"<th{name_col if i in name_cols else ''}>{escape(h)}</th>"
                 for i, h in enumerate(head))
    out = [f"<div class=\"scroll\"><table class=\"{cls}\"><thead><tr>{th}</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        rc = row_classes[i] if row_classes else ""
        out.append(f"<tr class=\"{rc}\">" + "".join(row) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _td(html: str, name: bool = False) -> str:
    return f"<td class=\"name\">{html}</td>" if name else f"<td>{html}</td>"


def _warnings(items: Iterable[str]) -> str:
    lines = "".join(f"<li class=\"warn\">{escape(str(w))}</li>" for w in items)
    return f"<ul>{lines}</ul>" if lines else ""


# SVG ----------------------------------------------------------------------------------------
def line_chart(title: str, labels: Sequence[str], series: Sequence[tuple[str, list[float | None],
               bool]], marker: int | None = None, width: int = 420, height: int = 260) -> str:
    """An SVG line chart: one point per label for each ``(name, values, dashed)`` series
    (None: no point), a vertical line at index ``marker``. Each point is a ``<circle>`` with
    ``data-series``, ``data-x`` and ``data-value`` attributes."""
    left, right, top, bottom = 56, 10, 24, 70
    pw, ph = width - left - right, height - top - bottom
    values = [v for _, vs, _ in series for v in vs if v is not None and math.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    n = max(len(labels), 1)

    def x(i: int) -> float:
        return left + (pw * (i + 0.5) / n)

    def y(v: float) -> float:
        return top + ph * (1 - (v - lo) / (hi - lo))

    out = [f"<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{width}\" "
           f"height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" "
           f"aria-label=\"{escape(title)}\">",
           f"<text x=\"{left}\" y=\"15\" font-size=\"13\" font-weight=\"600\">"
           f"{escape(title)}</text>",
           f"<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" "
           "stroke=\"#bbb\"/>"]
    for k in range(5):  # y grid and ticks
        tick = lo + (hi - lo) * k / 4
        out.append(f"<line x1=\"{left}\" x2=\"{left + pw}\" y1=\"{y(tick):.1f}\" "
                   f"y2=\"{y(tick):.1f}\" stroke=\"#eee\"/><text x=\"{left - 4}\" "
                   f"y=\"{y(tick) + 3:.1f}\" font-size=\"10\" text-anchor=\"end\">"
                   f"{tick:.3g}</text>")
    for i, lab in enumerate(labels):
        short = lab if len(lab) <= 18 else "..." + lab[-15:]
        out.append(f"<text font-size=\"10\" text-anchor=\"end\" transform=\"translate("
                   f"{x(i):.1f},{top + ph + 10}) rotate(-40)\"><title>{escape(lab)}</title>"
                   f"{escape(short)}</text>")
    if marker is not None and 0 <= marker < n:
        out.append(f"<line class=\"plateau\" x1=\"{x(marker):.1f}\" x2=\"{x(marker):.1f}\" "
                   f"y1=\"{top}\" y2=\"{top + ph}\" stroke=\"#888\" stroke-dasharray=\"2,3\"/>")
    legend_x = left + 4
    for s, (name, vs, dashed) in enumerate(series):
        colour = COLOURS[(s // 2 if len(series) > 1 else s) % len(COLOURS)]
        pts = [(x(i), y(v)) for i, v in enumerate(vs) if v is not None and math.isfinite(v)]
        dash = " stroke-dasharray=\"5,3\"" if dashed else ""
        if len(pts) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
            out.append(f"<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.6\""
                       f"{dash} points=\"{path}\"/>")
        for i, v in enumerate(vs):
            if v is None or not math.isfinite(v):
                continue
            out.append(f"<circle class=\"point\" data-series=\"{escape(name)}\" "
                       f"data-x=\"{escape(labels[i])}\" data-value=\"{v!r}\" cx=\"{x(i):.1f}\" "
                       f"cy=\"{y(v):.1f}\" r=\"3\" fill=\"{'white' if dashed else colour}\" "
                       f"stroke=\"{colour}\"><title>{escape(labels[i])}: {escape(name)} "
                       f"{v:.4f}</title></circle>")
        ly = top + 12 + 13 * s
        out.append(f"<line x1=\"{legend_x}\" x2=\"{legend_x + 16}\" y1=\"{ly - 4}\" "
                   f"y2=\"{ly - 4}\" stroke=\"{colour}\" stroke-width=\"1.6\"{dash}/>"
                   f"<text x=\"{legend_x + 20}\" y=\"{ly}\" font-size=\"10\">{escape(name)}"
                   "</text>")
    out.append("</svg>")
    return "".join(out)


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float | None],
              width: int = 520) -> str:
    """A horizontal SVG bar chart; each bar is a ``<rect class="bar">`` with ``data-value``."""
    row, left = 22, 180
    height = 30 + row * max(len(labels), 1)
    finite = [v for v in values if v is not None and math.isfinite(v)]
    lo, hi = min([*finite, 0.0]), max([*finite, 0.0])
    span = (hi - lo) or 1.0
    plot_w = width - left - 60

    def x(v: float) -> float:
        return left + plot_w * (v - lo) / span

    out = [f"<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{width}\" "
           f"height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" "
           f"aria-label=\"{escape(title)}\"><text x=\"4\" y=\"15\" font-size=\"13\" "
           f"font-weight=\"600\">{escape(title)}</text>",
           f"<line x1=\"{x(0.0):.1f}\" x2=\"{x(0.0):.1f}\" y1=\"22\" y2=\"{height - 4}\" "
           "stroke=\"#999\"/>"]
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        yy = 24 + row * i
        short = lab if len(lab) <= 28 else "..." + lab[-25:]
        out.append(f"<text x=\"{left - 6}\" y=\"{yy + 14}\" font-size=\"11\" "
                   f"text-anchor=\"end\"><title>{escape(lab)}</title>{escape(short)}</text>")
        if v is None or not math.isfinite(v):
            continue
        x0, x1 = sorted((x(0.0), x(v)))
        out.append(f"<rect class=\"bar\" data-x=\"{escape(lab)}\" data-value=\"{v!r}\" "
                   f"x=\"{x0:.1f}\" y=\"{yy + 3}\" width=\"{max(x1 - x0, 1.0):.1f}\" "
                   f"height=\"{row - 6}\" fill=\"{COLOURS[0 if v >= 0 else 1]}\"/>"
                   f"<text x=\"{x1 + 4:.1f}\" y=\"{yy + 14}\" font-size=\"11\">{v:.4f}</text>")
    out.append("</svg>")
    return "".join(out)


# analysis -----------------------------------------------------------------------------------
def _columns(layers: list[dict[str, Any]], orders: Sequence[Any]) -> list[tuple[str, str,
                                                                               str | None]]:
    """(label, key, order) of every index the layers hold, in the canonical order."""
    found: list[tuple[str, str, str | None]] = []
    keys = [k for la in layers for k in la if k not in SKIP_KEYS]
    ordered = [k for k in INDEX_NAMES if k in keys] + [k for k in dict.fromkeys(keys)
                                                         if k not in INDEX_NAMES]
    for k in ordered:
        sample = next(la[k] for la in layers if k in la)
        if isinstance(sample, dict):
            ords = [str(o) for o in orders if any(str(o) in (la.get(k) or {}) for la in layers)]
            found.extend((f"{k}[{o}]", k, o) for o in ords)
        elif isinstance(sample, (int, float)):
            found.append((k, k, None))
    return found


def _value(src: dict[str, Any] | None, key: str, order: str | None) -> float | None:
    v = None if src is None else src.get(key)
    if isinstance(v, dict):
        v = v.get(order)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _analysis(out: dict[str, Any]) -> str:
    layers: list[dict[str, Any]] = out["layers"]
    orders = (out.get("options") or {}).get("orders") or []
    cols = _columns(layers, orders)
    has_test = any("cross" in la for la in layers)
    has_probe = any(la.get("probe") for la in layers)
    metric = "accuracy" if out.get("task") == "classification" else "r2"
    plateau = out.get("plateau") or None
    names = [str(la.get("name", "")) for la in layers]

    head = ["#", "layer", "op", "reduction", "dims"]
    for label, _, _ in cols:
        head += [f"{label} train"] + ([f"{label} test"] if has_test else [])
    if has_probe:
        head += [f"probe {metric} train"] + ([f"probe {metric} test"] if has_test else [])
    rows, classes = [], []
    for i, la in enumerate(layers):
        cells = [_td(str(i)), _td(escape(names[i]), name=True),
                 _td(escape(str(la.get("op_type", "")))),
                 _td(escape(str(la.get("reduction", "")))), _td(_num(la.get("dims")))]
        for _, k, o in cols:
            cells.append(_td(_num(_value(la, k, o))))
            if has_test:
                cells.append(_td(_num(_value(la.get("cross"), k, o))))
        if has_probe:
            p = la.get("probe") or {}
            cells.append(_td(_num(p.get(f"train_{metric}"))))
            if has_test:
                cells.append(_td(_num(p.get(f"test_{metric}"))))
        rows.append(cells)
        classes.append("plateau" if plateau and plateau.get("position") == i else "")

    model = out.get("model_path") or (out.get("model") or {}).get("id") or ""
    parts = [f"<p>model <code>{escape(str(model))}</code>: {escape(str(out.get('task', '')))}, "
             f"{len(layers)} layers</p>", "<h2>Layer table</h2>",
             _table(head, rows, "layers", classes)]
    if plateau:
        parts.append(
            f"<p class=\"plateau\">Plateau: <b>{escape(str(plateau.get('index')))}</b> stops "
            f"improving at layer {_num(plateau.get('position'))} "
            f"(<code>{escape(str(plateau.get('layer')))}</code>, "
            f"{_num(plateau.get('value'))}): no later layer rises by more than "
            f"{_num(plateau.get('tolerance'))}.</p>")
    else:
        parts.append("<p>Plateau: none found.</p>")
    marker = plateau.get("position") if plateau else None
    figs = []
    for label, k, o in cols:
        series = [("train", [_value(la, k, o) for la in layers], False)]
        if has_test:
            series.append(("test", [_value(la.get("cross"), k, o) for la in layers], True))
        chart = line_chart(label, names, series, marker)
        figs.append(f"<figure>{chart}<figcaption>{escape(label)} per layer</figcaption>"
                    "</figure>")
        if k in ("si", "smi_linear") and o is None and has_probe:
            pseries = [("train", [_value(la.get("probe"), f"train_{metric}", None)
                                  for la in layers], False)]
            if has_test:
                pseries.append(("test", [_value(la.get("probe"), f"test_{metric}", None)
                                         for la in layers], True))
            figs.append(f"<figure>{line_chart(f'linear probe {metric}', names, pseries, marker)}"
                        f"<figcaption>ridge probe {metric} per layer, beside {escape(label)}"
                        "</figcaption></figure>")
    parts += ["<h2>Per-layer plots</h2>", f"<div class=\"figs\">{''.join(figs)}</div>"]
    notes = [f"{la.get('name')}: {n}" for la in layers for n in la.get("notes", [])]
    notes += [f"{la.get('name')}: error: {la['error']}" for la in layers if la.get("error")]
    if notes or out.get("warnings"):
        parts += ["<h2>Notes and warnings</h2>", _warnings([*notes, *out.get("warnings", [])])]
    return "".join(parts)


# ranking ------------------------------------------------------------------------------------
BASELINES = ("logme", "leep", "nce", "h_score")


def _ranking(out: dict[str, Any]) -> str:
    models = sorted(out["models"], key=lambda m: m.get("rank", 0))
    has_base = any(m.get("baselines") for m in models)
    index = models[0].get("index", "-") if models else "-"
    head = ["rank", "model", "layer", "reduction", "features", f"{index} all features",
            f"{index} selected", "subset size"] + (list(BASELINES) if has_base else [])
    rows = []
    for m in models:
        cells = [_td(_num(m.get("rank"))), _td(escape(str(m.get("model"))), name=True),
                 _td(escape(str(m.get("layer", ""))), name=True),
                 _td(escape(str(m.get("reduction", "")))), _td(_num(m.get("features"))),
                 _td(_num(m.get("all_features"))), _td(_num(m.get("selected"))),
                 _td(_num(m.get("subset_size")))]
        if has_base:
            b = m.get("baselines") or {}
            cells += [_td(_num(b.get(k))) for k in BASELINES]
        rows.append(cells)
    labels = [str(m.get("model")) for m in models]
    figs = [bar_chart(f"{index} of the selected features", labels,
                      [_value(m, "selected", None) for m in models])]
    if has_base:
        for k in BASELINES:
            figs.append(bar_chart(f"baseline: {k}", labels,
                                  [_value(m.get("baselines"), k, None) for m in models]))
    rules = "".join(f"<li><code>{escape(str(m.get('model')))}</code>: "
                    f"{escape(str(m.get('layer_rule', '')))}</li>" for m in models)
    return "".join([
        f"<p>ranking for {escape(str(out.get('task', '')))}, best first (index "
        f"{escape(str(index))})</p>", "<h2>Ranking</h2>",
        _table(head, rows, "ranking", name_cols=(1, 2)),
        "<h2>Plots</h2>", f"<div class=\"figs\">{''.join(figs)}</div>",
        f"<h2>Layers</h2><ul>{rules}</ul>", _warnings(out.get("warnings", [])),
    ])


# certification ------------------------------------------------------------------------------
def _certification(out: dict[str, Any]) -> str:
    ref = out["reference"]
    summary = ref.get("summary") or {}
    results: list[dict[str, Any]] = out["results"]
    info = "".join(f"<dt>{escape(str(k))}</dt><dd>{_num(v)}</dd>" for k, v in
                   [("reference", ref.get("id")), ("layer", ref.get("layer")),
                    ("reduction", ref.get("reduction")), ("points", ref.get("n_samples")),
                    ("features", ref.get("features")), ("task", ref.get("task")),
                    *summary.items()] if not isinstance(v, (dict, list)))
    parts = ["<h2>Certification summary</h2>", f"<dl>{info}</dl>"]
    shown = results[:MAX_QUERY_ROWS]
    if ref.get("task") == "classification":
        guaranteed = sum(1 for r in results if r.get("guarantee", 0) > 0)
        parts.append(f"<p>{guaranteed} of {len(results)} queries guaranteed.</p>")
        cols = ["prediction", "nn_label", "dp", "dn", "confidence", "guarantee",
                "certified_radius"]
        radii = [_value(r, "certified_radius", None) for r in shown]
        chart = bar_chart("certified radius per query", [str(i) for i in range(len(shown))],
                          radii) if len(shown) <= 60 else ""
    else:
        cols = ["dp", "error_bound", "neighbourhood_size", "mode"]
        bounds = [_value(r, "error_bound", None) for r in shown]
        chart = bar_chart("error bound per query", [str(i) for i in range(len(shown))],
                          bounds) if len(shown) <= 60 else ""
    rows = [[_td(str(i))] + [_td(_num(r.get(c))) for c in cols] for i, r in enumerate(shown)]
    parts += ["<h2>Queries</h2>", _table(["#", *cols], rows, "queries", name_cols=())]
    if len(results) > len(shown):
        parts.append(f"<p>{len(results) - len(shown)} more queries not listed.</p>")
    if chart:
        parts.append(f"<div class=\"figs\"><figure>{chart}</figure></div>")
    parts.append(_warnings(out.get("warnings", [])))
    return "".join(parts)


# options and device -------------------------------------------------------------------------
def _device(result: dict[str, Any]) -> tuple[str, str]:
    """(device, providers) as the result records them, else "not recorded"."""
    places = [result, result.get("options") or {}, result.get("reference") or {}]
    places += [m for m in result.get("models") or [] if isinstance(m, dict)]
    device = next((p["device"] for p in places if p.get("device")), None)
    providers = next((p["providers"] for p in places if p.get("providers")), None)
    if isinstance(providers, list):
        providers = ", ".join(str(p) for p in providers)
    return (str(device) if device else NOT_RECORDED,
            str(providers) if providers else NOT_RECORDED)


def _run_section(result: dict[str, Any]) -> str:
    device, providers = _device(result)
    options = result.get("options") or {}
    rows = "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(json.dumps(v, default=str))}</dd>"
                   for k, v in options.items())
    return ("<h2>Run</h2><dl>"
            f"<dt>device</dt><dd class=\"device\">{escape(device)}</dd>"
            f"<dt>providers</dt><dd class=\"providers\">{escape(providers)}</dd>"
            f"</dl><h2>Options</h2><dl>{rows or '<dt>options</dt><dd>none recorded</dd>'}</dl>")
