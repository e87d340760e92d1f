"""The ``layerscope`` command line.

Exit codes: 0 success, 2 bad input (the message says what and what was expected), 1 any
other failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .npz import DataFileError, load_npz, save_npz

EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """Bad command-line input (exit code 2)."""


def _int_list(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 1,5,10; got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _name_list(text: str) -> list[str]:
    return [t for t in text.replace(" ", "").split(",") if t]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerscope",
        description="Layer-by-layer separation (SI) and smoothness (SmI) indices.",
    )
    parser.add_argument("--version", action="version", version=f"layerscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "indices",
        help="indices of a set of feature vectors (.npz with features and labels or targets)",
        description=(
            "Compute the SI family (labels) or the SmI family (targets) of the feature "
            "vectors in DATA.npz, and their cross indices for TEST.npz. DATA.npz holds "
            "'features' (m x ..., flattened per sample) and 'labels' (m,) integer or "
            "'targets' (m,) / (m, t)."
        ),
    )
    p.add_argument("data", metavar="DATA.npz")
    p.add_argument("--test", metavar="TEST.npz", help="a test set: cross indices against DATA")
    p.add_argument("--orders", type=_int_list, default=None, metavar="1,5,10",
                   help="orders of the ordered families (default 1,5; those below m)")
    p.add_argument("--indices", type=_name_list, default=None, metavar="NAMES",
                   help="comma-separated index names (default: SI family + center_si, or the "
                        "SmI family); add single_feature_si, margin_order, feature_ranking, ...")
    p.add_argument("--gamma", type=float, default=1.0, help="sharpness of SmI exp variants")
    p.add_argument("--normalize", action="store_true",
                   help="standardise each feature with the training mean and std")
    p.add_argument("--margin-cap", type=int, default=64, help="cap K of margin_order")
    p.add_argument("--max-features", type=int, default=None, help="feature_ranking: steps")
    p.add_argument("--patience", type=int, default=None,
                   help="feature_ranking: stop after this many steps without a new maximum")
    p.add_argument("--precision", choices=("exact", "fast"), default="exact")
    p.add_argument("--memory-budget-mb", type=float, default=256.0)
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default=None)
    p.add_argument("--per-class", action="store_true", help="also show per-class values")
    p.add_argument("--per-sample", action="store_true", help="with --json: per-sample arrays")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    lp = sub.add_parser(
        "layers",
        help="list a model's inputs, outputs and candidate layers",
        description="List the inputs, outputs and candidate layers of an ONNX model; '*' "
                    "marks the layers 'auto' picks.",
    )
    lp.add_argument("model", metavar="MODEL.onnx")
    lp.add_argument("--json", action="store_true", help="print one JSON object")
    lp.add_argument("--rule", action="store_true", help="also print the 'auto' rule")

    an = sub.add_parser(
        "analyze",
        help="indices of every layer of an ONNX model on a dataset",
        description=(
            "Run MODEL.onnx on the data, reduce each chosen layer's activations to one "
            "vector per sample and compute the indices per layer, for the training set and "
            "(with --test) the cross indices of a test set. The .npz holds one array per "
            "model input (by input name; a single-input model may use 'inputs') and "
            "'labels' or 'targets'."
        ),
    )
    an.add_argument("model", metavar="MODEL.onnx")
    an.add_argument("--data", required=True, metavar="TRAIN.npz")
    an.add_argument("--test", metavar="TEST.npz")
    an.add_argument("--layers", default="auto",
                    help="auto (default), all, tensor names or globs (comma-separated), "
                         "or op:Conv,Gemm")
    an.add_argument("--reduce", default="auto",
                    help="auto (default), flatten, mean, first_token or project:N")
    an.add_argument("--orders", type=_int_list, default=None, metavar="5",
                    help="orders of the ordered families (default 5)")
    an.add_argument("--indices", type=_name_list, default=None, metavar="NAMES",
                    help="index names (default si, high_order_si, soft_order_si, center_si; "
                         "the SmI family for regression)")
    an.add_argument("--gamma", type=float, default=1.0)
    an.add_argument("--normalize", action="store_true")
    an.add_argument("--probe", action="store_true",
                    help="also fit a ridge linear probe per layer (train/test accuracy)")
    an.add_argument("--batch-size", type=int, default=None)
    an.add_argument("--memory-budget-mb", type=float, default=1024.0)
    an.add_argument("--tolerance", type=float, default=0.01,
                    help="rise below which the index counts as no longer improving")
    an.add_argument("--device", choices=("auto", "cpu", "gpu"), default=None)
    an.add_argument("--json", action="store_true", help="print one JSON object")
    an.add_argument("--plot", metavar="FILE.png", help="write a plot of the indices per layer")
    an.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    d = sub.add_parser(
        "demo",
        help="indices of scikit-learn's bundled digits and diabetes sets (needs scikit-learn)",
        description=(
            "Write train/test .npz files of scikit-learn's digits (classification) and "
            "diabetes (regression) data sets to OUT and print their indices."
        ),
    )
    d.add_argument("--out", default="layerscope-demo", help="folder for the .npz and JSON files")
    return parser


def _load_set(path: str) -> tuple[np.ndarray, str, np.ndarray]:
    arrays = load_npz(path, required_any=("features", "labels|targets"))
    if "labels" in arrays and "targets" in arrays:
        raise DataFileError(
            f"{path}: holds both 'labels' and 'targets'; keep one (labels for "
            "classification, targets for regression)"
        )
    key = "labels" if "labels" in arrays else "targets"
    return arrays["features"], key, arrays[key]


def run_indices(args: argparse.Namespace) -> dict[str, Any]:
    """Return the result dict of the ``indices`` command (also used by ``demo``)."""
    from ..server.metrics import compute_indices  # noqa: PLC0415 - keeps --help fast

    x, key, y = _load_set(args.data)
    kwargs: dict[str, Any] = {key: y}
    if args.test:
        xt, tkey, yt = _load_set(args.test)
        if tkey != key:
            raise DataFileError(
                f"{args.test}: holds '{tkey}' but {args.data} holds '{key}'; "
                "both sets must be of the same task"
            )
        kwargs["test_features"] = xt
        kwargs[f"test_{key}"] = yt
    result = compute_indices(
        x,
        indices=args.indices,
        orders=args.orders,
        gamma=args.gamma,
        normalize=args.normalize,
        margin_cap=args.margin_cap,
        max_features=args.max_features,
        patience=args.patience,
        precision=args.precision,
        memory_budget_mb=args.memory_budget_mb,
        device=args.device,
        **kwargs,
    )
    out = result.to_dict(per_class=True, per_sample=args.per_sample)
    out["data"] = str(args.data)
    if args.test:
        out["test"] = str(args.test)
    return out


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
    from ..server.metrics import CLASSIFICATION_INDICES, REGRESSION_INDICES  # noqa: PLC0415

    rows: list[tuple[str, Any]] = []
    for name in (*CLASSIFICATION_INDICES, *REGRESSION_INDICES):
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


class ProgressLine:
    """A one-line progress display on stderr: stage, step and a bar."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        width = 24
        filled = int(width * done / max(total, 1))
        line = f"\r{stage:<16} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
        if line != self.last:
            sys.stderr.write(line)
            sys.stderr.flush()
            self.last = line

    def close(self) -> None:
        if self.enabled and self.last:
            sys.stderr.write("\n")
            sys.stderr.flush()


def run_layers(args: argparse.Namespace) -> int:
    from ..server.graph import AUTO_RULE, describe, load_model  # noqa: PLC0415

    info = describe(load_model(args.model, with_data=False))
    if args.json:
        json.dump(info.to_dict(), sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(f"{args.model}: IR {info.ir_version}, opsets "
          + ", ".join(f"{k} {v}" for k, v in info.opsets.items()))
    for title, items in (("inputs", info.inputs), ("outputs", info.outputs)):
        print(f"{title}:")
        for t in items:
            print(f"  {t.name}  {t.dtype}  {list(t.shape) if t.shape is not None else '?'}")
    print(f"candidate layers ({len(info.layers)}; * = auto):")
    width = max([len(la.name) for la in info.layers] + [4])
    for la in info.layers:
        shape = list(la.shape) if la.shape is not None else "?"
        per = la.elements_per_sample if la.elements_per_sample is not None else "?"
        print(f"  {'*' if la.auto else ' '} {la.position:>4}  {la.name:<{width}}  "
              f"{la.op_type:<20} {str(shape):<24} {per}")
    if args.rule:
        print()
        print(AUTO_RULE)
    return 0


def _load_model_set(path: str) -> tuple[dict[str, Any], str, np.ndarray]:
    arrays = load_npz(path, required_any=("labels|targets",))
    if "labels" in arrays and "targets" in arrays:
        raise DataFileError(f"{path}: holds both 'labels' and 'targets'; keep one")
    key = "labels" if "labels" in arrays else "targets"
    y = arrays.pop(key)
    return arrays, key, y


def run_analyze(args: argparse.Namespace) -> dict[str, Any]:
    """Return the result dict of the ``analyze`` command."""
    from ..server.analysis import analyze_layers  # noqa: PLC0415

    data, key, y = _load_model_set(args.data)
    kwargs: dict[str, Any] = {key: y}
    if args.test:
        test, tkey, yt = _load_model_set(args.test)
        if tkey != key:
            raise DataFileError(f"{args.test}: holds '{tkey}' but {args.data} holds '{key}'")
        kwargs.update(test=test, **{f"test_{key}": yt})
    bar = ProgressLine(not args.json and not args.no_progress and sys.stderr.isatty())
    try:
        result = analyze_layers(
            args.model, data, layers=args.layers, reduce=args.reduce, indices=args.indices,
            orders=args.orders, gamma=args.gamma, normalize=args.normalize, probe=args.probe,
            batch_size=args.batch_size, memory_budget_mb=args.memory_budget_mb,
            tolerance=args.tolerance, device=args.device, progress=bar, **kwargs,
        )
    finally:
        bar.close()
    out = result.to_dict()
    out["model_path"] = str(args.model)
    if args.plot:
        from .plot import plot_layers  # noqa: PLC0415

        out["plot"] = str(plot_layers(out, args.plot))
    return out


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
    has_test = any("cross" in la for la in layers)
    has_probe = any("probe" in la for la in layers)
    nw = min(40, max(len(la["name"]) for la in layers) + 2)
    head = f"{'#':>2} {'layer':<{nw}} {'op':<12} {'reduce':<12} {'dims':>6}"
    for label, _, _ in cols:
        head += f" {label:>{max(len(label), 7)}}"
        if has_test:
            head += f" {'test':>7}"
    if has_probe:
        head += f" {'probe':>7}" + (f" {'test':>7}" if has_test else "")
    lines = [f"{out['model_path']}: {out['task']}, {len(layers)} layers", head,
             "-" * len(head)]

    def cell(src: dict[str, Any] | None, name: str, o: str | None) -> str:
        v = None if src is None else src.get(name)
        if isinstance(v, dict):
            v = v.get(o)
        return "-" if v is None else f"{v:.4f}"

    for i, la in enumerate(layers):
        name = la["name"] if len(la["name"]) <= nw - 2 else "..." + la["name"][-(nw - 5):]
        row = f"{i:>2} {name:<{nw}} {la['op_type'][:12]:<12} {la['reduction'][:12]:<12} " \
              f"{la['dims']:>6}"
        for label, n, o in cols:
            row += f" {cell(la, n, o):>{max(len(label), 7)}}"
            if has_test:
                row += f" {cell(la.get('cross'), n, o):>7}"
        if has_probe:
            p = la.get("probe") or {}
            key = "accuracy" if out["task"] == "classification" else "r2"
            tr, te = p.get(f"train_{key}"), p.get(f"test_{key}")
            row += f" {'-' if tr is None else f'{tr:.4f}':>7}"
            if has_test:
                row += f" {'-' if te is None else f'{te:.4f}':>7}"
        if la.get("error"):
            row += f"  error: {la['error']}"
        lines.append(row)
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


def run_demo(args: argparse.Namespace) -> int:
    """Write the demo data sets and print their indices."""
    try:
        from sklearn.datasets import load_diabetes, load_digits  # noqa: PLC0415
    except ImportError:
        raise UsageError(
            "the demo uses scikit-learn's bundled data sets: pip install 'layerscope[sklearn]'"
        ) from None
    out_dir = Path(args.out)
    rng = np.random.default_rng(0)
    sets = {
        "digits": (load_digits(return_X_y=True), "labels"),
        "diabetes": (load_diabetes(return_X_y=True), "targets"),
    }
    for name, ((x, y), key) in sets.items():
        perm = rng.permutation(len(x))
        cut = int(0.8 * len(x))
        tr, te = perm[:cut], perm[cut:]
        y = y.astype(np.int64) if key == "labels" else y.astype(np.float64)
        train = save_npz(out_dir / f"{name}-train.npz", features=x[tr].astype(np.float32),
                         **{key: y[tr]})
        test = save_npz(out_dir / f"{name}-test.npz", features=x[te].astype(np.float32),
                        **{key: y[te]})
        ns = build_parser().parse_args(
            ["indices", str(train), "--test", str(test), "--orders", "1,5,10"]
        )
        result = run_indices(ns)
        (out_dir / f"{name}-indices.json").write_text(json.dumps(result, indent=2) + "\n")
        print(format_table(result, per_class=key == "labels"))
        print()
    print(f"wrote {out_dir}/: train/test .npz files and the JSON results")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "indices":
            out = run_indices(args)
            if args.json:
                json.dump(out, sys.stdout)
                sys.stdout.write("\n")
            else:
                print(format_table(out, per_class=args.per_class))
            return 0
        if args.command == "demo":
            return run_demo(args)
        if args.command == "layers":
            return run_layers(args)
        if args.command == "analyze":
            out = run_analyze(args)
            if args.json:
                json.dump(out, sys.stdout)
                sys.stdout.write("\n")
            else:
                print(format_layer_table(out))
            return 0
    except (DataFileError, UsageError, ValueError) as exc:
        print(f"layerscope: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as exc:  # missing optional extras, an unusable device
        print(f"layerscope: error: {exc}", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.command!r}")
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
