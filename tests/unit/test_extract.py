"""layerscope.server.runtime: exposed activations equal the framework's own, reductions
against NumPy, batching, inputs that do not fit."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import models as M

from layerscope.server.graph import describe, load_model, select_layers
from layerscope.server.metrics.backend import to_host
from layerscope.server.runtime import InputError, Reduction, extract, model_feeds

ATOL, RTOL = 1e-5, 1e-4


def _run(path, layers, sets, **kw):
    proto = load_model(path)
    info = describe(proto)
    chosen = select_layers(info, layers)
    out = {}
    for d in extract(proto, info, chosen, sets, **kw):
        # On a GPU the accumulators are device arrays: compared on the host.
        d.train = to_host(d.train)
        d.test = None if d.test is None else to_host(d.test)
        out[d.name] = d
    return out


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1)


# ---------------------------------------------------------------------------------------
# Exposed activations equal what the model computes inside
# ---------------------------------------------------------------------------------------


def test_cnn_flatten_equals_torch_forward_hooks(cnn):
    train, test = cnn.train["image"][:120], cnn.test["image"][:50]
    got = _run(cnn.path, "all", [{"image": train}, {"image": test}], reduce="flatten")
    modules = {m: getattr(cnn.model, m) for _, _, m in M.CNN_LAYERS}
    want_train = M.torch_outputs(cnn.model, modules, [train])
    want_test = M.torch_outputs(cnn.model, modules, [test])
    assert list(got) == [name for name, _, _ in M.CNN_LAYERS]
    for name, op, module in M.CNN_LAYERS:
        d = got[name]
        assert d.op_type == op
        assert d.shape == want_train[module].shape[1:]
        assert d.reduction == Reduction("flatten")
        assert d.train.dtype == np.float32 and d.test.dtype == np.float32
        np.testing.assert_allclose(d.train, _flat(want_train[module]), rtol=RTOL, atol=ATOL,
                                   err_msg=name)
        np.testing.assert_allclose(d.test, _flat(want_test[module]), rtol=RTOL, atol=ATOL,
                                   err_msg=name)


def test_sklearn_hidden_layers_equal_numpy_relu_of_the_weights(sklearn_mlp):
    clf, x = sklearn_mlp.model, sklearn_mlp.train["features"]
    got = _run(sklearn_mlp.path, "op:Relu", [{"features": x}], reduce="flatten")
    hidden = M.mlp_hidden(clf, x)
    assert [d.dims for d in got.values()] == [h.shape[1] for h in hidden] == [32, 16]
    for d, h in zip(got.values(), hidden, strict=True):
        np.testing.assert_allclose(d.train, h, rtol=RTOL, atol=ATOL, err_msg=d.name)


def test_sklearn_probabilities_equal_predict_proba(sklearn_mlp):
    clf, x = sklearn_mlp.model, sklearn_mlp.test["features"]
    got = _run(sklearn_mlp.path, "probabilities", [{"features": x}], reduce="flatten")
    np.testing.assert_allclose(got["probabilities"].train, clf.predict_proba(x), atol=ATOL)


def test_transformer_sequence_layers_equal_torch_forward_hooks(transformer):
    net, ids = transformer.model, transformer.train["tokens"][:64]
    names = {"/embed/Gather_output_0": "embed", "/q/Add_output_0": "q",
             "/ln1/LayerNormalization_output_0": "ln1", "/ff_act/Relu_output_0": "ff_act",
             "/ln2/LayerNormalization_output_0": "ln2", "logits": "head"}
    got = _run(transformer.path, list(names), [{"tokens": ids}], reduce="flatten")
    want = M.torch_outputs(net, {m: getattr(net, m) for m in names.values()}, [ids])
    for name, module in names.items():
        assert got[name].shape == want[module].shape[1:], name
        np.testing.assert_allclose(got[name].train, _flat(want[module]), rtol=RTOL, atol=ATOL,
                                   err_msg=name)


def test_resnet_residual_merges_equal_torch_block_outputs(resnet):
    net, x = resnet.model, resnet.train["image"][:80]
    names = {"/block1/post/Relu_output_0": "block1", "/block2/Add_output_0": "block2",
             "/gap/GlobalAveragePool_output_0": "gap"}
    got = _run(resnet.path, list(names), [{"image": x}], reduce="flatten")
    want = M.torch_outputs(net, {m: getattr(net, m) for m in names.values()}, [x])
    for name, module in names.items():
        np.testing.assert_allclose(got[name].train, _flat(want[module]), rtol=RTOL, atol=ATOL,
                                   err_msg=name)


def test_two_input_model_concat_equals_torch(two_inputs):
    net, data = two_inputs.model, {k: v[:60] for k, v in two_inputs.train.items()}
    got = _run(two_inputs.path, ["/Concat_output_0", "/fc_act/Tanh_output_0"], [data],
               reduce="flatten")
    want = M.torch_outputs(net, {"flatten": net.flatten, "fc_act": net.fc_act},
                           [data["image"], data["extra"]])
    concat = np.concatenate([want["flatten"], data["extra"]], axis=1)
    np.testing.assert_allclose(got["/Concat_output_0"].train, concat, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got["/fc_act/Tanh_output_0"].train, want["fc_act"], rtol=RTOL,
                               atol=ATOL)


def test_external_data_model_computes_what_the_inline_one_does(external_model, resnet):
    x = resnet.train["image"][:40]
    a = _run(external_model, "auto", [{"image": x}], reduce="flatten")
    b = _run(resnet.path, "auto", [{"image": x}], reduce="flatten")
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_array_equal(a[name].train, b[name].train)


# ---------------------------------------------------------------------------------------
# Reductions against NumPy
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn_raw(cnn):
    x = cnn.train["image"][:100]
    mods = {m: getattr(cnn.model, m) for m in ("relu1", "pool", "relu3")}
    return x, M.torch_outputs(cnn.model, mods, [x])


@pytest.fixture(scope="module")
def transformer_raw(transformer):
    ids = transformer.train["tokens"][:100]
    net = transformer.model
    return ids, M.torch_outputs(net, {"ln1": net.ln1, "ln2": net.ln2}, [ids])


def test_mean_over_spatial_axes_for_nchw(cnn, cnn_raw):
    x, want = cnn_raw
    got = _run(cnn.path, ["/relu1/Relu_output_0", "/pool/MaxPool_output_0"], [{"image": x}],
               reduce="mean")
    np.testing.assert_allclose(got["/relu1/Relu_output_0"].train,
                               want["relu1"].mean(axis=(2, 3)), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got["/pool/MaxPool_output_0"].train,
                               want["pool"].mean(axis=(2, 3)), rtol=RTOL, atol=ATOL)
    assert got["/relu1/Relu_output_0"].dims == 16
    assert got["/relu1/Relu_output_0"].reduction.describe() == "mean"


def test_mean_reports_the_activation_shape_not_the_reduced_one(cnn, cnn_raw):
    x, _ = cnn_raw
    d = _run(cnn.path, "/relu1/Relu_output_0", [{"image": x}], reduce="mean")
    assert d["/relu1/Relu_output_0"].shape == (16, 8, 8)
    assert d["/relu1/Relu_output_0"].train.shape == (len(x), 16)


def test_mean_in_an_opset_18_model(cnn_opset18, cnn_raw):
    x, want = cnn_raw
    got = _run(cnn_opset18, ["/relu1/Relu_output_0", "/pool/MaxPool_output_0"],
               [{"image": x}], reduce="mean")
    np.testing.assert_allclose(got["/relu1/Relu_output_0"].train,
                               want["relu1"].mean(axis=(2, 3)), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got["/pool/MaxPool_output_0"].train,
                               want["pool"].mean(axis=(2, 3)), rtol=RTOL, atol=ATOL)


def test_mean_with_a_test_set_and_odd_batches(cnn, cnn_raw):
    x, _ = cnn_raw
    got = _run(cnn.path, "/relu2/Relu_output_0", [{"image": x[:61]}, {"image": x[61:]}],
               reduce="mean", batch_size=9)["/relu2/Relu_output_0"]
    mean = np.concatenate([got.train, got.test])
    want_mean = M.torch_outputs(cnn.model, {"relu2": cnn.model.relu2}, [x])["relu2"]
    np.testing.assert_allclose(mean, want_mean.mean(axis=(2, 3)), rtol=RTOL, atol=ATOL)


def test_mean_of_a_vector_layer_is_the_vector(cnn, cnn_raw):
    x, want = cnn_raw
    got = _run(cnn.path, "/relu3/Relu_output_0", [{"image": x}], reduce="mean")
    np.testing.assert_allclose(got["/relu3/Relu_output_0"].train, want["relu3"], rtol=RTOL,
                               atol=ATOL)


def test_mean_over_the_sequence_axis_for_n_t_f(transformer, transformer_raw):
    ids, want = transformer_raw
    got = _run(transformer.path, ["/ln1/LayerNormalization_output_0",
                                  "/ln2/LayerNormalization_output_0"], [{"tokens": ids}],
               reduce="mean")
    for name, module in (("/ln1/LayerNormalization_output_0", "ln1"),
                         ("/ln2/LayerNormalization_output_0", "ln2")):
        assert got[name].dims == 16
        np.testing.assert_allclose(got[name].train, want[module].mean(axis=1), rtol=RTOL,
                                   atol=ATOL, err_msg=name)


def test_first_token_takes_position_zero(transformer, transformer_raw):
    ids, want = transformer_raw
    got = _run(transformer.path, "/ln2/LayerNormalization_output_0", [{"tokens": ids}],
               reduce="first_token")
    d = got["/ln2/LayerNormalization_output_0"]
    assert d.reduction.describe() == "first_token"
    np.testing.assert_allclose(d.train, want["ln2"][:, 0, :], rtol=RTOL, atol=ATOL)


def test_first_token_of_a_vector_layer_takes_it_as_it_is_and_says_so(cnn, cnn_raw):
    x, want = cnn_raw
    got = _run(cnn.path, "/relu3/Relu_output_0", [{"image": x}], reduce="first_token")
    layer = got["/relu3/Relu_output_0"]
    assert layer.reduction == Reduction("flatten")
    assert any("first_token" in n and "no token axis" in n for n in layer.notes)
    np.testing.assert_allclose(layer.train, _flat(want["relu3"]), rtol=RTOL, atol=ATOL)


def test_reduction_per_layer_mapping(cnn, cnn_raw):
    x, want = cnn_raw
    got = _run(cnn.path, ["/relu1/Relu_output_0", "/pool/MaxPool_output_0"], [{"image": x}],
               reduce={"/relu1/Relu_output_0": "mean"})
    assert got["/relu1/Relu_output_0"].reduction == Reduction("mean")
    assert got["/pool/MaxPool_output_0"].reduction == Reduction("flatten")  # auto, small
    np.testing.assert_allclose(got["/pool/MaxPool_output_0"].train, _flat(want["pool"]),
                               rtol=RTOL, atol=ATOL)


def test_auto_projects_a_layer_over_the_memory_budget_and_says_so(cnn):
    x = cnn.train["image"][:200]
    got = _run(cnn.path, ["/relu1/Relu_output_0", "/relu3/Relu_output_0"], [{"image": x}],
               reduce="auto", memory_budget_mb=0.5)
    big, small = got["/relu1/Relu_output_0"], got["/relu3/Relu_output_0"]
    # 200 x 1024 float32 = 800 KiB > the layer's share (0.5 MiB / 2 / 2 layers)
    assert big.reduction.kind == "project"
    assert 1 <= big.dims < 1024
    assert any("project" in n for n in big.notes)
    assert small.reduction.kind == "flatten" and small.dims == 64 and not small.notes


def test_project_is_seeded_and_deterministic(cnn):
    x = {"image": cnn.train["image"][:50]}
    a = _run(cnn.path, "/relu1/Relu_output_0", [x], reduce="project:32")
    b = _run(cnn.path, "/relu1/Relu_output_0", [x], reduce="project:32")
    c = _run(cnn.path, "/relu1/Relu_output_0", [x], reduce="project:32", projection_seed=1)
    name = "/relu1/Relu_output_0"
    assert a[name].dims == 32 and a[name].reduction.describe() == "project:32"
    np.testing.assert_array_equal(a[name].train, b[name].train)
    assert not np.allclose(a[name].train, c[name].train)


def test_project_uses_the_same_projection_for_train_and_test(cnn):
    x = cnn.train["image"][:30]
    test = np.concatenate([x[10:], x[:10]])
    got = _run(cnn.path, "/relu2/Relu_output_0", [{"image": x}, {"image": test}],
               reduce="project:48")["/relu2/Relu_output_0"]
    np.testing.assert_allclose(got.test, np.concatenate([got.train[10:], got.train[:10]]),
                               rtol=1e-6, atol=1e-6)


def test_project_preserves_squared_distances_on_average(cnn):
    x = cnn.train["image"][:200]
    name, width = "/relu2/Relu_output_0", 256
    flat = _run(cnn.path, name, [{"image": x}], reduce="flatten")[name].train
    proj = _run(cnn.path, name, [{"image": x}], reduce=f"project:{width}")[name]
    assert proj.reduction.distortion() == pytest.approx(np.sqrt(2 / width))
    i, j = np.triu_indices(len(x), 1)
    a, b = flat.astype(np.float64), proj.train.astype(np.float64)
    before = ((a[i] - a[j]) ** 2).sum(axis=1)
    after = ((b[i] - b[j]) ** 2).sum(axis=1)
    ratio = after / before
    tol = np.sqrt(2 / width)
    assert abs(ratio.mean() - 1.0) < tol
    assert ratio.std() < 1.5 * tol


def test_unknown_reduction_is_a_value_error(cnn):
    with pytest.raises(ValueError, match="reduce must be one of"):
        _run(cnn.path, "logits", [{"image": cnn.train["image"][:4]}], reduce="median")
    with pytest.raises(ValueError, match="project:N"):
        _run(cnn.path, "logits", [{"image": cnn.train["image"][:4]}], reduce="project:0")


# ---------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------


def test_batch_size_that_does_not_divide_n(cnn):
    x = {"image": cnn.train["image"][:101]}
    t = {"image": cnn.test["image"][:23]}
    one = _run(cnn.path, "auto", [x, t], reduce="flatten", batch_size=7)
    ref = _run(cnn.path, "auto", [x, t], reduce="flatten", batch_size=1000)
    for name in ref:
        np.testing.assert_allclose(one[name].train, ref[name].train, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(one[name].test, ref[name].test, rtol=1e-5, atol=1e-6)


def test_progress_counts_the_batches(cnn):
    calls = []
    _run(cnn.path, "logits", [{"image": cnn.train["image"][:50]},
                              {"image": cnn.test["image"][:11]}],
         batch_size=20, progress=lambda stage, done, total: calls.append((stage, done, total)))
    assert calls == [("extract:train", 1, 3), ("extract:train", 2, 3), ("extract:train", 3, 3),
                     ("extract:test", 1, 1)]


def test_fixed_batch_model_pads_the_last_batch(cnn, cnn_fixed):
    x = {"image": cnn.train["image"][:50]}  # 50 = 3 x 16 + 2
    fixed = _run(cnn_fixed, "auto", [x], reduce="flatten")
    dynamic = _run(cnn.path, "auto", [x], reduce="flatten")
    assert list(fixed) == list(dynamic)
    for name in fixed:
        assert fixed[name].train.shape == (50, dynamic[name].dims)
        np.testing.assert_allclose(fixed[name].train, dynamic[name].train, rtol=1e-5,
                                   atol=1e-6)


def test_fixed_batch_model_with_mean_reduction(cnn, cnn_fixed):
    x = {"image": cnn.train["image"][:40]}
    fixed = _run(cnn_fixed, "/relu1/Relu_output_0", [x], reduce="mean")
    dynamic = _run(cnn.path, "/relu1/Relu_output_0", [x], reduce="mean")
    np.testing.assert_allclose(fixed["/relu1/Relu_output_0"].train,
                               dynamic["/relu1/Relu_output_0"].train, rtol=1e-5, atol=1e-6)


def test_fixed_batch_model_with_fewer_samples_than_its_batch(cnn, cnn_fixed):
    x = {"image": cnn.train["image"][:5]}
    fixed = _run(cnn_fixed, "logits", [x], reduce="flatten")["logits"]
    dynamic = _run(cnn.path, "logits", [x], reduce="flatten")["logits"]
    np.testing.assert_allclose(fixed.train, dynamic.train, rtol=1e-5, atol=1e-6)


def test_int64_tokens_with_batches(transformer):
    ids = transformer.train["tokens"][:45]
    a = _run(transformer.path, "logits", [{"tokens": ids}], batch_size=8)["logits"]
    want = M.torch_outputs(transformer.model, {}, [ids])["__output__"]
    np.testing.assert_allclose(a.train, want, rtol=RTOL, atol=ATOL)


def test_int32_tokens_are_cast_to_int64(transformer):
    ids = transformer.train["tokens"][:20]
    a = _run(transformer.path, "logits", [{"tokens": ids.astype(np.int32)}])["logits"]
    b = _run(transformer.path, "logits", [{"tokens": ids}])["logits"]
    np.testing.assert_array_equal(a.train, b.train)


def test_float64_images_are_cast_to_float32(cnn):
    x = cnn.train["image"][:20]
    a = _run(cnn.path, "logits", [{"image": x.astype(np.float64)}])["logits"]
    b = _run(cnn.path, "logits", [{"image": x}])["logits"]
    np.testing.assert_array_equal(a.train, b.train)


# ---------------------------------------------------------------------------------------
# model_feeds: inputs that do not fit
# ---------------------------------------------------------------------------------------


def _feeds(path, arrays, role="data"):
    return model_feeds(describe(load_model(path)), arrays, role)


def test_single_input_model_takes_the_inputs_key(cnn):
    x = cnn.train["image"][:9]
    feeds, n = _feeds(cnn.path, {"inputs": x})
    assert n == 9 and list(feeds) == ["image"]
    np.testing.assert_array_equal(feeds["image"], x)


def test_wrong_input_name_names_the_expected_input(cnn):
    with pytest.raises(InputError) as exc:
        _feeds(cnn.path, {"images": cnn.train["image"][:4]})
    msg = str(exc.value)
    assert "'image'" in msg and "'images'" in msg and "inputs" in msg


def test_two_input_model_missing_one_names_it(two_inputs):
    with pytest.raises(InputError) as exc:
        _feeds(two_inputs.path, {"image": two_inputs.train["image"][:4]})
    assert "'extra'" in str(exc.value)


def test_two_input_model_does_not_take_the_inputs_key(two_inputs):
    with pytest.raises(InputError, match="'image'"):
        _feeds(two_inputs.path, {"inputs": two_inputs.train["image"][:4]})


def test_two_inputs_with_different_sample_counts(two_inputs):
    with pytest.raises(InputError, match="samples"):
        _feeds(two_inputs.path, {"image": two_inputs.train["image"][:4],
                                 "extra": two_inputs.train["extra"][:5]})


def test_wrong_image_size_names_axis_and_expected_shape(cnn):
    with pytest.raises(InputError) as exc:
        _feeds(cnn.path, {"image": np.zeros((4, 1, 7, 7), np.float32)})
    msg = str(exc.value)
    assert "'image'" in msg and "(4, 1, 7, 7)" in msg and "axis 2" in msg and "8" in msg


def test_wrong_rank_says_the_rank_expected(cnn):
    with pytest.raises(InputError, match="rank 4"):
        _feeds(cnn.path, {"image": np.zeros((4, 64), np.float32)})


def test_float_tokens_for_an_int64_input_are_refused(transformer):
    with pytest.raises(InputError) as exc:
        _feeds(transformer.path, {"tokens": transformer.train["tokens"][:4].astype(np.float32)})
    msg = str(exc.value)
    assert "'tokens'" in msg and "float32" in msg and "int64" in msg


def test_int_images_for_a_float_input_are_refused(cnn):
    with pytest.raises(InputError, match="float32"):
        _feeds(cnn.path, {"image": np.zeros((4, 1, 8, 8), np.int64)})


def test_empty_input_is_refused(cnn):
    with pytest.raises(InputError, match="no samples"):
        _feeds(cnn.path, {"image": np.zeros((0, 1, 8, 8), np.float32)})


def test_bad_test_set_is_named_as_test(cnn):
    with pytest.raises(InputError, match="^test: "):
        _run(cnn.path, "logits", [{"image": cnn.train["image"][:4]},
                                  {"picture": cnn.test["image"][:4]}])


# ---------------------------------------------------------------------------------------
# Token models with an attention mask: mean over the unmasked positions, first token
# ---------------------------------------------------------------------------------------

TOK_V, TOK_T, TOK_F = 11, 6, 8


def _token_model(tmp_path):
    """tokens (N, T) and attention_mask (N, T) -> embedding -> MatMul + Relu (``h``) ->
    masked self-attention (``ctx``): scores h h^T, -1e4 where the key is masked, softmax."""
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    rng = np.random.default_rng(3)
    emb = rng.standard_normal((TOK_V, TOK_F)).astype(np.float32)
    w = rng.standard_normal((TOK_F, TOK_F)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["E", "tokens"], ["e"]),
        helper.make_node("MatMul", ["e", "W"], ["m"]),
        helper.make_node("Relu", ["m"], ["h"]),
        helper.make_node("Transpose", ["h"], ["hT"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["h", "hT"], ["s"]),
        helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "mf"], ["pad"]),
        helper.make_node("Mul", ["pad", "big"], ["bias"]),
        helper.make_node("Unsqueeze", ["bias", "axis1"], ["bias3"]),
        helper.make_node("Add", ["s", "bias3"], ["sm"]),
        helper.make_node("Softmax", ["sm"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "h"], ["ctx"]),
    ]
    inits = [numpy_helper.from_array(emb, "E"), numpy_helper.from_array(w, "W"),
             numpy_helper.from_array(np.float32(1.0), "one"),
             numpy_helper.from_array(np.float32(-1e4), "big"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    graph = helper.make_graph(
        nodes, "tokens",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", TOK_T]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", TOK_T])],
        [helper.make_tensor_value_info("ctx", TensorProto.FLOAT, ["N", TOK_T, TOK_F])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "tokens.onnx"
    path.write_bytes(model.SerializeToString())
    return path, emb, w


def _token_layers(emb, w, tokens, mask):
    """h and ctx of :func:`_token_model` in float64."""
    h = np.maximum(emb.astype(np.float64)[tokens] @ w, 0.0)
    s = h @ h.transpose(0, 2, 1) + (1.0 - mask[:, None, :]) * -1e4
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return {"h": h, "ctx": p @ h}


def _token_data(n=40):
    rng = np.random.default_rng(4)
    tokens = rng.integers(1, TOK_V, size=(n, TOK_T))
    lengths = rng.integers(1, TOK_T + 1, size=n)  # 1 .. T real tokens, the rest padding
    mask = (np.arange(TOK_T)[None, :] < lengths[:, None]).astype(np.int64)
    tokens[mask == 0] = 0
    return tokens, mask


def test_mean_of_a_token_model_averages_only_the_unmasked_positions(tmp_path):
    path, emb, w = _token_model(tmp_path)
    tokens, mask = _token_data()
    got = _run(path, ["h", "ctx"], [{"tokens": tokens, "attention_mask": mask}],
               reduce="mean", batch_size=7)
    want = _token_layers(emb, w, tokens, mask)
    for name in ("h", "ctx"):
        masked = (want[name] * mask[:, :, None]).sum(1) / mask.sum(1)[:, None]
        np.testing.assert_allclose(got[name].train, masked, rtol=RTOL, atol=ATOL)
        assert got[name].reduction.kind == "mean" and got[name].dims == TOK_F


def test_first_token_of_a_token_model_is_position_zero(tmp_path):
    path, emb, w = _token_model(tmp_path)
    tokens, mask = _token_data()
    got = _run(path, ["h", "ctx"], [{"tokens": tokens, "attention_mask": mask}],
               reduce="first_token", batch_size=7)
    want = _token_layers(emb, w, tokens, mask)
    for name in ("h", "ctx"):
        np.testing.assert_allclose(got[name].train, want[name][:, 0], rtol=RTOL, atol=ATOL)
def test_first_token_of_a_convolution_tensor_is_refused_naming_it_and_its_rank(cnn):
    """(N, C, H, W): position 0 of the 'token' axis would be channel 0, silently."""
    with pytest.raises(InputError, match=r"'/relu1/Relu_output_0'.*rank 4.*channel 0"):
        _run(cnn.path, "/relu1/Relu_output_0", [{"image": cnn.train["image"][:4]}],
             reduce="first_token")


def test_project_wider_than_the_layer_keeps_it_as_it_is_and_says_so(cnn, cnn_raw):
    x, want = cnn_raw
    layer = _run(cnn.path, "/relu3/Relu_output_0", [{"image": x}],
                 reduce="project:100")["/relu3/Relu_output_0"]  # relu3 has 64 values
    assert layer.reduction == Reduction("flatten") and layer.dims == 64
    assert any("project:100" in n and "not widened" in n for n in layer.notes)
    np.testing.assert_allclose(layer.train, _flat(want["relu3"]), rtol=RTOL, atol=ATOL)
