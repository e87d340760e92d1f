"""Keras/TensorFlow and JAX exporters: parity with the framework's own outputs, names, a
dynamic batch axis, the file forms (.keras in safe mode, SavedModel folders), and the
exported models analysed layer by layer.

TensorFlow and JAX are imported inside the fixtures, so collecting this module is cheap.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_missing = [m for m in ("tensorflow", "tf2onnx", "keras", "jax", "flax")
            if importlib.util.find_spec(m) is None]  # found, not imported
if _missing:
    pytest.skip(f"needs {', '.join(_missing)}", allow_module_level=True)

from layerscope.exporters import export, framework_of  # noqa: E402
from layerscope.server.analysis import analyze_layers  # noqa: E402
from layerscope.server.graph import describe  # noqa: E402


def run(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def batch_dims(path: Path) -> list[str]:
    """The first axis of every input and output: a symbol when the batch is dynamic."""
    g = onnx.load(str(path)).graph
    return [vi.type.tensor_type.shape.dim[0].dim_param or "fixed" for vi in
            [*g.input, *g.output]]


def auto_layers(path: Path) -> list[str]:
    return [la.name for la in describe(onnx.load(str(path))).layers if la.auto]


def analysed(path: Path, feeds: dict[str, np.ndarray], y: np.ndarray) -> list[Any]:
    return analyze_layers(path, feeds, labels=y).layers


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x[:600] / 16.0).astype(np.float32), y[:600].astype(np.int64)


@pytest.fixture(scope="module")
def tf() -> Any:
    import tensorflow

    return tensorflow


@pytest.fixture(scope="module")
def keras_mlp(tf: Any, digits: tuple[np.ndarray, np.ndarray]) -> Any:
    import keras

    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64,), name="pixels"),
        keras.layers.Dense(32, activation="relu", name="hidden1"),
        keras.layers.Dense(16, activation="relu", name="hidden2"),
        keras.layers.Dense(10, name="logits"),
    ])
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=40, batch_size=200, verbose=0)
    return model


@pytest.fixture(scope="module")
def keras_cnn(tf: Any, digits: tuple[np.ndarray, np.ndarray]) -> Any:
    import keras

    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(32, activation="relu", name="fc"),
        keras.layers.Dense(10, activation="softmax", name="probs"),
    ])
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x.reshape(-1, 8, 8, 1), y, epochs=5, batch_size=100, verbose=0)
    return model


# -- Keras ----------------------------------------------------------------------------
def test_keras_mlp_export_matches_predict_with_a_dynamic_batch(
        keras_mlp: Any, digits: Any, tmp_path: Path) -> None:
    x, y = digits
    assert framework_of(keras_mlp) == "keras"
    report = export(keras_mlp, x[:64], tmp_path / "mlp.onnx")
    assert report.framework == "keras"
    assert report.inputs == ["pixels"] and report.outputs == ["logits"]
    assert report.opset <= 17 and report.max_abs < 1e-4
    assert batch_dims(tmp_path / "mlp.onnx") == ["batch", "batch"]
    want = keras_mlp.predict(x[:37], verbose=0)  # another batch size than the sample's
    got = run(tmp_path / "mlp.onnx", {"pixels": x[:37]})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    # The hidden Dense+Relu outputs are layers, and auto picks them.
    auto = auto_layers(tmp_path / "mlp.onnx")
    relus = [n for n in auto if "Relu" in n]
    assert [n.split("/")[1].split("_")[0] for n in relus] == ["hidden1", "hidden2"]
    rows = analysed(tmp_path / "mlp.onnx", {"pixels": x}, y)
    assert [r.kind for r in rows][0] == "input"
    assert [r.name for r in rows if r.kind == "layer"][:2] == relus
    si = {r.name: r.values["si"] for r in rows}
    assert max(si[relus[-1]], si["logits"]) > si["pixels"]


def test_keras_cnn_keeps_convolutions_as_layers(keras_cnn: Any, digits: Any,
                                                tmp_path: Path) -> None:
    x, y = digits
    images = x.reshape(-1, 8, 8, 1)
    report = export(keras_cnn, images[:32], tmp_path / "cnn.onnx", opset=15)
    assert report.opset == 15 and report.inputs == ["image"] and report.outputs == ["probs"]
    want = np.asarray(keras_cnn(images[:45], training=False))
    got = run(tmp_path / "cnn.onnx", {"image": images[:45]})["probs"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    info = describe(onnx.load(str(tmp_path / "cnn.onnx")))
    auto = [la for la in info.layers if la.auto]
    assert [la.op_type for la in auto][:2] == ["Relu", "MaxPool"]  # conv1 after its relu
    assert any("conv2" in la.name and la.op_type == "Relu" for la in auto)
    assert any("fc" in la.name and la.op_type == "Relu" for la in auto)
    rows = analysed(tmp_path / "cnn.onnx", {"image": images}, y)
    assert len([r for r in rows if r.kind == "layer"]) >= 4
    assert all(r.error is None for r in rows)


def test_keras_functional_model_names_inputs_and_outputs(tf: Any, tmp_path: Path) -> None:
    import keras

    a, b = keras.Input((4,), name="left"), keras.Input((3,), name="right")
    h = keras.layers.Dense(8, activation="tanh", name="mix")(
        keras.layers.Concatenate()([a, b]))
    model = keras.Model({"left": a, "right": b},
                        {"score": keras.layers.Dense(1, name="head_score")(h),
                         "label": keras.layers.Dense(3, name="head_label")(h)})
    rng = np.random.default_rng(0)
    sample = {"right": rng.random((10, 3), dtype=np.float32),
              "left": rng.random((10, 4), dtype=np.float32)}
    report = export(model, sample, tmp_path / "fn.onnx")
    assert sorted(report.inputs) == ["left", "right"]
    assert sorted(report.outputs) == ["label", "score"]
    feeds = {k: v[:7] for k, v in sample.items()}
    got = run(tmp_path / "fn.onnx", feeds)
    want = model(feeds, training=False)
    for name in ("label", "score"):
        np.testing.assert_allclose(got[name], np.asarray(want[name]), rtol=1e-5, atol=1e-6)


def test_keras_options_are_checked(keras_mlp: Any, digits: Any, tmp_path: Path) -> None:
    from layerscope.exporters.keras import export_keras

    x, _ = digits
    with pytest.raises(ValueError, match="opset must be between"):
        export_keras(keras_mlp, x[:8], tmp_path / "a.onnx", opset=18)
    with pytest.raises(ValueError, match="not a valid TensorFlow name"):
        export_keras(keras_mlp, x[:8], tmp_path / "a.onnx", input_names=["two words"])
    with pytest.raises(ValueError, match="output_names"):
        export_keras(keras_mlp, x[:8], tmp_path / "a.onnx", output_names=["a", "b"])
    report = export_keras(keras_mlp, x[:8], tmp_path / "a.onnx", input_names=["features"],
                          output_names=["scores"])
    assert report.inputs == ["features"] and report.outputs == ["scores"]
    assert not (tmp_path / "b.onnx").exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras' own np.array(copy=...)
def test_keras_file_round_trip_and_safe_mode(keras_mlp: Any, digits: Any, tmp_path: Path) -> None:
    import keras

    from layerscope.exporters.keras import export_keras_file

    x, _ = digits
    keras_mlp.save(tmp_path / "mlp.keras")
    report = export_keras_file(tmp_path / "mlp.keras", x[:16], tmp_path / "mlp.onnx")
    assert report.inputs == ["pixels"] and report.max_abs < 1e-4
    want = keras_mlp.predict(x[:23], verbose=0)  # the in-memory model, not the reloaded one
    np.testing.assert_allclose(run(tmp_path / "mlp.onnx", {"pixels": x[:23]})["logits"], want,
                               rtol=1e-4, atol=1e-5)

    unsafe = keras.Sequential([keras.Input((64,)), keras.layers.Lambda(lambda t: t * 2.0),
                               keras.layers.Dense(3)])
    unsafe.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="safe mode"):
        export_keras_file(tmp_path / "lambda.keras", x[:4], tmp_path / "no.onnx")
    assert not (tmp_path / "no.onnx").exists()
    (tmp_path / "model.h5").write_bytes(b"not read")
    with pytest.raises(ValueError, match=r"\.keras files"):
        export_keras_file(tmp_path / "model.h5", x[:4], tmp_path / "no.onnx")


# -- TensorFlow -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tf_module(tf: Any) -> Any:
    class Affine(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            rng = np.random.default_rng(1)
            self.w = tf.Variable(rng.normal(size=(64, 16)).astype(np.float32) * 0.2)
            self.b = tf.Variable(np.zeros(16, np.float32))
            self.v = tf.Variable(rng.normal(size=(16, 10)).astype(np.float32) * 0.2)

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
        def __call__(self, x: Any) -> Any:
            return tf.matmul(tf.nn.relu(tf.matmul(x, self.w) + self.b), self.v)

    return Affine()


def test_tf_module_export(tf_module: Any, tf: Any, digits: Any, tmp_path: Path) -> None:
    x, y = digits
    assert framework_of(tf_module) == "tf"
    report = export(tf_module, {"pixels": x[:32]}, tmp_path / "mod.onnx")
    assert report.framework == "tf" and report.inputs == ["pixels"]
    assert report.outputs == ["output"] and report.max_abs < 1e-4
    want = tf_module(tf.constant(x[:50])).numpy()
    got = run(tmp_path / "mod.onnx", {"pixels": x[:50]})["output"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert batch_dims(tmp_path / "mod.onnx") == ["batch", "batch"]
    auto = auto_layers(tmp_path / "mod.onnx")
    assert any(n.endswith("Relu:0") for n in auto)


def test_saved_model_folder_round_trip(tf_module: Any, tf: Any, digits: Any,
                                       tmp_path: Path) -> None:
    from layerscope.exporters.keras import export_saved_model, export_tf

    x, y = digits
    tf.saved_model.save(tf_module, str(tmp_path / "sm"))
    report = export_saved_model(tmp_path / "sm", x[:32], tmp_path / "sm.onnx")
    assert report.inputs == ["x"] and report.outputs == ["output_0"]  # serving signature
    want = tf_module(tf.constant(x[:41])).numpy()
    np.testing.assert_allclose(run(tmp_path / "sm.onnx", {"x": x[:41]})["output_0"], want,
                               rtol=1e-4, atol=1e-5)
    rows = analysed(tmp_path / "sm.onnx", {"x": x}, y)
    assert [r.kind for r in rows][0] == "input" and any(r.kind == "layer" for r in rows)

    loaded = tf.saved_model.load(str(tmp_path / "sm"))  # its __call__, not the signature
    report = export_tf(loaded, x[:8], tmp_path / "call.onnx", signature=None)
    assert report.outputs == ["output"] and report.max_abs < 1e-4

    with pytest.raises(ValueError, match="not a TensorFlow SavedModel"):
        export_saved_model(tmp_path, x[:4], tmp_path / "no.onnx")


def test_tf_graphs_that_touch_files_are_refused(tf: Any, tmp_path: Path) -> None:
    from layerscope.exporters.keras import export_tf

    target = tmp_path / "written.txt"

    @tf.function
    def leaky(x: Any) -> Any:
        tf.io.write_file(str(target), tf.strings.as_string(tf.reduce_sum(x)))
        return x * 2.0

    with pytest.raises(ValueError, match="WriteFile"):
        export_tf(leaky, np.ones((2, 3), np.float32), tmp_path / "no.onnx")
    assert not (tmp_path / "no.onnx").exists()
    assert not target.exists()  # refused before it ran


# -- JAX ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def jax_mlp(digits: tuple[np.ndarray, np.ndarray]) -> tuple[Any, dict[str, Any]]:
    import jax
    import jax.numpy as jnp

    x, y = digits
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)

    def dense(key: Any, n_in: int, n_out: int) -> dict[str, Any]:
        return {"kernel": jax.random.normal(key, (n_in, n_out)) * jnp.sqrt(2.0 / n_in),
                "bias": jnp.zeros(n_out)}

    params = {"hidden1": dense(k1, 64, 32), "hidden2": dense(k2, 32, 16),
              "logits": dense(k3, 16, 10)}

    def apply(p: dict[str, Any], inputs: Any) -> Any:
        h = inputs
        for name in ("hidden1", "hidden2"):
            h = jax.nn.relu(h @ p[name]["kernel"] + p[name]["bias"])
        return h @ p["logits"]["kernel"] + p["logits"]["bias"]

    def loss(p: dict[str, Any]) -> Any:
        logp = jax.nn.log_softmax(apply(p, x))
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    @jax.jit
    def step(p: dict[str, Any]) -> dict[str, Any]:
        grads = jax.grad(loss)(p)
        return jax.tree_util.tree_map(lambda w, g: w - 0.5 * g, p, grads)

    for _ in range(1000):
        params = step(params)
    return apply, params


def test_jax_pair_export_matches_jax_with_a_dynamic_batch(
        jax_mlp: Any, digits: Any, tmp_path: Path) -> None:
    import jax.numpy as jnp

    x, y = digits
    apply, params = jax_mlp
    assert framework_of((apply, params)) == "jax"
    report = export((apply, params), {"pixels": x[:64]}, tmp_path / "jax.onnx")
    assert report.framework == "jax" and report.inputs == ["pixels"]
    assert report.outputs == ["output"] and report.opset <= 17 and report.max_abs < 1e-4
    assert batch_dims(tmp_path / "jax.onnx") == ["batch", "batch"]
    want = np.asarray(apply(params, jnp.asarray(x[:29])))
    got = run(tmp_path / "jax.onnx", {"pixels": x[:29]})["output"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    model = onnx.load(str(tmp_path / "jax.onnx"))
    assert {"hidden1/kernel", "hidden2/bias", "logits/kernel"} <= {
        t.name for t in model.graph.initializer}

    auto = auto_layers(tmp_path / "jax.onnx")
    ops = {la.name: la.op_type for la in describe(model).layers}
    assert [ops[n] for n in auto] == ["Relu", "Relu", "Add"]
    rows = analysed(tmp_path / "jax.onnx", {"pixels": x}, y)
    si = {r.name: r.values["si"] for r in rows}
    assert [r.name for r in rows if r.kind == "layer"][:2] == auto[:2]
    assert max(si[auto[1]], si["output"]) > si["pixels"]


def test_jax_nnx_cnn_has_conv_layers_without_transposes(digits: Any, tmp_path: Path) -> None:
    import jax
    from flax import nnx

    class CNN(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.conv1 = nnx.Conv(1, 8, (3, 3), rngs=rngs)
            self.conv2 = nnx.Conv(8, 16, (3, 3), padding="VALID", rngs=rngs)
            self.norm = nnx.BatchNorm(16, rngs=rngs)
            self.drop = nnx.Dropout(0.2, rngs=rngs)
            self.fc = nnx.Linear(16 * 2 * 2, 10, rngs=rngs)

        def __call__(self, x: Any) -> Any:
            x = nnx.max_pool(nnx.relu(self.conv1(x)), (2, 2), strides=(2, 2))
            x = self.drop(nnx.relu(self.norm(self.conv2(x))))
            return jax.nn.log_softmax(self.fc(x.reshape(x.shape[0], -1)))

    x, y = digits
    images = x.reshape(-1, 8, 8, 1)
    model = CNN(nnx.Rngs(0))
    with pytest.raises(ValueError, match="random numbers"):  # dropout in training mode
        export(model, images[:8], tmp_path / "train.onnx")
    model.eval()
    assert framework_of(model) == "jax"
    report = export(model, {"image": images[:32]}, tmp_path / "cnn.onnx")
    assert report.max_abs < 1e-4
    got = run(tmp_path / "cnn.onnx", {"image": images[:19]})["output"]
    np.testing.assert_allclose(got, np.asarray(model(images[:19])), rtol=1e-4, atol=1e-5)
    onx = onnx.load(str(tmp_path / "cnn.onnx"))
    assert {"conv1/kernel", "conv2/bias", "fc/kernel"} <= {t.name for t in onx.graph.initializer}
    info = describe(onx)
    auto = [la for la in info.layers if la.auto]
    assert [la.op_type for la in auto][:3] == ["Relu", "MaxPool", "Relu"]
    assert all(la.channels_first for la in auto[:3])
    rows = analysed(tmp_path / "cnn.onnx", {"image": images}, y)
    assert all(r.error is None for r in rows) and len(rows) >= 5


def test_jax_plain_function_with_token_ids_and_dict_outputs(tmp_path: Path) -> None:
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    table = rng.normal(size=(20, 6)).astype(np.float32)
    proj = rng.normal(size=(6, 3)).astype(np.float32)

    def encode(ids: Any, mask: Any) -> dict[str, Any]:
        e = jnp.asarray(table)[ids] * mask[..., None]          # lookup: (b, L, 6)
        scores = jnp.einsum("bld,bmd->blm", e, e) / 6.0       # batched matmul
        att = jax.nn.softmax(scores, axis=-1) @ e
        pooled = att.mean(axis=1)
        return {"pooled": pooled, "first": e[:, 0], "proj": jnp.tanh(pooled @ proj)}

    ids = rng.integers(0, 20, (12, 5))                        # int64; JAX computes in int32
    mask = (rng.random((12, 5)) > 0.2).astype(np.float32)
    report = export(encode, {"ids": ids, "mask": mask}, tmp_path / "enc.onnx",
                    framework="jax")
    assert report.inputs == ["ids", "mask"]
    assert sorted(report.outputs) == ["first", "pooled", "proj"]
    got = run(tmp_path / "enc.onnx", {"ids": ids[:4], "mask": mask[:4]})
    want = encode(jnp.asarray(ids[:4]), jnp.asarray(mask[:4]))
    for name in ("first", "pooled", "proj"):
        np.testing.assert_allclose(got[name], np.asarray(want[name]), rtol=1e-5, atol=1e-6)


def test_jax_limits_are_named(tmp_path: Path) -> None:
    import jax

    from layerscope.exporters.jax import UnsupportedJax, export_jax

    x = np.ones((4, 3), np.float32)
    with pytest.raises(UnsupportedJax, match="'scan'"):
        export_jax(lambda v: jax.lax.fori_loop(0, 3, lambda i, a: a * 2.0, v), x,
                   tmp_path / "loop.onnx")
    with pytest.raises(ValueError, match="symbolic batch size"):
        export_jax(lambda v: v.reshape(4, -1), x, tmp_path / "fixed.onnx")
    with pytest.raises(ValueError, match="opset must be between"):
        export_jax(lambda v: v * 2.0, x, tmp_path / "o.onnx", opset=11)
    with pytest.raises(ValueError, match="takes a pair"):
        export_jax(object(), x, tmp_path / "o.onnx")
    assert not any(tmp_path.iterdir())


def test_keras_and_jax_models_are_analysed_through_a_real_server(
        keras_mlp: Any, jax_mlp: Any, digits: Any, tmp_path: Path) -> None:
    """client.upload_model(model, sample_inputs=...) exports in the client and uploads; the
    server's layer-wise analysis finds the hidden layers and the input's si is brute force."""
    from layerscope.client.client import Client

    x, y = digits
    d = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    input_si = float(np.mean(y[np.argmin(d, axis=1)] == y))
    with Client.local(tmp_path / "data") as client:
        for model in (keras_mlp, jax_mlp):
            stored = client.upload_model(model, sample_inputs=x[:20])
            assert sum(la.auto for la in stored.layers) >= 2
            rows = client.analyze_layers(stored, {stored.inputs[0].name: x}, labels=y).layers
            assert rows[0]["kind"] == "input" and rows[0]["si"] == pytest.approx(input_si, abs=0)
            assert all(0.0 <= r["si"] <= 1.0 for r in rows)
            assert max(r["si"] for r in rows[1:]) > rows[0]["si"]
