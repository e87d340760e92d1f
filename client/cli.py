"""The ``layerscope`` command line.

Every command goes through the gRPC API: to ``--server host:port`` when given, else to the
embedded server of the data directory (started on a free loopback port, and stopped again,
when none is running). Exit codes: 0 success, 2 bad input (the message says what and what
was expected), 1 any other failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..local import write_atomic
from .client import Client, LayerscopeError
from .npz import DataFileError, load_npz, save_npz
from .report import format_certify, format_layer_table, format_ranking, format_table

EXIT_BAD_INPUT = 2
BAD_INPUT_CODES = {"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED",
                   "UNAUTHENTICATED", "PERMISSION_DENIED", "FAILED", "OUT_OF_RANGE"}


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


def _connection_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server")
    g.add_argument("--server", metavar="HOST:PORT", default=os.environ.get("LAYERSCOPE_SERVER"),
                   help="use this server (default: the embedded one; $LAYERSCOPE_SERVER)")
    g.add_argument("--token", default=os.environ.get("LAYERSCOPE_TOKEN"),
                   help="bearer token for --server ($LAYERSCOPE_TOKEN)")
    g.add_argument("--data-dir", type=Path, default=None,
                   help="data directory of the embedded server (default: the user's data home)")
    g.add_argument("--device", choices=("auto", "cpu", "gpu"), default=None,
                   help="device of the embedded server")


@contextlib.contextmanager
def connect(args: argparse.Namespace) -> Iterator[Client]:
    """The client of ``--server``, or of the embedded server."""
    if args.server:
        client = Client(args.server, token=args.token)
    else:
        client = Client.local(args.data_dir, device=args.device)
    with client:
        yield client


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
    p.add_argument("--gamma", type=float, default=None, help="sharpness of SmI exp variants")
    p.add_argument("--normalize", action="store_true",
                   help="standardise each feature with the training mean and std")
    p.add_argument("--margin-cap", type=int, default=None, help="cap K of margin_order")
    p.add_argument("--max-features", type=int, default=None, help="feature_ranking: steps")
    p.add_argument("--patience", type=int, default=None,
                   help="feature_ranking: stop after this many steps without a new maximum")
    p.add_argument("--precision", choices=("exact", "fast"), default="exact")
    p.add_argument("--memory-budget-mb", type=float, default=None)
    p.add_argument("--per-class", action="store_true", help="also show per-class values")
    p.add_argument("--per-sample", action="store_true", help="with --json: per-sample arrays")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _connection_args(p)

    lp = sub.add_parser(
        "layers",
        help="list a model's inputs, outputs and candidate layers",
        description="List the inputs, outputs and candidate layers of an ONNX model; '*' "
                    "marks the layers 'auto' picks (docs/layers.md gives the rule).",
    )
    lp.add_argument("model", metavar="MODEL.onnx")
    lp.add_argument("--json", action="store_true", help="print one JSON object")
    _connection_args(lp)

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
    an.add_argument("--gamma", type=float, default=None)
    an.add_argument("--normalize", action="store_true")
    an.add_argument("--probe", action="store_true",
                    help="also fit a ridge linear probe per layer (train/test accuracy)")
    an.add_argument("--batch-size", type=int, default=None)
    an.add_argument("--memory-budget-mb", type=float, default=None)
    an.add_argument("--tolerance", type=float, default=None,
                    help="rise below which the index counts as no longer improving (0.01)")
    an.add_argument("--json", action="store_true", help="print one JSON object")
    an.add_argument("--plot", metavar="FILE.png", help="write a plot of the indices per layer")
    an.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _connection_args(an)

    rk = sub.add_parser(
        "rank",
        help="rank pre-trained models for a target dataset",
        description=(
            "For each model, take the features that feed its fully connected head (or the "
            "--layer given), select the SI-maximising feature subset (SmI for regression) "
            "and rank the models by it (METRICS.md section 4). TARGET.npz holds one array "
            "per model input name (or 'inputs' when every model has one input) and "
            "'labels' or 'targets'."
        ),
    )
    rk.add_argument("models", nargs="+", metavar="MODEL.onnx")
    rk.add_argument("--data", required=True, metavar="TARGET.npz")
    rk.add_argument("--layer", action="append", default=[], metavar="MODEL=TENSOR",
                    help="use TENSOR of MODEL (its path as given) instead of the head rule")
    rk.add_argument("--reduce", default="auto")
    rk.add_argument("--max-features", type=int, default=None,
                    help="forward selection steps (default 32)")
    rk.add_argument("--patience", type=int, default=None)
    rk.add_argument("--order", type=int, default=None, help="soft-order tie-breaker order (5)")
    rk.add_argument("--baselines", action="store_true",
                    help="also LogME, LEEP, NCE and H-score on the same features")
    rk.add_argument("--batch-size", type=int, default=None)
    rk.add_argument("--json", action="store_true")
    _connection_args(rk)

    ce = sub.add_parser(
        "certify",
        help="certify queries against a reference set: confidence, guarantee, radius",
        description=(
            "Build a reference from MODEL.onnx and REFERENCE.npz at a layer (default: the "
            "head rule) and certify each query of QUERIES.npz (raw model inputs by input "
            "name / 'inputs', or 'features' at that layer): METRICS.md section 3."
        ),
    )
    ce.add_argument("model", metavar="MODEL.onnx")
    ce.add_argument("--reference", required=True, metavar="REFERENCE.npz")
    ce.add_argument("--queries", required=True, metavar="QUERIES.npz")
    ce.add_argument("--layer", default=None)
    ce.add_argument("--reduce", default="auto")
    ce.add_argument("--uncertainty", type=float, default=0.0)
    ce.add_argument("--order", type=int, default=1)
    ce.add_argument("--mode", choices=("conservative", "exact"), default="conservative",
                    help="regression: the set of cells that the uncertainty ball may reach")
    ce.add_argument("--json", action="store_true")
    _connection_args(ce)

    ex = sub.add_parser(
        "export",
        help="convert a model file of another framework to ONNX, with a parity check",
        description=(
            "Convert SOURCE to ONNX and check that the ONNX model computes what the source "
            "model does on the sample inputs (largest differences per output, error above "
            "--tolerance). SOURCE: a .keras file (keras), a SavedModel folder (tf), a "
            ".skops file (sklearn), an XGBoost .json/.ubj model (xgboost), a LightGBM text "
            "model (lightgbm). PyTorch and JAX models are exported from Python "
            "(layerscope.exporters.export): their files are pickles or do not exist."
        ),
    )
    ex.add_argument("framework", choices=("keras", "tf", "sklearn", "xgboost", "lightgbm",
                                          "torch", "jax"))
    ex.add_argument("source", metavar="SOURCE")
    ex.add_argument("--sample", required=True, metavar="SAMPLE.npz",
                    help="sample inputs: one array per model input (or 'inputs')")
    ex.add_argument("--out", required=True, metavar="MODEL.onnx")
    ex.add_argument("--tolerance", type=float, default=None)
    ex.add_argument("--opset", type=int, default=None)
    ex.add_argument("--json", action="store_true")

    sv = sub.add_parser("serve", help="run the gRPC server",
                        description="Run the layerscope gRPC server until SIGTERM.")
    from ..server.api.options import add_serve_arguments  # noqa: PLC0415 - light

    add_serve_arguments(sv)

    d = sub.add_parser(
        "demo",
        help="train a small model on scikit-learn's digits and analyse it layer by layer",
        description=(
            "Train (or reuse) a small MLP on scikit-learn's digits, export it to ONNX, and "
            "run the layer-wise analysis with train and test sets through the embedded "
            "server; print the layer table and write OUT/ with the JSON result and a plot."
        ),
    )
    d.add_argument("--out", default="layerscope-demo", help="folder for the model and results")
    _connection_args(d)
    return parser


def _split_labels(path: str, arrays: dict[str, Any]) -> tuple[str, Any]:
    if "labels" in arrays and "targets" in arrays:
        raise DataFileError(
            f"{path}: holds both 'labels' and 'targets'; keep one (labels for "
            "classification, targets for regression)"
        )
    key = "labels" if "labels" in arrays else "targets"
    return key, arrays.pop(key)


def _options(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def run_indices(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    """Return the result dict of the ``indices`` command."""
    arrays = load_npz(args.data, required_any=("features", "labels|targets"))
    key, y = _split_labels(args.data, arrays)
    kwargs: dict[str, Any] = {key: y}
    if args.test:
        tarrays = load_npz(args.test, required_any=("features", "labels|targets"))
        tkey, yt = _split_labels(args.test, tarrays)
        if tkey != key:
            raise DataFileError(
                f"{args.test}: holds '{tkey}' but {args.data} holds '{key}'; "
                "both sets must be of the same task"
            )
        kwargs["test_features"] = tarrays["features"]
        kwargs[f"test_{key}"] = yt
    opts = _options(args, ("indices", "orders", "gamma", "margin_cap", "max_features",
                           "patience", "precision", "memory_budget_mb"))
    result = client.compute_indices(arrays["features"], normalize=args.normalize,
                                    per_sample=args.per_sample, **opts, **kwargs)
    out = result.to_dict()
    out["data"] = str(args.data)
    if args.test:
        out["test"] = str(args.test)
    return out


def run_layers(args: argparse.Namespace, client: Client) -> int:
    model = client.upload_model(args.model)
    if args.json:
        from google.protobuf import json_format  # noqa: PLC0415

        json.dump(json_format.MessageToDict(model, preserving_proto_field_name=True),
                  sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(f"{args.model}: IR {model.ir_version}, opsets "
          + ", ".join(f"{k} {v}" for k, v in sorted(model.opsets.items())))
    for title, items in (("inputs", model.inputs), ("outputs", model.outputs)):
        print(f"{title}:")
        for t in items:
            print(f"  {t.name}  {t.dtype}  [{', '.join(t.shape)}]")
    print(f"candidate layers ({len(model.layers)}; * = auto):")
    width = max([len(la.name) for la in model.layers] + [4])
    for la in model.layers:
        shape = f"[{', '.join(la.shape)}]"
        per = la.elements_per_sample or "?"
        print(f"  {'*' if la.auto else ' '} {la.position:>4}  {la.name:<{width}}  "
              f"{la.op_type:<20} {shape:<24} {per}")
    return 0


def run_analyze(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    """Return the result dict of the ``analyze`` command."""
    data = load_npz(args.data, required_any=("labels|targets",))
    key, y = _split_labels(args.data, data)
    kwargs: dict[str, Any] = {key: y}
    test = None
    if args.test:
        test = load_npz(args.test, required_any=("labels|targets",))
        tkey, yt = _split_labels(args.test, test)
        if tkey != key:
            raise DataFileError(f"{args.test}: holds '{tkey}' but {args.data} holds '{key}'")
        kwargs[f"test_{key}"] = yt
    opts = _options(args, ("indices", "orders", "gamma", "batch_size", "memory_budget_mb",
                           "tolerance"))
    show = not args.json and not args.no_progress and sys.stderr.isatty()
    result = client.analyze_layers(
        args.model, data, test, layers=[args.layers], reduce=args.reduce, probe=args.probe,
        normalize=args.normalize, progress=show, **opts, **kwargs,
    )
    out = result.to_dict()
    out["model_path"] = str(args.model)
    if args.plot:
        out["plot"] = str(result.plot(args.plot))
    return out


def _demo_model(out_dir: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """Train a small MLP on the digits and export it with skl2onnx (reused when present)."""
    path = out_dir / "digits-mlp.onnx"
    if path.is_file():
        return path
    try:
        from skl2onnx import to_onnx  # noqa: PLC0415
        from sklearn.neural_network import MLPClassifier  # noqa: PLC0415
    except ImportError:
        raise UsageError(
            "the demo trains a scikit-learn model and exports it with skl2onnx: "
            "pip install 'layerscope[sklearn]'"
        ) from None
    clf = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=400, random_state=0)
    clf.fit(x, y)
    onx = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    return write_atomic(path, lambda f: f.write(onx.SerializeToString()))


def run_demo(args: argparse.Namespace, client: Client) -> int:
    """Train or reuse the demo model, analyse it through the server, write the results."""
    try:
        from sklearn.datasets import load_digits  # noqa: PLC0415
    except ImportError:
        raise UsageError(
            "the demo uses scikit-learn's bundled digits: pip install 'layerscope[sklearn]'"
        ) from None
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(x))
    tr, te = perm[: int(0.8 * len(x))], perm[int(0.8 * len(x)) :]
    model_path = _demo_model(out_dir, x[tr], y[tr])
    save_npz(out_dir / "digits-train.npz", inputs=x[tr], labels=y[tr].astype(np.int64))
    save_npz(out_dir / "digits-test.npz", inputs=x[te], labels=y[te].astype(np.int64))
    result = client.analyze_layers(
        model_path, {"inputs": x[tr]}, {"inputs": x[te]}, labels=y[tr].astype(np.int64),
        test_labels=y[te].astype(np.int64), probe=True, progress=sys.stderr.isatty(),
    )
    out = result.to_dict()
    out["model_path"] = str(model_path)
    (out_dir / "result.json").write_text(json.dumps(out, indent=2) + "\n")
    try:
        out["plot"] = str(result.plot(out_dir / "layers.png"))
    except RuntimeError as exc:  # matplotlib missing: the table and JSON still stand
        print(f"note: {exc}", file=sys.stderr)
    print(format_layer_table(out))
    print(f"\nwrote {out_dir}/: the model, train/test .npz files, result.json"
          + (", layers.png" if "plot" in out else ""))
    return 0


def run_rank(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    data = load_npz(args.data, required_any=("labels|targets",))
    key, y = _split_labels(args.data, data)
    layers: dict[str, str] = {}
    for item in args.layer:
        model, sep, tensor = item.partition("=")
        if not sep or not tensor or model not in args.models:
            raise UsageError(f"--layer takes MODEL=TENSOR with MODEL one of the models given; "
                             f"got {item!r}")
        layers[model] = tensor
    result = client.rank_models(
        args.models, data, **{key: y}, layers=layers, reduce=args.reduce,
        max_features=args.max_features, patience=args.patience, order=args.order,
        baselines=args.baselines, batch_size=args.batch_size,
        progress=not args.json and sys.stderr.isatty())
    out = result.to_dict()
    ids = {m.id: path for path, m in zip(args.models, map(client.upload_model, args.models),
                                          strict=True)}
    for m in out["models"]:
        m["path"] = ids.get(m["model"], m["model"])
    out["ranking_paths"] = [ids.get(i, i) for i in out["ranking"]]
    return out


def run_certify(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    ref_data = load_npz(args.reference, required_any=("labels|targets",))
    key, y = _split_labels(args.reference, ref_data)
    reference = client.build_reference(args.model, ref_data, **{key: y}, layer=args.layer,
                                       reduce=args.reduce, uncertainty=args.uncertainty)
    queries = load_npz(args.queries)
    queries.pop("labels", None)
    queries.pop("targets", None)
    if "features" in queries:
        result = client.certify(reference, queries["features"], uncertainty=args.uncertainty,
                                order=args.order, mode=args.mode)
    else:
        result = client.certify(reference, inputs=queries, uncertainty=args.uncertainty,
                                order=args.order, mode=args.mode)
    return {"reference": reference, **result.to_dict()}


FILE_EXPORTERS = {
    "keras": ("layerscope.exporters.keras", "export_keras_file"),
    "tf": ("layerscope.exporters.keras", "export_saved_model"),
    "sklearn": ("layerscope.exporters.sklearn", "export_skops_file"),
    "xgboost": ("layerscope.exporters.trees", "export_xgboost_file"),
    "lightgbm": ("layerscope.exporters.trees", "export_lightgbm_file"),
}


def run_export(args: argparse.Namespace) -> dict[str, Any]:
    """Export a model file; return the parity report."""
    import importlib  # noqa: PLC0415

    if args.framework not in FILE_EXPORTERS:
        raise UsageError(
            f"{args.framework} models are exported from Python: "
            "layerscope.exporters.export(model, sample_inputs, path) (a torch model file is a "
            "pickle, which layerscope never loads; JAX has no model file format)"
        )
    if not Path(args.source).exists():
        raise UsageError(f"{args.source}: no such file or folder")
    sample = load_npz(args.sample)
    sample.pop("labels", None)
    sample.pop("targets", None)
    if not sample:
        raise DataFileError(f"{args.sample}: holds no sample input array")
    inputs: Any = next(iter(sample.values())) if len(sample) == 1 else sample
    module, func = FILE_EXPORTERS[args.framework]
    fn = getattr(importlib.import_module(module), func)
    kw: dict[str, Any] = {}
    if args.tolerance is not None:
        kw["tolerance"] = args.tolerance
    if args.opset is not None:
        kw["opset"] = args.opset
    report = fn(args.source, inputs, args.out, **kw)
    return report.to_dict()  # type: ignore[no-any-return]


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "export":
        out = run_export(args)
        if args.json:
            json.dump(out, sys.stdout)
            sys.stdout.write("\n")
        else:
            print(f"wrote {out['path']} ({out['framework']}, opset {out['opset']}, IR "
                  f"{out['ir_version']}); inputs {out['inputs']}, outputs {out['outputs']}")
            for p in out["parity"]:
                print(f"  parity {p['name']}: max abs {p['max_abs']:.3g}, max rel "
                      f"{p['max_rel']:.3g} (tolerance {out['tolerance']:g})")
            for n in out.get("notes", []):
                print(f"  note: {n}")
        return 0
    if args.command == "serve":
        from ..server.api.serve import serve  # noqa: PLC0415 - the server side

        return serve(args)
    with connect(args) as client:
        if args.command == "indices":
            out = run_indices(args, client)
            if args.json:
                json.dump(out, sys.stdout)
                sys.stdout.write("\n")
            else:
                print(format_table(out, per_class=args.per_class))
            return 0
        if args.command == "layers":
            return run_layers(args, client)
        if args.command == "analyze":
            out = run_analyze(args, client)
            if args.json:
                json.dump(out, sys.stdout)
                sys.stdout.write("\n")
            else:
                print(format_layer_table(out))
            return 0
        if args.command == "demo":
            return run_demo(args, client)
        if args.command in ("rank", "certify"):
            out = run_rank(args, client) if args.command == "rank" else run_certify(args, client)
            if args.json:
                json.dump(out, sys.stdout)
                sys.stdout.write("\n")
            else:
                print(format_ranking(out) if args.command == "rank" else format_certify(out))
            return 0
    raise UsageError(f"unknown command {args.command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (DataFileError, UsageError, ValueError, ImportError) as exc:
        # ImportError: a framework's extra is missing (the message names it).
        print(f"layerscope: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except LayerscopeError as exc:
        print(f"layerscope: error: {exc.details} ({exc.code})", file=sys.stderr)
        return EXIT_BAD_INPUT if exc.code in BAD_INPUT_CODES else 1
    except RuntimeError as exc:  # missing optional extras, an unusable device
        print(f"layerscope: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
