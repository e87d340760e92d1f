"""The ``layerscope`` command line: one table of commands (name, help, arguments, an example,
the handler) and the loop that runs one.

Commands that analyse go through the gRPC API: to ``--server host:port`` when given, else to
the embedded server of the data directory (started on a free loopback port, and stopped
again, when none is running). Exit codes: 0 success, 2 bad input (one line naming what was
wrong and what was expected), 1 any other failure, 130 interrupted, 141 when the reader of
stdout went away (``layerscope ... | head -1``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..local import write_atomic
from ..protos import write_protos
from ..protos.options import IndexOptions
from .client import Client, LayerscopeError, _is_id
from .npz import DataFileError, check_input, load_npz, save_npz
from .report import (
    format_certify,
    format_export,
    format_layer_table,
    format_model,
    format_ranking,
    format_table,
)
from .server_process import SERVER_MODULE, ServerExtraMissing, require_server_extra

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what the shell reports for `yes | head -1`
BAD_INPUT_CODES = {"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED",
                   "UNAUTHENTICATED", "PERMISSION_DENIED", "FAILED", "OUT_OF_RANGE"}


class UsageError(ValueError):
    """Bad command-line input (exit code 2)."""


# the table's parts ------------------------------------------------------------------------
@dataclass(frozen=True)
class Arg:
    """One argument: its flags (or positional name) and ``add_argument``'s keywords."""

    flags: tuple[str, ...]
    options: dict[str, Any]


def arg(*flags: str, help: str, **options: Any) -> Arg:  # noqa: A002 - argparse's name
    return Arg(flags, {"help": help, **options})


Handler = Callable[[argparse.Namespace, Any], "dict[str, Any] | int"]
Render = Callable[[dict[str, Any], argparse.Namespace], str]


@dataclass(frozen=True)
class Command:
    """A command of the table.

    ``run(args, client)`` returns a result dict (printed as JSON with ``--json``, else by
    ``render``) or an exit code. ``client`` is the connection when ``connects``, else None.
    ``inputs`` names the arguments that are input files and their kind (see
    ``npz.EXPECTED``): they are checked before anything starts.
    """

    name: str
    help: str
    description: str
    example: str
    args: tuple[Arg, ...]
    run: Handler
    render: Render | None = None
    connects: bool = True
    inputs: tuple[tuple[str, str], ...] = ()


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


CONNECTION = (
    arg("--server", metavar="HOST:PORT", default=os.environ.get("LAYERSCOPE_SERVER"),
        help="use this server (default: the embedded one; $LAYERSCOPE_SERVER)"),
    arg("--token", default=os.environ.get("LAYERSCOPE_TOKEN"),
        help="bearer token for --server ($LAYERSCOPE_TOKEN)"),
    arg("--data-dir", type=Path, default=None,
        help="data directory of the embedded server (default: the user's data home)"),
    arg("--device", choices=("auto", "cpu", "gpu"), default=None,
        help="device of the embedded server (default auto: the GPU when one is usable)"),
)
JSON = arg("--json", action="store_true", help="print one JSON object instead of the report")


@contextlib.contextmanager
def connect(args: argparse.Namespace) -> Iterator[Client]:
    """The client of ``--server``, or of the embedded server."""
    if args.server:
        client = Client(args.server, token=args.token)
    else:
        client = Client.local(args.data_dir, device=args.device)
    with client:
        yield client


# handlers -------------------------------------------------------------------------------
def _split_labels(path: str, arrays: dict[str, Any]) -> tuple[str, Any]:
    if "labels" in arrays and "targets" in arrays:
        raise DataFileError(
            f"{path}: holds both 'labels' and 'targets'; keep one (labels for "
            "classification, targets for regression)"
        )
    key = "labels" if "labels" in arrays else "targets"
    return key, arrays.pop(key)


def _given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _index_options(args: argparse.Namespace, names: Sequence[str]) -> IndexOptions:
    """The IndexOptions of the index-option arguments given (OptionError: exit 2)."""
    return IndexOptions.build(**_given(args, names))


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
    options = _index_options(args, ("indices", "orders", "gamma", "normalize", "margin_cap",
                                    "max_features", "patience", "precision",
                                    "memory_budget_mb", "per_sample"))
    result = client.compute_indices(arrays["features"], options=options, **kwargs)
    out = result.to_dict()
    out["data"] = str(args.data)
    if args.test:
        out["test"] = str(args.test)
    return out


def run_layers(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    """Return the stored model's description (inputs, outputs, candidate layers)."""
    if _is_id(args.model) and not Path(args.model).exists():
        return client.get_model(args.model).to_dict()
    return client.upload_model(args.model).to_dict()


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
    options = _index_options(args, ("indices", "orders", "gamma", "normalize",
                                    "memory_budget_mb"))
    show = not args.json and not args.no_progress and sys.stderr.isatty()
    result = client.analyze_layers(
        args.model, data, test, layers=[args.layers], reduce=args.reduce, probe=args.probe,
        options=options, progress=show, **_given(args, ("batch_size", "tolerance")), **kwargs,
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


def run_demo(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    """Train or reuse the demo model, analyse it through the server, write the results;
    return the layer-wise result."""
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
        test_labels=y[te].astype(np.int64), probe=True,
        progress=not args.json and sys.stderr.isatty(),
    )
    out = result.to_dict()
    out["model_path"] = str(model_path)
    (out_dir / "result.json").write_text(json.dumps(out, indent=2) + "\n")
    try:
        out["plot"] = str(result.plot(out_dir / "layers.png"))
    except RuntimeError as exc:  # matplotlib missing: the table and JSON still stand
        print(f"note: {exc}", file=sys.stderr)
    return out


def render_demo(out: dict[str, Any], args: argparse.Namespace) -> str:
    return (format_layer_table(out) + f"\n\nwrote {args.out}/: the model, train/test .npz "
            "files, result.json" + (", layers.png" if "plot" in out else ""))


def run_rank(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    """Return the ranking, each model named by its path as given."""
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
        baselines=args.baselines, batch_size=args.batch_size, method=args.method,
        folds=args.folds, progress=not args.json and sys.stderr.isatty())
    return result.to_dict()


def run_certify(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    ref_data = load_npz(args.reference, required_any=("labels|targets",))
    key, y = _split_labels(args.reference, ref_data)
    queries = load_npz(args.queries)
    queries.pop("labels", None)
    queries.pop("targets", None)
    reference = client.build_reference(args.model, ref_data, **{key: y}, layer=args.layer,
                                       reduce=args.reduce, uncertainty=args.uncertainty)
    if "features" in queries:
        result = client.certify(reference, queries["features"], uncertainty=args.uncertainty,
                                order=args.order, mode=args.mode)
    else:
        result = client.certify(reference, inputs=queries, uncertainty=args.uncertainty,
                                order=args.order, mode=args.mode)
    return {"reference": reference.to_dict(), **result.to_dict()}


FILE_EXPORTERS = {
    "keras": ("layerscope.exporters.keras", "export_keras_file"),
    "tf": ("layerscope.exporters.keras", "export_saved_model"),
    "sklearn": ("layerscope.exporters.sklearn", "export_skops_file"),
    "xgboost": ("layerscope.exporters.trees", "export_xgboost_file"),
    "lightgbm": ("layerscope.exporters.trees", "export_lightgbm_file"),
}


def run_export(args: argparse.Namespace, client: None) -> dict[str, Any]:
    """Export a model file; return the parity report."""
    if args.framework not in FILE_EXPORTERS:
        raise UsageError(
            f"{args.framework} models are exported from Python: "
            "layerscope.exporters.export(model, sample_inputs, path) (a torch model file is a "
            "pickle, which layerscope never loads; JAX has no model file format)"
        )
    sample = load_npz(args.sample)
    sample.pop("labels", None)
    sample.pop("targets", None)
    if not sample:
        raise DataFileError(f"{args.sample}: holds no sample input array")
    inputs: Any = next(iter(sample.values())) if len(sample) == 1 else sample
    module, func = FILE_EXPORTERS[args.framework]
    fn = getattr(importlib.import_module(module), func)
    kw = _given(args, ("tolerance", "opset"))
    report = fn(args.source, inputs, args.out, **kw)
    return report.to_dict()  # type: ignore[no-any-return]


def run_serve(argv: Sequence[str], replace: bool) -> int:
    """``layerscope serve ARGS``: the server's own entry point (``python -m
    layerscope.server.api ARGS``), which owns every server option and its help; the client
    never imports the server. From the command line (``replace``) it takes over this
    process, so that signals reach it; called from Python it runs as a child process and
    its exit code is returned."""
    try:
        require_server_extra()
    except ServerExtraMissing as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    cmd = [sys.executable, "-m", SERVER_MODULE, *argv]
    sys.stdout.flush()
    if not replace:
        return subprocess.run(cmd, check=False).returncode
    os.execv(sys.executable, cmd)
    return 0  # not reached


def run_protos(args: argparse.Namespace, client: None) -> dict[str, Any]:
    """Write the package's .proto files under ``--out`` (their import paths kept)."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: is a file; --out takes a folder to write the .proto files in")
    written = write_protos(out)
    if not written:
        raise RuntimeError("this installation holds no .proto files (a broken wheel?)")
    return {"out": str(out), "files": [str(p) for p in written]}


def render_protos(out: dict[str, Any], args: argparse.Namespace) -> str:
    return "\n".join([*out["files"], f"generate a client with, e.g., protoc -I {out['out']} "
                      f"--python_out=. {out['out']}/layerscope/v1/*.proto"])


# the table ------------------------------------------------------------------------------
COMMANDS: tuple[Command, ...] = (
    Command(
        name="indices",
        help="indices of a set of feature vectors (.npz with features and labels or targets)",
        description=(
            "Compute the SI family (labels) or the SmI family (targets) of the feature "
            "vectors in DATA.npz, and their cross indices for TEST.npz. DATA.npz holds "
            "'features' (m x ..., flattened per sample) and 'labels' (m,) integer or "
            "'targets' (m,) / (m, t)."
        ),
        example="layerscope indices train.npz --test test.npz --orders 1,5,10 --per-class",
        args=(
            arg("data", metavar="DATA.npz", help="features and labels (or targets)"),
            arg("--test", metavar="TEST.npz", help="a test set: cross indices against DATA"),
            arg("--orders", type=_int_list, default=None, metavar="1,5,10",
                help="orders of the ordered families (default 1,5; those below m)"),
            arg("--indices", type=_name_list, default=None, metavar="NAMES",
                help="comma-separated index names (default: SI family + center_si, or the "
                     "SmI family); add single_feature_si, margin_order, feature_ranking, ..."),
            arg("--gamma", type=float, default=None,
                help="sharpness of the SmI exp variants (default 1.0)"),
            arg("--normalize", action="store_true",
                help="standardise each feature with the training mean and std"),
            arg("--margin-cap", type=int, default=None,
                help="cap K of margin_order (default 64)"),
            arg("--max-features", type=int, default=None,
                help="feature_ranking: most selection steps"),
            arg("--patience", type=int, default=None,
                help="feature_ranking: stop after this many steps without a new maximum"),
            arg("--precision", choices=("exact", "fast"), default="exact",
                help="exact (default): neighbours equal the float64 definition; fast: "
                     "float32 neighbours"),
            arg("--memory-budget-mb", type=float, default=None,
                help="the engine's working memory beyond the inputs (default 256)"),
            arg("--per-class", action="store_true", help="also show per-class values"),
            arg("--per-sample", action="store_true", help="with --json: per-sample arrays"),
            JSON, *CONNECTION,
        ),
        run=run_indices,
        render=lambda out, args: format_table(out, per_class=args.per_class),
        inputs=(("data", "npz"), ("test", "npz")),
    ),
    Command(
        name="layers",
        help="list a model's inputs, outputs and candidate layers",
        description="List the inputs, outputs and candidate layers of an ONNX model; '*' "
                    "marks the layers 'auto' picks (docs/layers.md gives the rule).",
        example="layerscope layers model.onnx --json",
        args=(arg("model", metavar="MODEL.onnx", help="the ONNX model (or a stored model's id)"),
              JSON, *CONNECTION),
        run=run_layers,
        render=lambda out, args: format_model(out, args.model),
        inputs=(("model", "onnx"),),
    ),
    Command(
        name="analyze",
        help="indices of every layer of an ONNX model on a dataset",
        description=(
            "Run MODEL.onnx on the data, reduce each chosen layer's activations to one "
            "vector per sample and compute the indices per layer, for the training set and "
            "(with --test) the cross indices of a test set. The .npz holds one array per "
            "model input (by input name; a single-input model may use 'inputs') and "
            "'labels' or 'targets'."
        ),
        example="layerscope analyze model.onnx --data train.npz --test test.npz "
                "--plot layers.png",
        args=(
            arg("model", metavar="MODEL.onnx", help="the ONNX model (or a stored model's id)"),
            arg("--data", required=True, metavar="TRAIN.npz",
                help="model inputs by input name and labels or targets"),
            arg("--test", metavar="TEST.npz", help="a test set: cross indices per layer"),
            arg("--layers", default="auto",
                help="auto (default), all, tensor names or globs (comma-separated), "
                     "or op:Conv,Gemm"),
            arg("--reduce", default="auto",
                help="auto (default), flatten, mean, first_token or project:N"),
            arg("--orders", type=_int_list, default=None, metavar="5",
                help="orders of the ordered families (default 5)"),
            arg("--indices", type=_name_list, default=None, metavar="NAMES",
                help="index names (default si, high_order_si, soft_order_si, center_si; "
                     "the SmI family for regression)"),
            arg("--gamma", type=float, default=None,
                help="sharpness of the SmI exp variants (default 1.0)"),
            arg("--normalize", action="store_true",
                help="standardise each layer's features with the training mean and std"),
            arg("--probe", action="store_true",
                help="also fit a ridge linear probe per layer (train/test accuracy)"),
            arg("--batch-size", type=int, default=None,
                help="samples per model run (default: chosen by the server)"),
            arg("--memory-budget-mb", type=float, default=None,
                help="memory budget in MB that the layers' accumulators share "
                     "(docs/layers.md)"),
            arg("--tolerance", type=float, default=None,
                help="rise below which the index counts as no longer improving (0.01)"),
            JSON,
            arg("--plot", metavar="FILE.png", help="write a plot of the indices per layer"),
            arg("--no-progress", action="store_true", help="no progress bar on stderr"),
            *CONNECTION,
        ),
        run=run_analyze,
        render=lambda out, args: format_layer_table(out),
        inputs=(("model", "onnx"), ("data", "npz"), ("test", "npz")),
    ),
    Command(
        name="rank",
        help="rank pre-trained models for a target dataset",
        description=(
            "For each model, take the features that feed its fully connected head (or the "
            "--layer given) and rank the models by how well they separate the labels: by "
            "default (--method soft_order) soft_order_si[r] of all features; --method folded "
            "the out-of-sample soft-order SI of a feature subset selected on the other "
            "folds; --method seed is Algorithm 2 as written (the "
            "in-sample SI of the SI-maximising subset; SmI for regression, its only "
            "method) (METRICS.md section 4). TARGET.npz holds one array "
            "per model input name (or 'inputs' when every model has one input) and "
            "'labels' or 'targets'. Models are named by their paths as given."
        ),
        example="layerscope rank a.onnx b.onnx --data target.npz --baselines",
        args=(
            arg("models", nargs="+", metavar="MODEL.onnx",
                help="the candidate models (or stored models' ids)"),
            arg("--data", required=True, metavar="TARGET.npz",
                help="the target dataset: model inputs and labels or targets"),
            arg("--layer", action="append", default=[], metavar="MODEL=TENSOR",
                help="use TENSOR of MODEL (its path as given) instead of the head rule"),
            arg("--reduce", default="auto",
                help="reduction of the layer's activations (as analyze's --reduce)"),
            arg("--max-features", type=int, default=None,
                help="forward selection steps (default 32)"),
            arg("--patience", type=int, default=None,
                help="stop the selection after this many steps without a new maximum"),
            arg("--order", type=int, default=None,
                help="order r of the folded score and the soft-order tie-breaker (5)"),
            arg("--method", default=None, metavar="{soft_order,folded,seed}",
                help="soft_order (default for classification), folded, or seed "
                     "(Algorithm 2 as written)"),
            arg("--folds", type=int, default=None,
                help="folds of the folded method (default 5)"),
            arg("--baselines", action="store_true",
                help="also LogME, LEEP, NCE and H-score on the same features"),
            arg("--batch-size", type=int, default=None,
                help="samples per model run (default: chosen by the server)"),
            JSON, *CONNECTION,
        ),
        run=run_rank,
        render=lambda out, args: format_ranking(out),
        inputs=(("models", "onnx"), ("data", "npz")),
    ),
    Command(
        name="certify",
        help="certify queries against a reference set: confidence, guarantee, radius",
        description=(
            "Build a reference from MODEL.onnx and REFERENCE.npz at a layer (default: the "
            "head rule) and certify each query of QUERIES.npz (raw model inputs by input "
            "name / 'inputs', or 'features' at that layer): METRICS.md section 3."
        ),
        example="layerscope certify model.onnx --reference train.npz --queries queries.npz "
                "--uncertainty 0.1",
        args=(
            arg("model", metavar="MODEL.onnx", help="the ONNX model (or a stored model's id)"),
            arg("--reference", required=True, metavar="REFERENCE.npz",
                help="the reference set: model inputs and labels or targets"),
            arg("--queries", required=True, metavar="QUERIES.npz",
                help="raw model inputs, or 'features' at the reference's layer"),
            arg("--layer", default=None,
                help="the tensor whose features are compared (default: the head rule)"),
            arg("--reduce", default="auto",
                help="reduction of the layer's activations (as analyze's --reduce)"),
            arg("--uncertainty", type=float, default=0.0,
                help="radius u of the perturbations each query must withstand (default 0)"),
            arg("--order", type=int, default=1,
                help="neighbours the confidence counts (default 1)"),
            arg("--mode", choices=("conservative", "exact"), default="conservative",
                help="regression: the set of cells that the uncertainty ball may reach"),
            JSON, *CONNECTION,
        ),
        run=run_certify,
        render=lambda out, args: format_certify(out),
        inputs=(("model", "onnx"), ("reference", "npz"), ("queries", "npz")),
    ),
    Command(
        name="export",
        help="convert a model file of another framework to ONNX, with a parity check",
        description=(
            "Convert SOURCE to ONNX and check that the ONNX model computes what the source "
            "model does on the sample inputs (largest differences per output, error above "
            "--tolerance). SOURCE: a .keras file (keras), a SavedModel folder (tf), a "
            ".skops file (sklearn), an XGBoost .json/.ubj model (xgboost), a LightGBM text "
            "model (lightgbm). PyTorch and JAX models are exported from Python "
            "(layerscope.exporters.export): their files are pickles or do not exist."
        ),
        example="layerscope export sklearn model.skops --sample sample.npz --out model.onnx",
        args=(
            arg("framework", choices=("keras", "tf", "sklearn", "xgboost", "lightgbm", "torch",
                                      "jax"),
                help="the source model's framework"),
            arg("source", metavar="SOURCE", help="the model file (or SavedModel folder)"),
            arg("--sample", required=True, metavar="SAMPLE.npz",
                help="sample inputs: one array per model input (or 'inputs')"),
            arg("--out", required=True, metavar="MODEL.onnx", help="the ONNX file to write"),
            arg("--tolerance", type=float, default=None,
                help="largest accepted difference between the source and the ONNX model"),
            arg("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)"),
            JSON,
        ),
        run=run_export,
        render=lambda out, args: format_export(out),
        connects=False,
        inputs=(("source", "source"), ("sample", "npz")),
    ),
    Command(
        name="serve",
        help="run the gRPC server",
        description="Run the layerscope gRPC server until SIGTERM.",
        example="layerscope serve --host 0.0.0.0 --port 50051 --token-file tokens.txt",
        args=(arg("args", nargs=argparse.REMAINDER,
                  help="the server's options: see `layerscope serve --help`"),),
        run=lambda args, client: 0,  # main() hands `serve` to the server's own entry point
        connects=False,
    ),
    Command(
        name="demo",
        help="train a small model on scikit-learn's digits and analyse it layer by layer",
        description=(
            "Train (or reuse) a small MLP on scikit-learn's digits, export it to ONNX, and "
            "run the layer-wise analysis with train and test sets through the embedded "
            "server; print the layer table and write OUT/ with the JSON result and a plot."
        ),
        example="layerscope demo --out layerscope-demo",
        args=(arg("--out", default="layerscope-demo",
                  help="folder for the model and results (default layerscope-demo)"),
              JSON, *CONNECTION),
        run=run_demo,
        render=render_demo,
    ),
    Command(
        name="protos",
        help="write the .proto files of the gRPC API, for clients in other languages",
        description="Write the package's layerscope/v1/*.proto files (the gRPC contract) "
                    "under DIR, keeping their import paths, so that protoc -I DIR generates "
                    "a client in any language.",
        example="layerscope protos --out protos && protoc -I protos --go_out=. "
                "protos/layerscope/v1/*.proto",
        args=(arg("--out", required=True, metavar="DIR",
                  help="folder to write layerscope/v1/*.proto under"),
              JSON),
        run=run_protos,
        render=render_protos,
        connects=False,
    ),
)
COMMANDS_BY_NAME = {c.name: c for c in COMMANDS}


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, except that the epilog's example keeps its lines."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerscope",
        description="Layer-by-layer separation (SI) and smoothness (SmI) indices.",
        epilog="example:\n  layerscope demo",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"layerscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description,
                           epilog=f"example:\n  {cmd.example}", formatter_class=_Formatter)
        server_group = None
        for a in cmd.args:
            if any(a is c for c in CONNECTION):
                server_group = server_group or p.add_argument_group("server")
                server_group.add_argument(*a.flags, **a.options)
            else:
                p.add_argument(*a.flags, **a.options)
    return parser


# running a command ----------------------------------------------------------------------
def check_inputs(cmd: Command, args: argparse.Namespace) -> None:
    """Raise DataFileError for the first input file that is missing or unreadable."""
    for dest, kind in cmd.inputs:
        value = getattr(args, dest, None)
        for path in value if isinstance(value, list) else [value]:
            if path is None or (kind == "onnx" and _is_id(path) and not Path(path).exists()):
                continue  # not given, or a stored model's id
            check_input(path, kind)


def _emit(cmd: Command, out: dict[str, Any] | int, args: argparse.Namespace) -> int:
    if isinstance(out, int):
        return out
    if getattr(args, "json", False) or cmd.render is None:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(cmd.render(out, args))
    return 0


def run_command(args: argparse.Namespace) -> int:
    cmd = COMMANDS_BY_NAME[args.command]
    check_inputs(cmd, args)
    if not cmd.connects:
        return _emit(cmd, cmd.run(args, None), args)
    with connect(args) as client:
        return _emit(cmd, cmd.run(args, client), args)


def _error(message: str) -> None:
    print(f"layerscope: error: {message}", file=sys.stderr)


def _main(argv: Sequence[str] | None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return run_serve(argv[1:], replace=from_command_line)
    args = build_parser().parse_args(argv)
    try:
        return run_command(args)
    except (DataFileError, UsageError, ValueError, ImportError) as exc:
        # ImportError: a framework's extra is missing (the message names it).
        _error(str(exc))
        return EXIT_BAD_INPUT
    except LayerscopeError as exc:
        _error(f"{exc.details} ({exc.code})")
        return EXIT_BAD_INPUT if exc.code in BAD_INPUT_CODES else 1
    except BrokenPipeError:
        raise
    except OSError as exc:
        if exc.filename is None:
            raise
        _error(f"{exc.filename}: {exc.strerror or exc}")  # e.g. an output folder not writable
        return EXIT_BAD_INPUT
    except RuntimeError as exc:  # missing optional extras, an unusable device
        _error(str(exc))
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``layerscope`` with ``argv``; return the exit code."""
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, inside the handler below
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (captured in tests)
        pass


if __name__ == "__main__":
    sys.exit(main())
