"""Benchmark: layerscope's layer extraction against plain inference and PyTorch hooks.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/extraction.py                 # n=2048, batch 128 (~20 s, 2 cores)
    .venv/bin/python benchmarks/extraction.py --quick         # smoke test: n=256
    .venv/bin/python benchmarks/extraction.py --n 8192 --batch-size 256 --repeats 5
    .venv/bin/python benchmarks/extraction.py --markdown > table.md  # for benchmarks/RESULTS.md

Model: a small ResNet-like CNN defined here in PyTorch: a 3x3 conv stem (16 channels), three
stages of two residual blocks (16, 32, 64 channels; the first block of stages 2 and 3 has
stride 2 and a 1x1 projection shortcut), each conv followed by BatchNorm, ReLU after the
first conv of a block and after the residual sum, then global average pooling and a fully
connected layer to 10 logits. Input 3x32x32. The weights and the BatchNorm statistics are
random but seeded. At startup a child process builds it in eval mode, saves its state dict
and exports it with ``torch.onnx.export(dynamo=False, opset_version=17)`` (batch axis
dynamic; the exporter folds each BatchNorm into its conv) to a temporary directory that
every measurement reads.

Data: ``n`` float32 images of shape 3x32x32 drawn from a standard normal (seed 0), the same
for every method, processed in batches of ``--batch-size`` (128 by default; the last batch
may be smaller).

Methods (each repeat of each method runs in a fresh subprocess that generates the data,
imports its libraries and loads the model, then times the work alone):

* ``ort``: plain onnxruntime inference of the original ONNX model, the baseline: an
  ``InferenceSession`` on the CPU with the session options of
  ``layerscope.server.runtime.session.make_session`` (all graph optimizations,
  ``intra_op_num_threads = os.cpu_count()``, ``inter_op_num_threads = 1``), then
  ``session.run`` over the batches, the outputs discarded.
* ``ours``: ``layerscope.server.runtime.extract`` of the layers (``--layers``, ``auto`` by
  default: every layer the auto rule picks, listed with the table; 23 for this model: each
  block's two ReLUs and its second conv before the residual sum, the two projection
  shortcuts, the stem, the pooling and the logits) with ``reduce="mean"``
  on the CPU at the same batch size. It builds its own session (the model with the layers
  exposed as outputs) and runs one probe batch of 4 samples first; both are included.
  ``describe`` and ``select_layers`` run before the clock starts.
* ``hooks``: the same layers collected from the PyTorch module with forward hooks under
  ``torch.inference_mode()``, at the same batch size: each hook takes the mean over the
  spatial axes (the same reduction) and copies it into a preallocated (n, channels)
  tensor. An ONNX layer maps to the module that produces it: the node's scope names the
  module, and a convolution whose BatchNorm the exporter folded maps to its conv+BN pair.
  The startup cross-check compares these values with ours.
* ``torch``: the plain PyTorch forward without hooks, for information.

PyTorch runs with ``torch.set_num_threads(os.cpu_count())``, the thread count onnxruntime
gets.

Columns of the table:

* ``time s``: wall time (``time.perf_counter``) from the model and data in memory to the
  last batch done, best of ``--repeats``. It includes session creation for ``ort`` and
  ``ours`` (the ``setup s`` column shows that part) and, for ``hooks``, the hook
  registration, the preallocation and a one-sample forward that learns the widths.
  Imports, data generation and model loading are not timed.
* ``ratio to plain ORT``: time / the time of ``ort``.
* ``samples/s``: n / time.
* ``setup s``: for ``ort`` the ``InferenceSession`` construction; for ``ours`` exposing the
  layers plus session construction (timed around layerscope's ``expose`` and
  ``make_session`` calls); for ``hooks`` the hooks, buffers and one-sample forward.

Below the table: the target (ours <= 1.3x plain onnxruntime inference) as a checklist, and
ours against the hooks approach.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from _report import (
    child_result,
    emit,
    env_line,
    machine_line,
    pool_lines,
    table,
    thread_pools,
)

SEED = 0
DEFAULT_N = 2048
QUICK_N = 256
DEFAULT_BATCH = 128
TARGET_RATIO = 1.3
IMAGE = (3, 32, 32)
WIDTHS = (16, 32, 64)
N_CLASSES = 10
CHECK_N = 64  # samples for the startup cross-check of ours against the hooks

METHODS = ("ort", "ours", "hooks", "torch")
LABELS = {
    "ort": "plain onnxruntime (baseline)",
    "ours": "ours (layerscope extract)",
    "hooks": "PyTorch forward hooks",
    "torch": "PyTorch forward, no hooks",
}
ONNX_FILE = "resnet.onnx"
WEIGHTS_FILE = "resnet.pt"
INPUT_NAME = "input"

GB = 1 << 30


# --------------------------------------------------------------------------- worker side


def build_model() -> Any:
    """Return the ResNet-like CNN (a torch module in eval mode), seeded random weights."""
    import torch
    from torch import nn

    class ConvBN(nn.Sequential):
        def __init__(self, cin: int, cout: int, stride: int = 1, k: int = 3) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
            self.bn = nn.BatchNorm2d(cout)

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.cbn1 = ConvBN(cin, cout, stride)
            self.relu1 = nn.ReLU()
            self.cbn2 = ConvBN(cout, cout)
            self.down = ConvBN(cin, cout, stride, 1) if stride != 1 or cin != cout else None
            self.relu2 = nn.ReLU()

        def forward(self, x: Any) -> Any:
            y = self.cbn2(self.relu1(self.cbn1(x)))
            return self.relu2(y + (x if self.down is None else self.down(x)))

    class ResNetLike(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = ConvBN(IMAGE[0], WIDTHS[0])
            self.stem_relu = nn.ReLU()
            stages = []
            cin = WIDTHS[0]
            for i, w in enumerate(WIDTHS):
                stride = 1 if i == 0 else 2
                stages.append(nn.Sequential(Block(cin, w, stride), Block(w, w, 1)))
                cin = w
            self.stage1, self.stage2, self.stage3 = stages
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.flatten = nn.Flatten()
            self.fc = nn.Linear(cin, N_CLASSES)

        def forward(self, x: Any) -> Any:
            x = self.stem_relu(self.stem(x))
            x = self.stage3(self.stage2(self.stage1(x)))
            return self.fc(self.flatten(self.pool(x)))

    torch.manual_seed(SEED)
    model = ResNetLike()
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):  # non-trivial statistics to fold
                c = mod.num_features
                weight, bias = mod.weight, mod.bias
                mean, var = mod.running_mean, mod.running_var
                assert weight is not None and bias is not None
                assert mean is not None and var is not None
                weight.copy_(1 + 0.1 * torch.randn(c, generator=gen))
                bias.copy_(0.1 * torch.randn(c, generator=gen))
                mean.copy_(0.1 * torch.randn(c, generator=gen))
                var.copy_(1 + 0.1 * torch.rand(c, generator=gen))
    return model.eval()


def load_torch_model(folder: Path) -> Any:
    import torch

    model = build_model()
    model.load_state_dict(torch.load(folder / WEIGHTS_FILE, weights_only=True))
    return model.eval()


def export_worker(folder: Path) -> dict:
    """Build the model, save its weights and export it to ONNX in ``folder``."""
    import warnings

    import torch

    model = build_model()
    torch.save(model.state_dict(), folder / WEIGHTS_FILE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model, (torch.zeros(2, *IMAGE),), str(folder / ONNX_FILE), dynamo=False,
            opset_version=17, input_names=[INPUT_NAME], output_names=["logits"],
            dynamic_axes={INPUT_NAME: {0: "batch"}, "logits": {0: "batch"}},
        )
    params = sum(p.numel() for p in model.parameters())
    return {"params": params, "onnx_bytes": (folder / ONNX_FILE).stat().st_size}


def make_data(n: int) -> Any:
    """Return n seeded float32 images (n, 3, 32, 32) from a standard normal."""
    import numpy as np

    return np.random.default_rng(SEED).standard_normal((n, *IMAGE), dtype=np.float32)


def ort_session_options() -> Any:
    """Session options as ``layerscope.server.runtime.session.make_session`` sets them."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    return opts


def set_torch_threads() -> None:
    import torch

    torch.set_num_threads(int(os.cpu_count() or 1))


def select(folder: Path, spec: str) -> tuple[Any, Any, list[Any]]:
    """Return (ONNX model, its description, the layers ``spec`` selects)."""
    from layerscope.server.graph import describe, load_model, select_layers

    model = load_model(folder / ONNX_FILE)
    info = describe(model)
    return model, info, select_layers(info, spec)


def module_for(node_name: str, modules: dict[str, Any]) -> str:
    """Return the qualified name of the torch module an exported ONNX node comes from.

    The TorchScript exporter names nodes after the module scopes, e.g.
    ``/stage2/stage2.0/cbn2/conv/Conv`` for ``stage2.0.cbn2.conv``. A conv whose
    BatchNorm was folded into it produces what its conv+BN pair (the parent) produces.
    """
    from torch import nn

    path = ""
    for part in node_name.strip("/").split("/")[:-1]:
        path = part if not path or part.startswith(path + ".") else f"{path}.{part}"
    if path not in modules:
        raise KeyError(f"no torch module {path!r} for ONNX node {node_name!r}")
    parent, _, _ = path.rpartition(".")
    if isinstance(modules[path], nn.Conv2d) and parent and any(
        isinstance(m, nn.BatchNorm2d) for m in modules[parent].children()
    ):
        return parent
    return path


class HookCollector:
    """Forward hooks that store each layer's spatial mean into preallocated tensors."""

    def __init__(self, model: Any, targets: list[str], n: int, batch: int) -> None:
        import torch

        self.lo = 0
        modules = dict(model.named_modules())
        self.names = targets
        self.buffers: list[Any] = []
        self.handles = []
        with torch.inference_mode():  # one sample to learn the widths
            shapes: dict[str, tuple[int, ...]] = {}
            probe = [modules[t].register_forward_hook(
                lambda m, i, o, t=t: shapes.__setitem__(t, tuple(o.shape))) for t in targets]
            model(torch.zeros(1, *IMAGE))
            for h in probe:
                h.remove()
        for t in targets:
            buf = torch.empty((n, shapes[t][1]), dtype=torch.float32)
            self.buffers.append(buf)
            self.handles.append(modules[t].register_forward_hook(self._hook(buf)))

    def _hook(self, buf: Any) -> Any:
        def hook(module: Any, inputs: Any, out: Any) -> None:
            red = out.mean(dim=tuple(range(2, out.ndim))) if out.ndim > 2 else out
            buf[self.lo : self.lo + red.shape[0]].copy_(red)

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def run_hooks(model: Any, x: Any, layer_nodes: list[str], batch: int) -> list[Any]:
    """Collect the layers' spatial means for all of ``x``; return them as NumPy arrays."""
    import torch

    modules = dict(model.named_modules())
    targets = [module_for(node, modules) for node in layer_nodes]
    collector = HookCollector(model, targets, len(x), batch)
    with torch.inference_mode():
        for lo in range(0, len(x), batch):
            collector.lo = lo
            model(torch.from_numpy(x[lo : lo + batch]))
    collector.remove()
    return [b.numpy() for b in collector.buffers]


def worker(method: str, folder: Path, n: int, batch: int, spec: str) -> dict:
    """Prepare ``method``, time one run over the data, return the measurements."""
    x = make_data(n)
    out: dict[str, Any] = {}
    if method == "ort":
        import onnxruntime as ort

        model_bytes = (folder / ONNX_FILE).read_bytes()
        opts = ort_session_options()
        t0 = time.perf_counter()
        sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        setup = time.perf_counter() - t0
        for lo in range(0, n, batch):
            sess.run(None, {INPUT_NAME: x[lo : lo + batch]})
        seconds = time.perf_counter() - t0
        out["providers"] = sess.get_providers()
    elif method == "ours":
        import importlib

        import onnxruntime  # noqa: F401 - extract imports it on first use; not timed

        from layerscope.server.runtime import extract

        # the package's name ``extract`` is the function; the module is needed to wrap
        # the expose and make_session calls it makes
        extract_module: Any = importlib.import_module("layerscope.server.runtime.extract")

        model, info, layers = select(folder, spec)
        spent = {"expose": 0.0, "session": 0.0}

        def timed(fn: Any, key: str) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                s = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    spent[key] += time.perf_counter() - s

            return call

        extract_module.expose = timed(extract_module.expose, "expose")
        extract_module.make_session = timed(extract_module.make_session, "session")
        t0 = time.perf_counter()
        data = extract(model, info, layers, [{INPUT_NAME: x}], reduce="mean",
                       batch_size=batch, device="cpu")
        seconds = time.perf_counter() - t0
        setup = spent["expose"] + spent["session"]
        out.update(expose_s=spent["expose"], session_s=spent["session"], layers=len(data),
                   checksum=float(sum(float(d.train.sum()) for d in data)))
    elif method in ("hooks", "torch"):
        import torch

        set_torch_threads()
        model = load_torch_model(folder)
        if method == "hooks":
            _, _, layers = select(folder, spec)
            modules = dict(model.named_modules())
            targets = [module_for(la.node, modules) for la in layers]
            t0 = time.perf_counter()
            collector = HookCollector(model, targets, n, batch)
            setup = time.perf_counter() - t0
            with torch.inference_mode():
                for lo in range(0, n, batch):
                    collector.lo = lo
                    model(torch.from_numpy(x[lo : lo + batch]))
            seconds = time.perf_counter() - t0
            collector.remove()
            out.update(layers=len(targets),
                       checksum=float(sum(float(b.sum()) for b in collector.buffers)))
        else:
            t0 = time.perf_counter()
            with torch.inference_mode():
                for lo in range(0, n, batch):
                    model(torch.from_numpy(x[lo : lo + batch]))
            seconds = time.perf_counter() - t0
            setup = 0.0
        out["torch_threads"] = torch.get_num_threads()
    else:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    out.update(seconds=seconds, setup_s=setup)
    return out


def info_worker(folder: Path, batch: int, spec: str) -> dict:
    """Versions, thread pools, the layers, and a cross-check of ours against the hooks."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    import layerscope
    from layerscope.server.runtime import extract

    set_torch_threads()
    x = make_data(CHECK_N)
    model, info, layers = select(folder, spec)
    ours = extract(model, info, layers, [{INPUT_NAME: x}], reduce="mean",
                   batch_size=min(batch, CHECK_N), device="cpu")
    torch_model = load_torch_model(folder)
    hooks = run_hooks(torch_model, x, [la.node for la in layers], min(batch, CHECK_N))
    diff = max(float(np.abs(o.train - h).max()) for o, h in zip(ours, hooks, strict=True))
    scale = max(float(np.abs(o.train).max()) for o in ours)
    modules = dict(torch_model.named_modules())
    sess = ort.InferenceSession((folder / ONNX_FILE).read_bytes(), ort_session_options(),
                                providers=["CPUExecutionProvider"])
    sess.run(None, {INPUT_NAME: x})
    pools = thread_pools()
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "layerscope": layerscope.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop": torch.get_num_interop_threads(),
        "ort_intra": ort_session_options().intra_op_num_threads,
        "pools": pools,
        "layers": [
            {"name": la.name, "op": la.op_type, "shape": list(d.shape), "width": d.dims,
             "module": module_for(la.node, modules)}
            for la, d in zip(layers, ours, strict=True)
        ],
        "auto_count": sum(1 for la in info.layers if la.auto),
        "check_diff": diff,
        "check_scale": scale,
    }


# --------------------------------------------------------------------------- driver side
# The driver imports nothing heavy; every library loads in the children.


@dataclass
class Row:
    """The measurements of one method (best time, its setup)."""

    method: str
    seconds: float | None = None
    setup: float | None = None
    note: str = ""
    detail: dict | None = None


run_child = partial(child_result, __file__, capture_stderr=True)


def measure(method: str, common: list[str], n: int, repeats: int, timeout: float) -> Row:
    row = Row(method)
    for i in range(repeats):
        res, err = run_child(["--worker", method, *common], timeout)
        if res is None:
            row.note = err
            break
        print(f"  {method:6s} run {i + 1}/{repeats}: {res['seconds']:.3f} s "
              f"(setup {res['setup_s']:.3f} s)", file=sys.stderr, flush=True)
        if row.seconds is None or res["seconds"] < row.seconds:
            row.seconds, row.setup, row.detail = res["seconds"], res["setup_s"], res
    return row


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table_lines(rows: dict[str, Row], n: int, batch: int, markdown: bool) -> list[str]:
    base = rows["ort"].seconds if "ort" in rows else None
    head = ["method", "time s", "ratio to plain ORT", "samples/s", "setup s", "note"]
    body = []
    for method, row in rows.items():
        ratio = None if row.seconds is None or not base else row.seconds / base
        rate = None if not row.seconds else n / row.seconds
        body.append([LABELS[method], _fmt(row.seconds, ".3f"), _fmt(ratio, ".2f"),
                     _fmt(rate, ".0f"), _fmt(row.setup, ".3f"), row.note])
    lines = table(f"n={n}, batch size {batch}", head, body, markdown)
    ours = rows.get("ours")
    if ours is not None and ours.detail:
        d = ours.detail
        lines.append(f"ours: {d['layers']} layers; setup = expose {d['expose_s']:.3f} s + "
                     f"session {d['session_s']:.3f} s; inference + reduction "
                     f"{d['seconds'] - d['setup_s']:.3f} s")
    ours_t = None if ours is None else ours.seconds
    hooks_t = rows["hooks"].seconds if "hooks" in rows else None
    if ours_t and hooks_t:
        faster = "faster" if ours_t <= hooks_t else "slower"
        lines.append(f"ours vs PyTorch hooks: {ours_t / hooks_t:.2f}x the time "
                     f"({max(ours_t, hooks_t) / min(ours_t, hooks_t):.2f}x {faster})")
    return lines + [""]


def checklist(rows: dict[str, Row]) -> list[str]:
    ours = rows["ours"].seconds if "ours" in rows else None
    base = rows["ort"].seconds if "ort" in rows else None
    if ours and base:
        ratio = ours / base
        box, detail = ("[x]" if ratio <= TARGET_RATIO else "[!]"), f"{ratio:.3f}x"
    else:
        box, detail = "[ ]", "not measured"
    return ["Targets ([x] met, [!] missed, [ ] not measured):",
            f"- {box} extraction <= {TARGET_RATIO}x plain onnxruntime inference ({detail})"]


def header_lines(info: dict | None, err: str, export: dict | None, n: int, batch: int,
                 repeats: int, spec: str, markdown: bool) -> list[str]:
    items = [machine_line()]
    if info is None:
        items.append(f"library info unavailable: {err}")
    else:
        items.append(f"python {info['python']}, numpy {info['numpy']}, onnx {info['onnx']}, "
                     f"onnxruntime {info['onnxruntime']}, torch {info['torch']}, "
                     f"layerscope {info['layerscope']}")
    items.append(env_line())
    if info is not None:
        items.append(f"onnxruntime: CPUExecutionProvider, intra_op {info['ort_intra']} threads, "
                     "inter_op 1, ORT_ENABLE_ALL (make_session's options); torch: "
                     f"{info['torch_threads']} threads, {info['torch_interop']} inter-op")
        items += pool_lines(info["pools"])
    if export is not None:
        items.append(f"model: ResNet-like CNN, stem + 3 stages x 2 residual blocks "
                     f"({'/'.join(map(str, WIDTHS))} channels), BatchNorm + ReLU, global "
                     f"average pool, FC to {N_CLASSES}; {export['params']:,} parameters; "
                     f"input {'x'.join(map(str, IMAGE))}; ONNX opset 17 via "
                     f"torch.onnx.export(dynamo=False), {export['onnx_bytes'] / 1024:.0f} KiB")
    items.append(f"data: n={n} standard normal images, seed {SEED}; batch size {batch}; "
                 f"best of {repeats} runs, each in a fresh process")
    if info is not None:
        layers = info["layers"]
        items.append(f"layers: {len(layers)} extracted with reduce=\"mean\" (spec {spec!r}; "
                     f"the auto rule picks {info['auto_count']})")
        rel = info["check_diff"] / max(info["check_scale"], 1e-30)
        items.append(f"cross-check on {CHECK_N} samples: max |ours - hooks| = "
                     f"{info['check_diff']:.2e} over all layers (max |value| "
                     f"{info['check_scale']:.2f}, relative {rel:.1e})")
    lines = (["## Extraction benchmark", ""] + [f"- {s}" for s in items] + [""]
             if markdown else items + [""])
    if info is not None:
        lines.append("Layers extracted (ONNX tensor, op, shape per sample -> width; "
                     "torch module hooked):")
        if markdown:
            lines.append("")
        for i, la in enumerate(info["layers"], 1):
            shape = "x".join(map(str, la["shape"]))
            text = (f"{la['name']} ({la['op']}, {shape} -> {la['width']}; "
                    f"{la['module']})")
            lines.append(f"{i}. {text}" if markdown else f"  {i:2d}. {text}")
        lines.append("")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"smoke test: n={QUICK_N}")
    parser.add_argument("--n", type=int, default=None,
                        help=f"number of images (default {DEFAULT_N})")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                        help=f"batch size for every method (default {DEFAULT_BATCH})")
    parser.add_argument("--layers", default="auto",
                        help="layer spec for select_layers (default: auto)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per method, best time kept (default 3)")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds before one worker is stopped (default 600)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument("--worker", nargs=5, metavar=("METHOD", "DIR", "N", "BATCH", "SPEC"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--info-worker", nargs=3, metavar=("DIR", "BATCH", "SPEC"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--export-worker", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        method, folder, n, batch, spec = args.worker
        res = worker(method, Path(folder), int(n), int(batch), spec)
        emit(res)
        return 0
    if args.info_worker:
        folder, batch, spec = args.info_worker
        emit(info_worker(Path(folder), int(batch), spec))
        return 0
    if args.export_worker:
        emit(export_worker(Path(args.export_worker)))
        return 0

    n = args.n or (QUICK_N if args.quick else DEFAULT_N)
    batch = max(1, args.batch_size)
    repeats = max(1, args.repeats)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="layerscope-bench-") as tmp:
        export, err = run_child(["--export-worker", tmp], args.timeout)
        if export is None:
            print(f"model export failed: {err}", file=sys.stderr)
            return 1
        info, err = run_child(["--info-worker", tmp, str(batch), args.layers], args.timeout)
        out = header_lines(info, err, export, n, batch, repeats, args.layers, args.markdown)
        if not args.markdown:
            print("\n".join(out), flush=True)
            out = []
        common = [tmp, str(n), str(batch), args.layers]
        rows = {m: measure(m, common, n, repeats, args.timeout) for m in METHODS}
    out += table_lines(rows, n, batch, args.markdown)
    out += checklist(rows) + ["", f"total benchmark time: {time.perf_counter() - started:.0f} s"]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
