"""Human-readable reports of the CLI's results: a model's layers, the index table, the layer
table, the ranking, certification and export reports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")

# Canonical names (METRICS.md) in the order reports list them.
INDEX_NAMES = (
    "si", "high_order_si", "soft_order_si", "anti_si", "center_si", "margin_order",
    "smi_linear", "smi_exp", "high_order_smi_linear", "high_order_smi_exp",
    "soft_order_smi_linear", "soft_order_smi_exp", "anti_smi_linear", "anti_smi_exp",
)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _fmt3(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def _rows(d: dict[str, Any], orders: list[int]) -> list[tuple[str, Any]]:
    """(label, value) rows for the dataset-level values of one set, in canonical order."""
    rows: list[tuple[str, Any]] = []
    for name in INDEX_NAMES:
        if name not in d or name == "feature_ranking" or name.startswith("single_feature"):
            continue
        value = d[name]
        if isinstance(value, dict):
            rows.extend((f"{name}[{r}]", value.get(str(r))) for r in orders)
        else:
            rows.append((name, value))
    return rows


def format_table(out: dict[str, Any], per_class: bool = False) -> str:
    """Return the human-readable report of an ``indices`` result dict."""
    orders = out["options"]["orders"]
    head = (
        f"{out['data']}: {out['task']}, {out['n_samples']} samples, "
        f"{out['n_features']} features"
    )
    if out.get("classes") is not None:
        head += f", {len(out['classes'])} classes"
    lines = [head]
    if "cross" in out:
        lines.append(f"test: {out['test']}, {out['cross']['n_samples']} samples")
    train_rows = dict(_rows(out, orders))
    cross_rows = dict(_rows(out["cross"], orders)) if "cross" in out else {}
    names = list(train_rows)
    width = max([len(n) for n in names] + [5])
    cols = ["train"] + (["test"] if "cross" in out else [])
    lines.append("")
    lines.append(f"{'index':<{width}}  " + "  ".join(f"{c:>8}" for c in cols))
    lines.append("-" * (width + 2 + 10 * len(cols)))
    for n in names:
        vals = [_fmt(train_rows[n])]
        if "cross" in out:
            vals.append(_fmt(cross_rows.get(n)) if n in cross_rows else "")
        lines.append(f"{n:<{width}}  " + "  ".join(f"{v:>8}" for v in vals))
    for key in ("single_feature_si", "single_feature_smi_linear", "single_feature_smi_exp"):
        if key in out:
            scores = np.asarray(out[key], dtype=float)
            top = np.argsort(-scores, kind="stable")[:5]
            best = ", ".join(f"#{i}={scores[i]:.3f}" for i in top)
            lines.append(f"{key}: best features {best}")
    if "feature_ranking" in out:
        fr = out["feature_ranking"]
        lines.append(
            f"feature_ranking ({fr['criterion']}): order {fr['order'][:12]}"
            f"{' ...' if len(fr['order']) > 12 else ''}; best subset of "
            f"{len(fr['best_subset'])} features reaches {max(fr['scores']):.4f}"
        )
    if per_class and out.get("classes") is not None:
        lines.append("")
        lines.append(_per_class_table(out, orders))
    knn_info = out["options"].get("knn", {}).get("train")
    if knn_info:
        lines.append("")
        lines.append(
            f"exact k-NN ({knn_info['candidate_search']} candidates): "
            f"{knn_info['certified_rows']} rows proven in float32, "
            f"{knn_info['reranked_rows']} re-ranked in float64, "
            f"{knn_info['fallback_rows']} full scans; {out['options']['seconds']:.2f} s "
            f"on {out['options']['device']}"
        )
    for w in out.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def _per_class_table(out: dict[str, Any], orders: list[int]) -> str:
    """One row per index, one column per label."""
    rows: list[tuple[str, dict[str, Any]]] = []
    for key, value in out.items():
        if not key.endswith("_per_class"):
            continue
        name = key[: -len("_per_class")]
        if value and isinstance(next(iter(value.values())), dict):
            rows.extend((f"{name}[{r}]", value[str(r)]) for r in orders if str(r) in value)
        else:
            rows.append((name, value))
    labels = [str(c) for c in out["classes"]]
    width = max([len(n) for n, _ in rows] + [5])
    cell = max([len(c) for c in labels] + [6])
    lines = [
        "per class (train):",
        f"{'label':<{width}}  " + " ".join(f"{c:>{cell}}" for c in labels),
    ]
    for name, col in rows:
        cells = " ".join(f"{_fmt3(col.get(c)):>{cell}}" for c in labels)
        lines.append(f"{name:<{width}}  {cells}")
    return "\n".join(lines)


TABLE_WIDTH = 100  # the layer table splits into panels of at most this many columns


def format_layer_table(out: dict[str, Any]) -> str:
    """Return the human-readable layer table of an ``analyze`` result dict."""
    orders = out["options"]["orders"]
    layers = out["layers"]
    cols: list[tuple[str, str, str | None]] = []
    for la in layers:
        for k, v in la.items():
            if k in ("name", "kind", "op_type", "shape", "reduction", "dims", "cross", "probe",
                     "notes", "error"):
                continue
            entries = [(k, str(o)) for o in orders if str(o) in v] if isinstance(v, dict) \
                else [(k, None)]
            for name, o in entries:
                label = name if o is None else f"{name}[{o}]"
                if all(c[0] != label for c in cols):
                    cols.append((label, name, o))
    def cell(src: dict[str, Any] | None, name: str, o: str | None) -> str:
        v = None if src is None else src.get(name)
        if isinstance(v, dict):
            v = v.get(o)
        return "-" if v is None else f"{v:.4f}"

    # each column group: its header cells and one cell per layer (train, then test where
    # the test set gives the value)
    groups: list[tuple[list[str], list[list[str]]]] = []
    for label, n, o in cols:
        train = [cell(la, n, o) for la in layers]
        test = [cell(la.get("cross"), n, o) for la in layers]
        w = max(len(label), 7)
        if any(t != "-" for t in test):
            groups.append(([f"{label:>{w}}", f"{'test':>7}"],
                           [[f"{a:>{w}}", f"{t:>7}"] for a, t in zip(train, test, strict=True)]))
        else:
            groups.append(([f"{label:>{w}}"], [[f"{a:>{w}}"] for a in train]))
    if any("probe" in la for la in layers):
        key = "accuracy" if out["task"] == "classification" else "r2"
        ps = [la.get("probe") or {} for la in layers]
        tr = ["-" if p.get(f"train_{key}") is None else f"{p[f'train_{key}']:.4f}" for p in ps]
        te = ["-" if p.get(f"test_{key}") is None else f"{p[f'test_{key}']:.4f}" for p in ps]
        al = ["-" if p.get("alpha") is None else f"{p['alpha']:.3g}" for p in ps]
        has_te = any(t != "-" for t in te)
        groups.append(([f"{'probe':>7}"] + ([f"{'test':>7}"] if has_te else [])
                       + [f"{'alpha':>8}"],
                       [[f"{a:>7}"] + ([f"{t:>7}"] if has_te else []) + [f"{al_:>8}"]
                        for a, t, al_ in zip(tr, te, al, strict=True)]))

    nw = min(40, max(len(la["name"]) for la in layers) + 2)
    names = [la["name"] if len(la["name"]) <= nw - 2 else "..." + la["name"][-(nw - 5):]
             for la in layers]
    first_left = f"{'#':>2} {'layer':<{nw}} {'op':<12} {'reduce':<12} {'dims':>6}"
    left_rows = [f"{i:>2} {names[i]:<{nw}} {la['op_type'][:12]:<12} "
                 f"{la['reduction'][:12]:<12} {la['dims']:>6}" for i, la in enumerate(layers)]
    # wider than TABLE_WIDTH: the column groups go into panels, each repeating the layer
    panels: list[list[int]] = [[]]
    width = len(first_left)
    for g, (heads, _) in enumerate(groups):
        gw = sum(len(h) + 1 for h in heads)
        if panels[-1] and width + gw > TABLE_WIDTH:
            panels.append([])
            width = 3 + nw
        panels[-1].append(g)
        width += gw
    lines = [f"{out['model_path']}: {out['task']}, {len(layers)} layers"]
    for p_i, panel in enumerate(panels):
        if p_i:
            lines.append("")
        left_head = first_left if p_i == 0 else f"{'#':>2} {'layer':<{nw}}"
        head = left_head + "".join(" " + h for g in panel for h in groups[g][0])
        lines += [head, "-" * len(head)]
        for i, la in enumerate(layers):
            left = left_rows[i] if p_i == 0 else f"{i:>2} {names[i]:<{nw}}"
            row = left + "".join(" " + c for g in panel for c in groups[g][1][i])
            if la.get("error") and p_i == 0:
                row += f"  error: {la['error']}"
            lines.append(row.rstrip() if row.strip() else row)
    pl = out.get("plateau")
    if pl:
        lines.append("")
        lines.append(
            f"{pl['index']} stops improving at layer {pl['position']} ({pl['layer']}, "
            f"{pl['value']:.4f}): no later layer rises by more than {pl['tolerance']}"
        )
    for la in layers:
        for note in la.get("notes", []):
            lines.append(f"note ({la['name']}): {note}")
    for w in out.get("warnings", []):
        lines.append(f"warning: {w}")
    if out.get("plot"):
        lines.append(f"plot written to {out['plot']}")
    return "\n".join(lines)


def format_ranking(out: dict[str, Any]) -> str:
    """The ranking table: one row per model, best first."""
    models = sorted(out["models"], key=lambda m: m["rank"])
    # the scores asked for, in the server's order; NCTI's terms stay in the JSON
    base = list(dict.fromkeys(k for m in models for k in (m.get("baselines") or {})
                              if "." not in k))
    head = f"{'rank':>4}  {'model':<28} {'layer':<24} {'dims':>6} {'all':>7} {'selected':>8} " \
           f"{'size':>5}"
    widths = {k: max(9, len(k)) for k in base}
    head += "".join(f" {k:>{widths[k]}}" for k in base)
    method = (out.get("options") or {}).get("method", "seed")
    lines = [f"ranking for {out['task']} (method {method}, index: "
             f"{models[0]['index'] if models else '-'})",
             head, "-" * len(head)]
    for m in models:
        name = str(m["model"])[-28:]
        row = (f"{m['rank']:>4}  {name:<28} {m['layer'][-24:]:<24} {m['features']:>6} "
               f"{m['all_features']:>7.4f} {m['selected']:>8.4f} {m['subset_size']:>5}")
        b = m.get("baselines") or {}
        row += "".join(f" {_fmt(b.get(k)) if b.get(k) is not None else '-':>{widths[k]}}"
                       for k in base)
        lines.append(row)
    for m in models:
        lines.append(f"  {m['model']}: {m['layer_rule']}; "
                     f"reduction {m['reduction']}; {m['seconds']:.2f} s")
    return "\n".join(lines)


CERTIFY_NOTE = ("guarantee +1 means the nearest-neighbour label cannot change within the "
                "uncertainty, not that it is correct")


def format_certify(out: dict[str, Any]) -> str:
    """One line per query: label, distances, guarantee and radius (or the error bound)."""
    ref = out["reference"]
    s = ref["summary"]
    lines = [f"reference {ref['id'][:12]}: layer {ref['layer']} ({ref['reduction']}), "
             f"{ref['n_samples']} points, {ref['features']} features, {ref['task']}"]
    if ref["task"] == "classification":
        lines.append(f"dataset level: confidence (si) {s['confidence']:.4f}, dw_max "
                     f"{s['dw_max']:.4g}, db_min {_fmt(s['db_min'])}, max_uncertainty "
                     f"{_fmt(s['max_uncertainty'])}, guarantee {s['guarantee']:+d}")
        lines.append(f"{'#':>4} {'pred':>5} {'nn':>5} {'dp':>10} {'dn':>10} {'conf':>7} "
                     f"{'guar':>5} {'radius':>10}")
        for i, r in enumerate(out["results"]):
            pred = r.get("prediction")
            lines.append(
                f"{i:>4} {'-' if pred is None else pred:>5} {r['nn_label']:>5} {r['dp']:>10.4g} "
                f"{_fmt(r['dn']):>10} {r['confidence']:>7.4f} {r['guarantee']:>+5d} "
                f"{_fmt(r['certified_radius']):>10}")
        lines.append(CERTIFY_NOTE)
    else:
        lines.append(f"confidence (smi_linear) {s['smi_linear']:.4f}")
        lines.append(f"{'#':>4} {'dp':>10} {'error_bound':>12} {'|N_u|':>6} mode")
        for i, r in enumerate(out["results"]):
            lines.append(f"{i:>4} {r['dp']:>10.4g} {r['error_bound']:>12.4g} "
                         f"{r['neighbourhood_size']:>6} {r['mode']}")
    for w in out.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def format_model(model: dict[str, Any], path: str) -> str:
    """The ``layers`` report of a model dict (``Model.to_dict``): inputs, outputs and the
    candidate layers, ``*`` marking those the auto rule picks."""
    opsets = ", ".join(f"{k} {v}" for k, v in sorted(model["opsets"].items()))
    lines = [f"{path}: IR {model['ir_version']}, opsets {opsets}"]
    for title in ("inputs", "outputs"):
        lines.append(f"{title}:")
        lines.extend(f"  {t['name']}  {t['dtype']}  [{', '.join(t['shape'])}]"
                     for t in model[title])
    layers = model["layers"]
    lines.append(f"candidate layers ({len(layers)}; * = auto):")
    width = max([len(la["name"]) for la in layers] + [4])
    lines.append(f"    {'pos':>4}  {'name':<{width}}  {'op':<20} {'shape':<24} "
                 f"{'values':>8} {'params':>12}")
    for la in layers:
        shape = f"[{', '.join(la['shape'])}]"
        per = la["elements_per_sample"] or "?"
        lines.append(f"  {'*' if la['auto'] else ' '} {la['position']:>4}  "
                     f"{la['name']:<{width}}  {la['op_type']:<20} {shape:<24} {per:>8} "
                     f"{la.get('parameters', 0):>12,}")
    total = model.get("parameters", 0)
    in_layers = sum(la.get("parameters", 0) for la in layers)
    lines.append(f"parameters: {total:,} in total ({in_layers:,} in the candidate layers; "
                 "a layer's params are the weights that compute it)")
    return "\n".join(lines)


def format_export(out: dict[str, Any]) -> str:
    """The export report: the file written and the parity per output."""
    lines = [f"wrote {out['path']} ({out['framework']}, opset {out['opset']}, IR "
             f"{out['ir_version']}); inputs {out['inputs']}, outputs {out['outputs']}"]
    lines.extend(f"  parity {p['name']}: max abs {p['max_abs']:.3g}, max rel "
                 f"{p['max_rel']:.3g} (tolerance {out['tolerance']:g})" for p in out["parity"])
    lines.extend(f"  note: {n}" for n in out.get("notes", []))
    return "\n".join(lines)


def format_compression(out: dict[str, Any]) -> str:
    """Every candidate cut (the chosen one marked), then original vs compressed."""
    key, metric = out["index"], out["metric"]
    head = (f"  {'layer':<32} {'dims':>6} {key:>10} {'probe ' + metric:>14} "
            f"{'parameters':>11} {'MACs':>12}")
    lines = [f"compression of {out.get('model_path', out.get('model_id', ''))} ({out['task']}, "
             f"criterion {out['criterion']}, tolerance {out['tolerance']}); the model's own "
             f"test {metric}: {out['reference']['score']:.4f}", head, "-" * len(head)]
    for c in out["candidates"]:
        mark = "*" if c["layer"] == out["cut"]["layer"] else " "
        lines.append(
            f"{mark} {c['layer'][-32:]:<32} {c['dims']:>6} {_fmt(c.get(key)):>10} "
            f"{_fmt(c.get('probe_test')):>14} {c['kept_parameters']:>11} {c['macs']:>12}")
    cmp = out["comparison"]
    lines.append("")
    lines.append(f"{'':<12} {'test ' + metric:>12} {'parameters':>11} {'bytes':>11} "
                 f"{'MACs':>12} {'ms/batch':>9}")
    for name in ("original", "compressed"):
        m = cmp[name]
        lines.append(f"{name:<12} {m['score']:>12.4f} {m['parameters']:>11} "
                     f"{m['size_bytes']:>11} {m['macs']:>12} {m['latency_ms']:>9.3f}")
    r = cmp["ratios"]
    lines.append(f"{'ratio':<12} {'':>12} {_ratio(r['parameters']):>11} "
                 f"{_ratio(r['size_bytes']):>11} {_ratio(r['macs']):>12} "
                 f"{_ratio(r['latency_ms']):>9}")
    lines.append(f"cut at {out['cut']['layer']} ({out['cut']['reduction']}, "
                 f"{out['cut']['features']} features); the kept part differs from the "
                 f"original by at most {cmp['prefix_max_abs_diff']:.3g}; batch of "
                 f"{cmp['latency_batch']}")
    if out.get("out"):
        lines.append(f"wrote {out['out']} (stored as model {out['model_id'][:12]})")
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
