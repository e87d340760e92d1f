"""The ``layerscope`` command line: one table of commands (name, help, arguments, an example,
the handler) and the loop that runs one.

Commands that analyse go through the gRPC API: to ``--server host:port`` when given, else to
the embedded server of the data directory: started on a free loopback port when none is
running, and kept warm for the next command until it has been idle ``--keep-warm`` seconds
(``layerscope serve --stop`` stops it at once). Exit codes: 0 success, 2 bad input (one
line naming what was wrong and what was expected), 1 any other failure, 130 interrupted,
141 when the reader of stdout went away (``layerscope ... | head -1``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..lazy import lazy_module
from ..local import default_data_dir, write_atomic
from ..protos import codec, write_protos
from ..protos.options import IndexOptions
from .client import Client, LayerscopeError, _is_id
from .loaders import (
    Columns,
    ImageOptions,
    Source,
    array_source,
    image_options_for,
    kind_of,
    load_npy,
    open_source,
)
from .npz import DataFileError, check_input, load_npz, save_npz
from .remembered import RememberedDatasets
from .report import (
    format_certify,
    format_compression,
    format_export,
    format_layer_table,
    format_model,
    format_ranking,
    format_table,
)
from .results import IndicesResult
from .server_process import (
    SERVER_MODULE,
    ServerExtraMissing,
    require_server_extra,
    stop_server,
)

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")

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


DEFAULT_KEEP_WARM_S = 300.0


def _keep_warm(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds >= 0 (0: stop the server with the command); "
            f"got {text!r}")
    return value


def keep_warm_of(args: argparse.Namespace) -> float:
    """Seconds the embedded server stays warm: --keep-warm, else $LAYERSCOPE_KEEP_WARM,
    else the default."""
    if args.keep_warm is not None:
        return float(args.keep_warm)
    env = os.environ.get("LAYERSCOPE_KEEP_WARM")
    if env is None or env == "":
        return DEFAULT_KEEP_WARM_S
    try:
        return _keep_warm(env)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"$LAYERSCOPE_KEEP_WARM: {exc}") from None


def _float_tuple(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers like 0.485,0.456,0.406; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _size(text: str) -> tuple[int, int]:
    values = _int_list(text)
    if len(values) > 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected H or H,W (positive); got {text!r}")
    return (values[0], values[-1])


# how data files are read (client/loaders.py); every command that takes data has these
DATA_ARGS = (
    arg("--labels", metavar="LABELS.npy",
        help="with an .npy of inputs as the data: the .npy of labels (classification)"),
    arg("--targets", metavar="TARGETS.npy",
        help="with an .npy of inputs as the data: the .npy of targets (regression)"),
    arg("--test-labels", metavar="LABELS.npy", help="the same for an .npy test set"),
    arg("--test-targets", metavar="TARGETS.npy", help="the same for an .npy test set"),
    arg("--label-column", metavar="NAME",
        help="CSV/Parquet: the column of labels; the other (numeric) columns are features"),
    arg("--target-column", metavar="NAME",
        help="CSV/Parquet: the column of regression targets"),
    arg("--image-size", type=_size, metavar="H[,W]",
        help="image folders: the crop size (default: the model input's height and width)"),
    arg("--resize", type=int, metavar="N",
        help="image folders: shorter side before the centre crop (default: the crop's "
             "larger side)"),
    arg("--scale", type=float, default=1 / 255,
        help="image folders: factor applied to pixel values 0..255 (default 1/255)"),
    arg("--mean", type=_float_tuple, default=(0.0,), metavar="M[,M,M]",
        help="image folders: per-channel mean subtracted after scaling (default 0)"),
    arg("--std", type=_float_tuple, default=(1.0,), metavar="S[,S,S]",
        help="image folders: per-channel std divided by (default 1)"),
    arg("--layout", choices=("NCHW", "NHWC"), default=None,
        help="image folders: tensor layout (default: guessed from the model's input shape)"),
)


CONNECTION = (
    arg("--server", metavar="HOST:PORT", default=os.environ.get("LAYERSCOPE_SERVER"),
        help="use this server (default: the embedded one; $LAYERSCOPE_SERVER)"),
    arg("--token", default=os.environ.get("LAYERSCOPE_TOKEN"),
        help="bearer token for --server ($LAYERSCOPE_TOKEN)"),
    arg("--tls-ca", metavar="CA.pem", default=os.environ.get("LAYERSCOPE_TLS_CA"),
        help="reach --server over TLS, trusting this CA certificate ($LAYERSCOPE_TLS_CA)"),
    arg("--tls-server-name", metavar="NAME", default=None,
        help="the name the server's certificate holds, when it is not --server's host"),
    arg("--data-dir", type=Path, default=None,
        help="data directory of the embedded server (default: the user's data home)"),
    arg("--device", choices=("auto", "cpu", "gpu"), default=None,
        help="device of the embedded server (default auto: the GPU when one is usable)"),
    arg("--keep-warm", type=_keep_warm, default=None, metavar="S",
        help=f"keep the embedded server running for later commands until it has been idle "
             f"S seconds; 0 stops it when the command ends (default: $LAYERSCOPE_KEEP_WARM, "
             f"else {DEFAULT_KEEP_WARM_S:g})"),
)
JSON = arg("--json", action="store_true", help="print one JSON object instead of the report")
REPORT = arg("--report", metavar="FILE.html", default=None,
             help="also write a self-contained HTML report (tables and plots, no network)")

NO_PROGRESS = arg("--no-progress", action="store_true",
                  help="no progress bar on stderr (shown on a terminal, unless --json)")


def _image_options(args: argparse.Namespace, shape: Sequence[str] = ()) -> ImageOptions:
    given = ImageOptions(size=getattr(args, "image_size", None),
                         resize=getattr(args, "resize", None),
                         scale=getattr(args, "scale", 1 / 255),
                         mean=getattr(args, "mean", (0.0,)), std=getattr(args, "std", (1.0,)),
                         layout=getattr(args, "layout", None))
    return image_options_for(list(shape), given)


def read_data(args: argparse.Namespace, path: str, *, test: bool = False,
              input_name: str = "inputs", model: Any = None,
              classes: Sequence[str] | None = None) -> Source:
    """The source of a data argument (``test``: the --test one), read with the data flags;
    an image folder takes its defaults from ``model``'s single input. What was assumed
    (the preprocessing, class names) is printed on stderr."""
    pre = "test_" if test else ""
    shape: Sequence[str] = ()
    if model is not None and kind_of(path) == "images" and len(model.inputs) == 1:
        shape = model.inputs[0].shape
    source = open_source(
        path, input_name=input_name, labels=getattr(args, pre + "labels", None),
        targets=getattr(args, pre + "targets", None),
        columns=Columns(getattr(args, "label_column", None),
                        getattr(args, "target_column", None)),
        images=_image_options(args, shape), classes=classes)
    if source.note:
        print(f"note: {path}: {source.note}", file=sys.stderr)
    return source


def _input_name(model: Any, path: str) -> str:
    """The tensor name for the inputs of a one-array data file: the model's single input."""
    if len(model.inputs) == 1:
        return str(model.inputs[0].name)
    if kind_of(path) != "npz":
        names = ", ".join(t.name for t in model.inputs)
        raise DataFileError(f"{path}: the model has {len(model.inputs)} inputs ({names}); give "
                            "an .npz with one array per input name")
    return "inputs"


def _train_and_test(args: argparse.Namespace, data: str, test: str | None, model: Any = None,
                    input_name: str | None = None) -> tuple[Source, Source | None]:
    name = input_name or (_input_name(model, data) if model is not None else "inputs")
    train = read_data(args, data, input_name=name, model=model)
    if not test:
        return train, None
    held = read_data(args, test, test=True, input_name=name, model=model,
                     classes=train.classes or None)
    if held.key != train.key:
        raise DataFileError(f"{test}: holds '{held.key}' but {data} holds '{train.key}'; "
                            "both sets must be of the same task")
    return train, held


@contextlib.contextmanager
def connect(args: argparse.Namespace) -> Iterator[Client]:
    """The client of ``--server``, or of the embedded server."""
    if args.tls_ca or args.tls_server_name:
        if not args.server:
            raise UsageError("--tls-ca and --tls-server-name are for --server HOST:PORT (the "
                             "embedded server listens on loopback without TLS)")
        if not args.tls_ca:
            raise UsageError("--tls-server-name needs --tls-ca CA.pem")
    if args.server:
        ca = None
        if args.tls_ca:
            try:
                ca = Path(args.tls_ca).read_bytes()
            except OSError as exc:
                raise DataFileError(f"{args.tls_ca}: {exc.strerror or exc}; --tls-ca takes "
                                    "a PEM file of CA certificates") from None
            if b"-----BEGIN CERTIFICATE-----" not in ca:
                raise DataFileError(f"{args.tls_ca}: holds no PEM certificate; --tls-ca takes "
                                    "a PEM file of CA certificates")
        client = Client(args.server, token=args.token, root_certificates=ca,
                        server_name=args.tls_server_name)
    else:
        warm = keep_warm_of(args)
        client = Client.local(args.data_dir, device=args.device, keep_warm=warm or None)
        if warm and client.started is not None and sys.stderr.isatty():
            print(f"layerscope: started a server at {client.started.address} for later "
                  f"commands; it stops after {warm:g} s idle, or with `layerscope serve "
                  f"--stop`", file=sys.stderr)
    with client:
        yield client


# handlers -------------------------------------------------------------------------------
def _given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _index_options(args: argparse.Namespace, names: Sequence[str]) -> IndexOptions:
    """The IndexOptions of the index-option arguments given (OptionError: exit 2)."""
    return IndexOptions.build(**_given(args, names))


def run_indices(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    """Return the result dict of the ``indices`` command."""
    options = _index_options(args, ("indices", "orders", "gamma", "normalize", "margin_cap",
                                    "max_features", "patience", "precision",
                                    "memory_budget_mb", "per_sample"))
    progress = _show_progress(args)
    store = not args.server if args.store is None else args.store
    result = _remembered_indices(args, client, options, progress) if store else None
    if result is None:
        result = _read_indices(args, client, store, options, progress)
    out = result.to_dict()
    out["data"] = str(args.data)
    if args.test:
        out["test"] = str(args.test)
    return out


def _read_indices(args: argparse.Namespace, client: Client, store: bool,
                  options: IndexOptions, progress: bool) -> IndicesResult:
    """The indices of the data files, read: stored as datasets (and remembered), or sent
    with the call."""
    files, book = _data_files(args), _book(args)
    seen = {path: book.see(path) for path in files}
    train, test = _train_and_test(args, args.data, args.test, input_name="features")
    train = _indexed(args.data, train)
    test = None if test is None else _indexed(args.test, test)
    if store and (args.store or all(_storable(s) for s in (train, test) if s is not None)):
        stored = _stored_indices(args, client, train, test, options, progress)
        if stored is not None:
            result, datasets = stored
            for path, dataset in zip(files, datasets, strict=True):
                book.remember(path, REMEMBERED_FOR, seen[path], dataset, train.key)
            return result
    # the arrays go with the call, and nothing stays on the server
    arrays, key = train.tensors(), train.key
    held = {} if test is None else {f"test_{k}": v for k, v in test.tensors().items()}
    return client.compute_indices(arrays["features"], **{key: arrays[key]}, **held,
                                  options=options, progress=progress)


REMEMBERED_FOR = "indices"
"""What ``indices`` stores from a data file (its features and labels or targets), the
purpose its datasets are remembered under (``client/remembered.py``)."""


def _book(args: argparse.Namespace) -> RememberedDatasets:
    return RememberedDatasets(args.data_dir or default_data_dir())


def _data_files(args: argparse.Namespace) -> list[str]:
    return [args.data] + ([args.test] if args.test else [])


def _remembered_indices(args: argparse.Namespace, client: Client, options: IndexOptions,
                        progress: bool) -> IndicesResult | None:
    """The indices of .npz files whose datasets are remembered (the files unchanged since
    they were stored: not read again), or None (not remembered, or the server does not
    hold the datasets, or it predates ComputeIndices on stored datasets)."""
    files = _data_files(args)
    if any(kind_of(path) != "npz" for path in files) or any(
            getattr(args, flag, None) is not None
            for flag in ("labels", "targets", "test_labels", "test_targets")):
        return None  # the flags' errors and other loaders: read as always
    book = _book(args)
    found = [book.recall(path, REMEMBERED_FOR) for path in files]
    if any(f is None for f in found) or len({f.key for f in found if f}) > 1:
        return None  # not remembered; or a pair of two tasks, whose reading names the file
    ids = [f.dataset for f in found if f]
    try:
        return client.compute_indices(ids[0], test_features=ids[1] if args.test else None,
                                      options=options, progress=progress)
    except LayerscopeError as exc:
        if exc.code == "NOT_FOUND" or (exc.code == "INVALID_ARGUMENT"
                                       and OLD_SERVER_REFUSAL in exc.details):
            for path in files:
                book.forget(path, REMEMBERED_FOR)
            return None  # read and sent as the first time
        raise


def _storable(source: Source) -> bool:
    """Whether a data file's labels or targets are what a stored dataset holds; the engine
    also takes (m, 1) labels and integer targets, which are then sent with the call."""
    _, dtype, shape = next(s for s in source.specs if s[0] == source.key)
    return codec.dataset_target_problem(source.key, dtype, list(shape)) is None


def _stored_indices(args: argparse.Namespace, client: Client, train: Source,
                    test: Source | None, options: IndexOptions, progress: bool
                    ) -> tuple[IndicesResult, list[str]] | None:
    """The indices of the data files stored as datasets (not sent again when the server
    holds them), and the datasets' ids; None from a server that predates ComputeIndices on
    stored datasets (what it stored stays). A dataset deleted by someone else between its
    upload and the call is uploaded once more."""
    for attempt in (1, 2):
        data = client.upload_source(train, Path(args.data).name, progress)
        held = None if test is None else client.upload_source(
            test, Path(args.test).name, progress)
        try:
            result = client.compute_indices(data, test_features=held, options=options,
                                            progress=progress)
        except LayerscopeError as exc:
            if exc.code == "NOT_FOUND" and attempt == 1:
                continue
            if exc.code == "INVALID_ARGUMENT" and OLD_SERVER_REFUSAL in exc.details:
                return None
            raise
        return result, [data.id] + ([] if held is None else [held.id])
    raise AssertionError("not reached")


OLD_SERVER_REFUSAL = "with 'features' present; got []"
"""How a server from before ``ComputeIndicesHeader.dataset_id`` refuses a stored call: it
does not know the field, so it sees a header without tensors."""


def _indexed(path: str, source: Source) -> Source:
    """The features and the labels or targets of a data file (an .npz's other arrays
    left out); an .npz's arrays stay their bytes, hashed and sent without NumPy."""
    arrays = source.tensors()
    if "features" not in arrays:
        found = ", ".join(repr(n) for n in arrays)
        raise DataFileError(f"{path}: missing array 'features' (found: {found})")
    return array_source({"features": arrays["features"], source.key: arrays[source.key]},
                        source.key)


def _show_progress(args: argparse.Namespace) -> bool:
    """A progress bar on stderr: a terminal's, unless --json or --no-progress."""
    return not getattr(args, "json", False) and not getattr(args, "no_progress", False) \
        and sys.stderr.isatty()


def _upload(client: Client, args: argparse.Namespace, source: Source, path: str) -> Any:
    """The stored dataset of ``source`` (read and uploaded a block at a time)."""
    return client.upload_source(source, Path(path).name, progress=_show_progress(args))


def _stored_model(client: Client, given: str) -> Any:
    """The stored model of a path (uploaded) or of a stored model's id."""
    if _is_id(given) and not Path(given).exists():
        return client.get_model(given)
    return client.upload_model(given)


def run_layers(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    """Return the stored model's description (inputs, outputs, candidate layers)."""
    return _stored_model(client, args.model).to_dict()  # type: ignore[no-any-return]


def run_analyze(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    """Return the result dict of the ``analyze`` command."""
    model = _stored_model(client, args.model)
    train_source, test_source = _train_and_test(args, args.data, args.test, model)
    data = _upload(client, args, train_source, args.data)
    test = _upload(client, args, test_source, args.test) if test_source else None
    options = _index_options(args, ("indices", "orders", "gamma", "normalize",
                                    "memory_budget_mb"))
    show = _show_progress(args)
    result = client.analyze_layers(
        model, data, test, layers=[args.layers], reduce=args.reduce, probe=args.probe,
        options=options, progress=show, **_given(args, ("batch_size", "tolerance")),
    )
    out = result.to_dict()
    out["model_path"] = str(args.model)
    if args.plot:
        out["plot"] = str(result.plot(args.plot))
    return out


def _demo_model(out_dir: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """Train a small MLP on the digits and export it through layerscope's scikit-learn
    exporter (hidden layers named hidden1, hidden2; reused when present)."""
    path = out_dir / "digits-mlp.onnx"
    if path.is_file():
        return path
    try:
        from sklearn.neural_network import MLPClassifier  # noqa: PLC0415

        from ..exporters.sklearn import export_sklearn  # noqa: PLC0415
    except ImportError:
        raise UsageError(
            "the demo trains a scikit-learn model and exports it with skl2onnx: "
            "pip install 'layerscope[sklearn]'"
        ) from None
    clf = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=400, random_state=0)
    clf.fit(x, y)
    export_sklearn(clf, x[:64], path, opset=17)
    return path


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
    first = None
    if kind_of(args.data) == "images" and args.image_size is None:
        first = _stored_model(client, args.models[0])  # the image size of the first model
    data = _upload(client, args, read_data(args, args.data, model=first), args.data)
    layers: dict[str, str] = {}
    for item in args.layer:
        model, sep, tensor = item.partition("=")
        if not sep or not tensor or model not in args.models:
            raise UsageError(f"--layer takes MODEL=TENSOR with MODEL one of the models given; "
                             f"got {item!r}")
        layers[model] = tensor
    result = client.rank_models(
        args.models, data, layers=layers, reduce=args.reduce,
        max_features=args.max_features, patience=args.patience, order=args.order,
        baselines=args.baselines, batch_size=args.batch_size, method=args.method,
        folds=args.folds, progress=_show_progress(args))
    return result.to_dict()


def run_certify(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    model = _stored_model(client, args.model)
    ref_data = _upload(client, args, read_data(
        args, args.reference, input_name=_input_name(model, args.reference), model=model),
        args.reference)
    if kind_of(args.queries) == "npy":
        queries = {_input_name(model, args.queries): np.asarray(load_npy(Path(args.queries)))}
    else:
        queries = load_npz(args.queries)
    queries.pop("labels", None)
    queries.pop("targets", None)
    reference = client.build_reference(
        model, ref_data, layer=args.layer, reduce=args.reduce, uncertainty=args.uncertainty,
        progress=_show_progress(args))
    if "features" in queries:
        result = client.certify(reference, queries["features"], uncertainty=args.uncertainty,
                                order=args.order, mode=args.mode)
    else:
        result = client.certify(reference, inputs=queries, uncertainty=args.uncertainty,
                                order=args.order, mode=args.mode)
    return {"reference": reference.to_dict(), **result.to_dict()}


def run_compress(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    """Compress the model, write the smaller one to --out; return the report."""
    model = _stored_model(client, args.model)
    train_source, test_source = _train_and_test(args, args.data, args.test, model)
    assert test_source is not None  # --test is required
    data = _upload(client, args, train_source, args.data)
    test = _upload(client, args, test_source, args.test)
    result = client.compress(
        model, data, test, layers=[args.layers], criterion=args.criterion,
        reduce=args.reduce, progress=_show_progress(args),
        **_given(args, ("tolerance", "select_features", "batch_size", "alpha")))
    raw = result.model
    assert raw is not None  # Client.compress downloads it
    written = write_atomic(args.out, lambda f: f.write(raw))
    return result.to_dict() | {"out": str(written), "model_path": str(args.model)}


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
    if "--stop" in argv:
        return stop_serve(argv)
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


def stop_serve(argv: Sequence[str]) -> int:
    """``layerscope serve --stop [--data-dir DIR]``: stop the server of the data directory
    (a warm embedded one, or one started with ``serve``) and say which, or that none ran."""
    p = argparse.ArgumentParser(prog="layerscope serve --stop",
                                description="Stop the server that holds a data directory.")
    p.add_argument("--stop", action="store_true", required=True)
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help="its data directory (default: the user's data home)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="seconds to wait for a graceful stop before killing it (default 60)")
    args = p.parse_args(argv)
    folder = args.data_dir or default_data_dir()
    info = stop_server(folder, timeout=args.timeout)
    if info is None:
        print(f"no layerscope server holds {folder}")
    else:
        print(f"stopped the layerscope server of {folder} (pid {info.pid}, {info.address})")
    return 0


def run_protos(args: argparse.Namespace, client: None) -> dict[str, Any]:
    """Write the package's .proto files under ``--out`` (their import paths kept)."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: is a file; --out takes a folder to write the .proto files in")
    written = write_protos(out)
    if not written:
        raise RuntimeError("this installation holds no .proto files (a broken wheel?)")
    return {"out": str(out), "files": [str(p) for p in written]}


def run_report(args: argparse.Namespace, client: None) -> dict[str, Any]:
    """Write the HTML report of a saved ``--json`` result."""
    from .html_report import report_from_json  # noqa: PLC0415 - only this command and --report

    return {"report": str(report_from_json(args.result, args.out))}


def render_protos(out: dict[str, Any], args: argparse.Namespace) -> str:
    return "\n".join([*out["files"], f"generate a client with, e.g., protoc -I {out['out']} "
                      f"--python_out=. {out['out']}/layerscope/v1/*.proto"])


# management -----------------------------------------------------------------------------
def _need_id(args: argparse.Namespace, what: str) -> str:
    if not args.id:
        raise UsageError(f"{args.command} {args.action} needs the {what}'s id")
    return str(args.id)


def run_jobs(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    """list: the jobs; watch ID: follow one to its end; cancel ID: ask it to stop."""
    if args.action == "list":
        return {"jobs": [_job_row(j) for j in client.jobs()]}
    job_id = _need_id(args, "job")
    if args.action == "cancel":
        return {"job": _job_row(client.cancel(job_id))}
    try:
        client.wait(client.job(job_id), progress=_show_progress(args))
    except LayerscopeError as exc:
        if exc.code in ("FAILED", "CANCELLED"):
            return {"job": _job_row(client.job(job_id))}
        raise
    return {"job": _job_row(client.job(job_id))}


def _job_row(job: Any) -> dict[str, Any]:
    return {"id": job.id, "kind": job.kind, "state": job.state, "message": job.message,
            "progress": dict(job.progress), "created": job.created, "started": job.started,
            "finished": job.finished}


def run_models(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    """list: the stored models; delete ID: remove one."""
    if args.action == "delete":
        client.delete_model(_need_id(args, "model"))
        return {"deleted": args.id}
    return {"models": [{"id": m.id, "name": m.name, "size_bytes": m.size_bytes,
                        "created": m.created} for m in client.models()]}


def run_datasets(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    """list: the stored datasets; upload PATH: store a data file or image folder; delete
    ID: remove one."""
    if args.action == "delete":
        client.delete_dataset(_need_id(args, "dataset"))
        return {"deleted": args.id}
    if args.action == "upload":
        if not args.id:
            raise UsageError("datasets upload needs a data file or image folder")
        check_input(args.id, "data")
        model = _stored_model(client, args.model) if args.model else None
        name = _input_name(model, args.id) if model is not None else "inputs"
        source = read_data(args, args.id, input_name=name, model=model)
        return {"dataset": _upload(client, args, source, args.id).to_dict()}
    return {"datasets": [d.to_dict() for d in client.datasets()]}


def run_references(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    """list: the stored certification references; delete ID: remove one."""
    if args.action == "delete":
        client.delete_reference(_need_id(args, "reference"))
        return {"deleted": args.id}
    return {"references": [r.to_dict() for r in client.references()]}


def render_listing(out: dict[str, Any], args: argparse.Namespace) -> str:
    """The management commands' output: one line per item."""
    if "deleted" in out:
        return f"deleted {out['deleted']}"
    if "job" in out:
        j = out["job"]
        return f"{j['id']}  {j['kind']}  {j['state']}  {j['message']}".rstrip()
    if "dataset" in out:
        d = out["dataset"]
        return (f"{d['id']}  {d['name']}  {d['n_samples']} samples  {d['task']}  "
                f"{_size_text(d['size_bytes'])}")
    rows: list[str] = []
    for j in out.get("jobs", []):
        p = j["progress"]
        stage = f"{p.get('stage', '')} {float(p.get('fraction', 0)) * 100:.0f}%" \
            if j["state"] == "running" else ""
        rows.append(f"{j['id']}  {j['kind']:<16} {j['state']:<10} {stage}".rstrip())
    for m in out.get("models", []):
        rows.append(f"{m['id']}  {_size_text(m['size_bytes']):>9}  {m['name']}")
    for d in out.get("datasets", []):
        rows.append(f"{d['id']}  {d['n_samples']:>8} samples  {d['task']:<14} "
                    f"{_size_text(d['size_bytes']):>9}  {d['name']}")
    for r in out.get("references", []):
        rows.append(f"{r['id']}  model {r['model_id'][:12]}  {r['layer']}  {r['task']}  "
                    f"{r['n_samples']} samples x {r['features']} features")
    return "\n".join(rows) if rows else f"no {args.command}"


def _size_text(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


# the table ------------------------------------------------------------------------------
COMMANDS: tuple[Command, ...] = (
    Command(
        name="indices",
        help="indices of a set of feature vectors (.npz with features and labels or targets)",
        description=(
            "Compute the SI family (labels) or the SmI family (targets) of the feature "
            "vectors in DATA.npz, and their cross indices for TEST.npz. DATA.npz holds "
            "'features' (m x ..., flattened per sample) and 'labels' (m,) integer or "
            "'targets' (m,) / (m, t). The embedded server keeps the data as a dataset (by "
            "content: a file it already holds is not sent again) and indexes it there "
            "(`layerscope datasets` lists and deletes them); with --server the arrays go "
            "with the call and nothing is kept, unless --store."
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
            arg("--store", action=argparse.BooleanOptionalAction, default=None,
                help="--store: keep the data on the server as a dataset (by content) and "
                     "index it by id, so that it is not sent again (the default with the "
                     "embedded server); --no-store: send the arrays with the call and keep "
                     "nothing (the default with --server)"),
            *DATA_ARGS, JSON, NO_PROGRESS, *CONNECTION,
        ),
        run=run_indices,
        render=lambda out, args: format_table(out, per_class=args.per_class),
        inputs=(("data", "data"), ("test", "data")),
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
            arg("--probe", nargs="?", const=True, default=False, choices=("ridge", "logistic"),
                help="also fit a linear probe per layer (train/test accuracy): ridge (the "
                     "default; penalty chosen per layer by leave-one-out) or logistic"),
            arg("--batch-size", type=int, default=None,
                help="samples per model run (default: chosen by the server)"),
            arg("--memory-budget-mb", type=float, default=None,
                help="memory budget in MB that the layers' accumulators share "
                     "(docs/layers.md)"),
            arg("--tolerance", type=float, default=None,
                help="rise below which the index counts as no longer improving (0.01)"),
            JSON, REPORT,
            arg("--plot", metavar="FILE.png", help="write a plot of the indices per layer"),
            NO_PROGRESS, *DATA_ARGS, *CONNECTION,
        ),
        run=run_analyze,
        render=lambda out, args: format_layer_table(out),
        inputs=(("model", "onnx"), ("data", "data"), ("test", "data")),
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
            arg("--baselines", nargs="?", const=True, default=False, metavar="NAMES",
                help="also transferability baselines on the same features: alone, LogME, "
                     "LEEP, NCE and H-score; or a comma list of logme, leep, nce, h_score, "
                     "nleep, sfda, ncti, gbc, transrate, shrinkage_h_score, or 'all'"),
            arg("--batch-size", type=int, default=None,
                help="samples per model run (default: chosen by the server)"),
            *DATA_ARGS, JSON, REPORT, NO_PROGRESS, *CONNECTION,
        ),
        run=run_rank,
        render=lambda out, args: format_ranking(out),
        inputs=(("models", "onnx"), ("data", "data")),
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
            *DATA_ARGS, JSON, REPORT, NO_PROGRESS, *CONNECTION,
        ),
        run=run_certify,
        render=lambda out, args: format_certify(out),
        inputs=(("model", "onnx"), ("reference", "data"), ("queries", "data")),
    ),
    Command(
        name="compress",
        help="cut a model where a linear probe matches it, and write the smaller model",
        description=(
            "Analyse the chosen layers of MODEL.onnx with a ridge probe, cut the model at the "
            "earliest layer whose test probe accuracy (R^2 for regression) is within "
            "--tolerance of the model's own test score, close it with the layer's reduction "
            "and a ridge head fitted on TRAIN.npz, and write it to --out with the original "
            "input and output names. Both models are run side by side on TEST.npz: scores, "
            "parameters, size, MACs and latency (docs/compress.md)."
        ),
        example="layerscope compress model.onnx --data train.npz --test test.npz "
                "--tolerance 0.01 --out small.onnx",
        args=(
            arg("model", metavar="MODEL.onnx", help="the ONNX model (or a stored model's id)"),
            arg("--data", required=True, metavar="TRAIN.npz",
                help="model inputs and labels or targets: the head is fitted on it"),
            arg("--test", required=True, metavar="TEST.npz",
                help="a test set: the cut is chosen and both models are scored on it"),
            arg("--out", required=True, metavar="SMALL.onnx",
                help="the compressed model to write"),
            arg("--tolerance", type=float, default=None,
                help="how far below the model's own test score the cut may be, in [0, 1] "
                     "(default 0.01)"),
            arg("--criterion", choices=("probe", "si"), default="probe",
                help="probe (default): the earliest layer within tolerance; si: where SI "
                     "(SmI) stops rising by more than the tolerance"),
            arg("--layers", default="auto",
                help="the candidate cuts: auto (default), all, tensor names or globs "
                     "(comma-separated), or op:Conv,Gemm"),
            arg("--select-features", type=int, default=None, metavar="N",
                help="keep only the N features the SI forward selection picks first"),
            arg("--reduce", choices=("auto", "mean", "flatten"), default="auto",
                help="reduction at the cut (auto: mean over spatial axes, flatten vectors)"),
            arg("--alpha", type=float, default=None,
                help="ridge regulariser of the head and the probe (default 1.0)"),
            arg("--batch-size", type=int, default=None,
                help="samples per model run (default: chosen by the server)"),
            *DATA_ARGS, JSON, NO_PROGRESS, *CONNECTION,
        ),
        run=run_compress,
        render=lambda out, args: format_compression(out),
        inputs=(("model", "onnx"), ("data", "data"), ("test", "data")),
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
        name="report",
        help="write the self-contained HTML report of a saved --json result",
        description="Write an HTML page (tables, inline SVG plots, the options and the "
                    "device) of the --json output of analyze, rank or certify; it opens "
                    "without network access.",
        example="layerscope analyze model.onnx --data train.npz --json > result.json && "
                "layerscope report result.json --out report.html",
        args=(arg("result", metavar="RESULT.json", help="the saved --json output"),
              arg("--out", required=True, metavar="FILE.html", help="the HTML file to write"),
              JSON),
        run=run_report,
        render=lambda out, args: f"report written to {out['report']}",
        connects=False,
        inputs=(("result", "json"),),
    ),
    Command(
        name="jobs",
        help="list, watch or cancel the server's jobs",
        description="list (default): the jobs, newest first; watch ID: follow a job to its "
                    "end with a progress bar; cancel ID: ask a queued or running job to stop.",
        example="layerscope jobs watch 3f2a... --server host:50051",
        args=(arg("action", nargs="?", choices=("list", "watch", "cancel"), default="list",
                  help="list (default), watch or cancel"),
              arg("id", nargs="?", help="the job's id (watch, cancel)"),
              JSON, NO_PROGRESS, *CONNECTION),
        run=run_jobs,
        render=render_listing,
    ),
    Command(
        name="models",
        help="list or delete stored models",
        description="list (default): the stored models, newest first; delete ID: remove a "
                    "model (its references go with it).",
        example="layerscope models delete 9c1e...",
        args=(arg("action", nargs="?", choices=("list", "delete"), default="list",
                  help="list (default) or delete"),
              arg("id", nargs="?", help="the model's id (delete)"),
              JSON, *CONNECTION),
        run=run_models,
        render=render_listing,
    ),
    Command(
        name="datasets",
        help="list, upload or delete stored datasets",
        description="list (default): the stored datasets, newest first; upload PATH: store a "
                    "data file (.npz, .npy with --labels, .csv/.parquet with --label-column) "
                    "or an image folder, streamed a block at a time (--model takes the image "
                    "size and layout from a model); delete ID: remove a dataset.",
        example="layerscope datasets upload train.parquet --label-column species",
        args=(arg("action", nargs="?", choices=("list", "upload", "delete"), default="list",
                  help="list (default), upload or delete"),
              arg("id", nargs="?", metavar="ID|PATH",
                  help="the dataset's id (delete) or the file or folder to upload"),
              arg("--model", metavar="MODEL.onnx",
                  help="upload: name the data by this model's input; image folders take "
                       "its input size and layout"),
              *DATA_ARGS, JSON, NO_PROGRESS, *CONNECTION),
        run=run_datasets,
        render=render_listing,
    ),
    Command(
        name="references",
        help="list or delete stored certification references",
        description="list (default): the certification references that certify built, "
                    "newest first; delete ID: remove one (certify builds it again when "
                    "needed).",
        example="layerscope references delete 5be0...",
        args=(arg("action", nargs="?", choices=("list", "delete"), default="list",
                  help="list (default) or delete"),
              arg("id", nargs="?", help="the reference's id (delete)"),
              JSON, *CONNECTION),
        run=run_references,
        render=render_listing,
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


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``only`` (a command's name, the first argument) the
    parser of that command alone: a parse that starts with it never reads the others, whose
    parsers took 5 ms of every command."""
    parser = argparse.ArgumentParser(
        prog="layerscope",
        description="Layer-by-layer separation (SI) and smoothness (SmI) indices.",
        epilog="example:\n  layerscope demo",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"layerscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS if only is None else [COMMANDS_BY_NAME[only]]:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description,
                           epilog=f"example:\n  {cmd.example}", formatter_class=_Formatter)
        server_group = data_group = None
        for a in cmd.args:
            if any(a is c for c in CONNECTION):
                server_group = server_group or p.add_argument_group("server")
                server_group.add_argument(*a.flags, **a.options)
            elif any(a is c for c in DATA_ARGS):
                data_group = data_group or p.add_argument_group(
                    "data files (.npy pairs, CSV, Parquet, image folders)")
                data_group.add_argument(*a.flags, **a.options)
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
    if getattr(args, "report", None) and cmd.name != "report":
        from .html_report import write_report  # noqa: PLC0415 - only with --report

        out["report"] = str(write_report(out, args.report))
    if getattr(args, "json", False) or cmd.render is None:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(cmd.render(out, args))
        if out.get("report") and cmd.name != "report":
            print(f"report written to {out['report']}")
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
    args = build_parser(argv[0] if argv[:1] and argv[0] in COMMANDS_BY_NAME else None
                        ).parse_args(argv)
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
    """Run ``layerscope`` with ``argv``; return the exit code. Without ``argv`` (the command
    line's process) what is imported by now is frozen out of the garbage collector, and the
    process ends as soon as the command is done (:func:`_end_process`)."""
    if argv is None:
        _freeze_imports()
    code = _run_main(argv)
    if argv is None and sys.argv[1:2] != ["serve"]:
        _end_process(code)
    return code


def _run_main(argv: Sequence[str] | None) -> int:
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


def _end_process(code: int) -> None:
    """Exit the command line's process with ``code`` now, doing what a normal exit does
    that anyone could see (the atexit handlers, which also run the weakref finalizers that
    remove temporary files; logging's last flush; the streams' flush) and skipping what no
    one can: the interpreter's teardown of every module and object, 30-60 ms here, more
    than a warm command's RPC. Returns, for the normal exit, while another non-daemon
    thread runs (a normal exit waits for it) or when a stream cannot be flushed."""
    import atexit  # noqa: PLC0415
    import logging  # noqa: PLC0415
    import threading  # noqa: PLC0415

    if any(t is not threading.main_thread() and not t.daemon and t.is_alive()
           for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()  # what the interpreter calls first (and then forgets them)
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code)


def _freeze_imports() -> None:
    """Move the objects alive now (NumPy's, gRPC's, protobuf's and our modules': ~35 000)
    to the collector's permanent generation, as ``gc.freeze`` documents. They live until the
    process exits, and the interpreter's shutdown collections would traverse all of them,
    several times, to free memory the exit returns anyway: ~50 ms of a warm command (more
    than its RPC). Objects the command creates stay collectable, at exit too; reference
    counting, atexit handlers and the threads' shutdown run as before."""
    import gc  # noqa: PLC0415

    gc.freeze()


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
