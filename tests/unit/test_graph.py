"""layerscope.server.graph on real exported models: loading, describing, choosing, exposing."""

from __future__ import annotations

import builtins
import io
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import models as M
from onnx import TensorProto, helper

from layerscope.server.graph import (
    LayerSelectionError,
    ModelError,
    TensorInfo,
    describe,
    expose,
    load_model,
    max_ir_version,
    select_layers,
)

CNN_LAYERS = M.CNN_LAYERS


def _info(path: Path):
    return describe(load_model(path))


def _graph(path: Path) -> onnx.GraphProto:
    return onnx.load_model(str(path), load_external_data=False).graph


# ---------------------------------------------------------------------------------------
# describe: inputs, outputs, layers, shapes
# ---------------------------------------------------------------------------------------


def test_cnn_inputs_and_outputs_keep_the_symbolic_batch_dim(cnn):
    info = _info(cnn.path)
    assert info.inputs == [TensorInfo("image", "float32", ("batch", 1, 8, 8))]
    assert info.outputs == [TensorInfo("logits", "float32", ("batch", 10))]


def test_cnn_layers_are_every_module_output_in_order(cnn):
    info = _info(cnn.path)
    assert [(la.name, la.op_type) for la in info.layers] == [(n, op) for n, op, _ in CNN_LAYERS]
    positions = [la.position for la in info.layers]
    assert positions == sorted(positions)


def test_cnn_layer_shapes_match_torch_and_keep_the_batch_symbol(cnn):
    info = _info(cnn.path)
    seen = M.torch_outputs(cnn.model, {m: getattr(cnn.model, m) for _, _, m in CNN_LAYERS},
                           [cnn.train["image"][:3]])
    for name, _, module in CNN_LAYERS:
        la = info.layer(name)
        assert la is not None, name
        assert la.shape == ("batch", *seen[module].shape[1:]), name
        assert la.elements_per_sample == int(np.prod(seen[module].shape[1:])), name
        assert la.dtype == "float32"


def test_cnn_auto_takes_outputs_after_activation_and_pooling(cnn):
    info = _info(cnn.path)
    auto = {la.name for la in info.layers if la.auto}
    assert auto == {"/relu1/Relu_output_0", "/relu2/Relu_output_0", "/pool/MaxPool_output_0",
                    "/relu3/Relu_output_0", "logits"}


def test_cnn_layout_is_channels_first_for_convolutions(cnn):
    info = _info(cnn.path)
    assert info.layer("/relu2/Relu_output_0").channels_first
    assert info.layer("/pool/MaxPool_output_0").channels_first


def test_initializers_are_excluded_as_weights(cnn):
    info = _info(cnn.path)
    weights = {t.name for t in _graph(cnn.path).initializer}
    assert weights == {f"{m}.{p}" for m in ("conv1", "conv2", "fc1", "fc2")
                       for p in ("weight", "bias")}
    for name in weights:
        assert "initializer" in info.excluded[name]
        assert info.layer(name) is None


def test_resnet_auto_takes_the_residual_merges(resnet):
    info = _info(resnet.path)
    auto = {la.name for la in info.layers if la.auto}
    # block1: x + f(x) then ReLU -> the merge is taken after its activation
    assert "/block1/post/Relu_output_0" in auto
    assert "/block1/Add_output_0" not in auto
    # block2: x + f(x) with nothing after -> the Add itself
    assert "/block2/Add_output_0" in auto
    assert "/gap/GlobalAveragePool_output_0" in auto
    assert info.layer("/block2/Add_output_0").op_type == "Add"
    assert info.layer("/block2/Add_output_0").shape == ("batch", 8, 8, 8)


def test_resnet_inner_convolutions_are_taken_after_their_activation(resnet):
    info = _info(resnet.path)
    auto = {la.name for la in info.layers if la.auto}
    assert "/block1/act/Relu_output_0" in auto
    assert "/block1/conv_a/Conv_output_0" not in auto


def test_resnet_branch_that_only_feeds_the_merge_is_not_auto(resnet):
    """AUTO_RULE: branches that only feed a residual merge are skipped (the merge is the
    layer)."""
    info = _info(resnet.path)
    for block in ("block1", "block2"):
        assert not info.layer(f"/{block}/conv_b/Conv_output_0").auto, block


def test_transformer_export_has_layernormalization_ops(transformer):
    ops = [n.op_type for n in _graph(transformer.path).node]
    assert ops.count("LayerNormalization") == 2
    assert max(o.version for o in onnx.load_model(str(transformer.path)).opset_import
               if o.domain in ("", "ai.onnx")) >= 17


def test_transformer_token_input_is_int64_with_batch_symbol(transformer):
    info = _info(transformer.path)
    assert info.inputs == [TensorInfo("tokens", "int64", ("batch", 8))]
    assert info.outputs == [TensorInfo("logits", "float32", ("batch", 3))]


def test_transformer_auto_takes_layernorm_outputs_as_sequences(transformer):
    info = _info(transformer.path)
    for name in ("/ln1/LayerNormalization_output_0", "/ln2/LayerNormalization_output_0"):
        la = info.layer(name)
        assert la is not None and la.auto, name
        assert la.op_type == "LayerNormalization"
        assert la.shape == ("batch", 8, 16)
        assert not la.channels_first  # (batch, tokens, features)


def test_transformer_attention_score_products_are_not_auto(transformer):
    info = _info(transformer.path)
    g = _graph(transformer.path)
    weights = {t.name for t in g.initializer}
    products = [n.output[0] for n in g.node
                if n.op_type == "MatMul" and not any(i in weights for i in n.input)]
    assert len(products) == 2  # q @ k^T and softmax @ v
    for name in products:
        assert info.layer(name) is not None
        assert not info.layer(name).auto, name


def test_transformer_qkv_projections_feeding_attention_heads_are_not_auto(transformer):
    """AUTO_RULE: "projections that only feed a reshape into attention heads are skipped".

    Here each projection's output feeds the head Reshape, and also a Shape node (the
    ``t.reshape(t.shape[0], ...)`` idiom): a Shape reads no values, so the projection still
    only feeds the heads."""
    info = _info(transformer.path)
    for proj in ("q", "k", "v"):
        la = info.layer(f"/{proj}/Add_output_0")
        assert la is not None
        assert not la.auto, f"{proj} projection into the attention heads was picked by auto"
    # The output projection only feeds the residual merge, so (AUTO_RULE) the merge after
    # it is the layer: the Add of the block input and the projection.
    o = info.layer("/o/Add_output_0")
    assert o is not None and not o.auto
    merges = [la for la in info.layers if la.op_type == "Add" and la.auto
              and la.position > o.position]
    assert merges, "the residual merge after the attention output projection is auto"


def test_transformer_shape_computations_are_excluded_with_reason(transformer):
    info = _info(transformer.path)
    g = _graph(transformer.path)
    shape_outputs = [n.output[0] for n in g.node if n.op_type == "Shape"]
    reshape_shapes = [n.input[1] for n in g.node if n.op_type == "Reshape"]
    assert shape_outputs and reshape_shapes
    for name in shape_outputs + reshape_shapes:
        assert name in info.excluded, name
        assert "shape computation" in info.excluded[name], name
        assert info.layer(name) is None


def test_transformer_boolean_mask_is_excluded_by_type(transformer):
    info = _info(transformer.path)
    equal = next(n.output[0] for n in _graph(transformer.path).node if n.op_type == "Equal")
    assert "bool" in info.excluded[equal]
    assert info.layer(equal) is None


def test_sklearn_integer_outputs_are_excluded_by_type(sklearn_mlp):
    info = _info(sklearn_mlp.path)
    assert {t.name: t.dtype for t in info.outputs} == {"label": "int64",
                                                       "probabilities": "float32"}
    assert "int64" in info.excluded["label"]
    argmax = next(n.output[0] for n in _graph(sklearn_mlp.path).node if n.op_type == "ArgMax")
    assert "int64" in info.excluded[argmax]
    assert all(la.dtype == "float32" for la in info.layers)


def test_sklearn_auto_takes_the_hidden_relu_outputs(sklearn_mlp):
    info = _info(sklearn_mlp.path)
    relus = [n.output[0] for n in _graph(sklearn_mlp.path).node if n.op_type == "Relu"]
    assert len(relus) == 2
    auto = [la.name for la in info.layers if la.auto]
    assert auto[:2] == relus
    assert [info.layer(r).shape[1] for r in relus] == [32, 16]


def test_two_input_model_lists_both_inputs_and_takes_the_concat(two_inputs):
    info = _info(two_inputs.path)
    assert info.inputs == [TensorInfo("image", "float32", ("batch", 1, 8, 8)),
                           TensorInfo("extra", "float32", ("batch", 4))]
    concat = info.layer("/Concat_output_0")
    assert concat is not None and concat.auto and concat.shape == ("batch", 68)


def test_fixed_batch_model_has_integer_batch_dim(cnn_fixed):
    info = _info(cnn_fixed)
    assert info.inputs[0].shape == (16, 1, 8, 8)
    assert info.layer("/relu1/Relu_output_0").shape == (16, 16, 8, 8)


# ---------------------------------------------------------------------------------------
# select_layers
# ---------------------------------------------------------------------------------------


def test_select_by_op_types_in_topological_order(cnn):
    info = _info(cnn.path)
    got = [la.name for la in select_layers(info, "op:Gemm,Conv")]
    assert got == ["/conv1/Conv_output_0", "/conv2/Conv_output_0", "/fc1/Gemm_output_0",
                   "logits"]


def test_select_by_glob(cnn):
    info = _info(cnn.path)
    got = [la.name for la in select_layers(info, "*relu*")]
    assert got == ["/relu1/Relu_output_0", "/relu2/Relu_output_0", "/relu3/Relu_output_0"]


def test_select_by_names_sorts_and_deduplicates(cnn):
    info = _info(cnn.path)
    got = select_layers(info, ["logits", "/pool/MaxPool_output_0", "logits"])
    assert [la.name for la in got] == ["/pool/MaxPool_output_0", "logits"]


def test_select_comma_separated_mix(cnn):
    info = _info(cnn.path)
    got = [la.name for la in select_layers(info, "op:Conv,/fc1/Gemm_output_0")]
    assert got == ["/conv1/Conv_output_0", "/conv2/Conv_output_0", "/fc1/Gemm_output_0"]


def test_select_auto_and_all(cnn):
    info = _info(cnn.path)
    assert select_layers(info, "all") == info.layers
    assert select_layers(info, "auto") == [la for la in info.layers if la.auto]
    assert select_layers(info, None) == select_layers(info, "auto")


def test_select_unknown_name_lists_close_matches(cnn):
    info = _info(cnn.path)
    with pytest.raises(LayerSelectionError) as exc:
        select_layers(info, "/relu1/Relu_output_9")
    msg = str(exc.value)
    assert "/relu1/Relu_output_9" in msg
    assert "/relu1/Relu_output_0" in msg


def test_select_unknown_op_type_lists_present_ones(cnn):
    info = _info(cnn.path)
    with pytest.raises(LayerSelectionError) as exc:
        select_layers(info, "op:Conv2d")
    msg = str(exc.value)
    assert "'Conv2d'" in msg and "Conv" in msg and "MaxPool" in msg


def test_select_glob_matching_nothing_is_an_error(cnn):
    with pytest.raises(LayerSelectionError, match="matches no layer"):
        select_layers(_info(cnn.path), "*attention*")


def test_select_initializer_says_why_it_is_not_a_layer(cnn):
    with pytest.raises(LayerSelectionError) as exc:
        select_layers(_info(cnn.path), "conv1.weight")
    assert "conv1.weight" in str(exc.value) and "initializer" in str(exc.value)


def test_select_shape_tensor_says_why_it_is_not_a_layer(transformer):
    info = _info(transformer.path)
    shape_out = next(n.output[0] for n in _graph(transformer.path).node
                     if n.op_type == "Shape")
    with pytest.raises(LayerSelectionError, match="shape computation"):
        select_layers(info, shape_out)


def test_select_errors_are_model_errors_and_value_errors(cnn):
    with pytest.raises(ModelError):
        select_layers(_info(cnn.path), "nope")
    assert issubclass(LayerSelectionError, ValueError)


def test_auto_on_a_model_without_layers_is_an_error(tmp_path):
    node = helper.make_node("Neg", ["x"], ["y"])
    graph = helper.make_graph([node], "neg", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["n", 3])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["n", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    info = describe(model)
    assert [la.name for la in info.layers] == ["y"]
    with pytest.raises(LayerSelectionError, match="auto found no layer"):
        select_layers(info, "auto")


# ---------------------------------------------------------------------------------------
# load_model: corrupt files and external data
# ---------------------------------------------------------------------------------------


def test_load_from_bytes_equals_load_from_path(cnn):
    assert load_model(cnn.path.read_bytes()) == load_model(cnn.path)


def test_truncated_model_file_is_refused(cnn, tmp_path):
    data = cnn.path.read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated.onnx"):
        load_model(bad)


def test_corrupt_model_bytes_are_refused(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelError, match="garbage.onnx"):
        load_model(bad)


def test_empty_model_file_is_refused(tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_model(empty)


def test_missing_model_file_is_refused(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        load_model(tmp_path / "absent.onnx")


def test_external_data_model_loads_with_its_weights(external_model, resnet):
    assert (external_model.parent / "weights.bin").is_file()
    assert not any(t.raw_data for t in _graph(external_model).initializer)
    inline = onnx.load_model(str(resnet.path))
    loaded = load_model(external_model)
    got = {t.name: onnx.numpy_helper.to_array(t) for t in loaded.graph.initializer}
    want = {t.name: onnx.numpy_helper.to_array(t) for t in inline.graph.initializer}
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_external_data_model_describes_like_the_inline_one(external_model, resnet):
    assert describe(load_model(external_model, with_data=False)).layers == \
        _info(resnet.path).layers


def test_external_data_model_from_bytes_asks_for_a_path(external_model):
    with pytest.raises(ModelError, match="from a path"):
        load_model(external_model.read_bytes())


@pytest.fixture
def no_external_reads(monkeypatch, external_model):
    """Fail the test if anything opens the real weights file."""
    weights = os.path.realpath(external_model.parent / "weights.bin")
    real_open, real_io_open = builtins.open, io.open

    def guard(opener):
        def wrapped(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and os.path.realpath(file) == weights:
                raise AssertionError(f"external data {file} was opened")
            return opener(file, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(builtins, "open", guard(real_open))
    monkeypatch.setattr(io, "open", guard(real_io_open))

    def forbidden(*_a, **_k):
        raise AssertionError("external data loader was called")

    monkeypatch.setattr(onnx, "load_external_data_for_model", forbidden)
    monkeypatch.setattr(onnx.external_data_helper, "load_external_data_for_model", forbidden)
    monkeypatch.setattr(onnx.external_data_helper, "load_external_data_for_tensor", forbidden)
    return weights


def test_absolute_external_location_is_refused_before_reading(external_model, tmp_path,
                                                              no_external_reads):
    path = M.rewrite_locations(external_model, tmp_path / "abs" / "model.onnx",
                               lambda _old: no_external_reads)
    with pytest.raises(ModelError) as exc:
        load_model(path)
    assert no_external_reads in str(exc.value)
    assert "relative" in str(exc.value)


def test_dotdot_external_location_is_refused_before_reading(external_model, tmp_path,
                                                            no_external_reads):
    # a sibling folder of the real model: "../model/weights.bin" names an existing file
    sibling = external_model.parent.parent / "sibling"
    path = M.rewrite_locations(external_model, sibling / "model.onnx",
                               lambda old: f"../{external_model.parent.name}/{old}")
    try:
        assert (path.parent / f"../{external_model.parent.name}/weights.bin").is_file()
        with pytest.raises(ModelError, match=r"\.\."):
            load_model(path)
        with pytest.raises(ModelError, match=r"\.\."):
            load_model(path, with_data=False)
    finally:
        shutil.rmtree(sibling)


def test_backslash_dotdot_external_location_is_refused(external_model, tmp_path,
                                                       no_external_reads):
    path = M.rewrite_locations(external_model, tmp_path / "win" / "model.onnx",
                               lambda old: f"..\\{external_model.parent.name}\\{old}")
    with pytest.raises(ModelError):
        load_model(path)


def test_symlink_escaping_the_model_folder_is_refused(external_model, tmp_path,
                                                      no_external_reads):
    folder = tmp_path / "link"
    folder.mkdir()
    shutil.copy(external_model, folder / "model.onnx")
    (folder / "weights.bin").symlink_to(external_model.parent / "weights.bin")
    with pytest.raises(ModelError, match="outside"):
        load_model(folder / "model.onnx")


def test_missing_external_file_is_refused(external_model, tmp_path):
    folder = tmp_path / "missing"
    folder.mkdir()
    shutil.copy(external_model, folder / "model.onnx")
    with pytest.raises(ModelError, match="does not exist"):
        load_model(folder / "model.onnx")


def test_truncated_external_file_is_refused(external_model, tmp_path):
    folder = tmp_path / "short"
    folder.mkdir()
    shutil.copy(external_model, folder / "model.onnx")
    data = (external_model.parent / "weights.bin").read_bytes()
    (folder / "weights.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated"):
        load_model(folder / "model.onnx")


# ---------------------------------------------------------------------------------------
# expose
# ---------------------------------------------------------------------------------------


def test_expose_adds_outputs_without_touching_the_given_model(cnn):
    model = load_model(cnn.path)
    before = model.SerializeToString()
    out = expose(model, ["/relu1/Relu_output_0", "logits", "/pool/MaxPool_output_0"])
    assert model.SerializeToString() == before
    assert [o.name for o in out.graph.output] == ["logits", "/relu1/Relu_output_0",
                                                  "/pool/MaxPool_output_0"]


def test_exposed_high_ir_model_loads_in_onnxruntime(high_ir_model):
    model = load_model(high_ir_model)
    assert model.ir_version == onnx.IR_VERSION
    out = expose(model, ["h"])
    assert out.ir_version <= max_ir_version()
    sess = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    y, h = sess.run(["y", "h"], {"x": x})
    w = onnx.numpy_helper.to_array(model.graph.initializer[0])
    np.testing.assert_allclose(h, np.tanh(x @ w), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, h.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_max_ir_version_is_what_onnxruntime_accepts():
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])

    def loads(ir: int) -> bool:
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = ir
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001
            return False
        return True

    best = max_ir_version()
    assert loads(best)
    if best < onnx.IR_VERSION:
        assert not loads(best + 1)


def test_a_model_cannot_choose_the_folder_its_weights_are_read_from(tmp_path):
    # The folder of a stored set's weights is recorded by the server only: the same
    # metadata key in an uploaded model is dropped, so onnxruntime gets no folder at all.
    from onnx import TensorProto, helper  # noqa: PLC0415

    from layerscope.server.graph.load import FOLDER_KEY, external_folder, session_input  # noqa: PLC0415

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key=FOLDER_KEY, value=str(tmp_path))
    loaded = load_model(model.SerializeToString())
    assert external_folder(loaded) is None and session_input(loaded)[1] is None
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    assert external_folder(load_model(path, in_place=True)) is None  # no weights outside
def test_head_rule_takes_the_penultimate_layer_of_an_exported_sklearn_regressor(tmp_path):
    """MLPRegressor through our exporter ends in MatMul, Add, Reshape (to (N,)): the walk
    passes the Reshape and, every layer being fully connected, takes the last hidden
    activation, as docs/exporters.md names it."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    from layerscope.exporters import export
    from layerscope.server.graph.head import head_layer
    from layerscope.server.graph.inspect import describe

    x = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg = MLPRegressor(hidden_layer_sizes=(8, 4), max_iter=30, random_state=0).fit(
            x, x[:, 0] - x[:, 1])
    export(reg, x[:2], tmp_path / "reg.onnx")
    model = onnx.load(tmp_path / "reg.onnx")
    assert model.graph.node[-1].op_type == "Reshape"
    name, why = head_layer(model, describe(model))
    assert name == "hidden2"
    assert "penultimate" in why


def test_parameters_per_layer_are_the_torch_modules_weights(cnn):
    """Each convolution or Gemm output owns its module's weight and bias (torch's numel);
    activations and pooling own none; the total is every float weight of the model."""
    from layerscope.server.graph.inspect import describe as describe_model

    info = describe_model(onnx.load(cnn.path))
    got = {la.name: la.parameters for la in info.layers}
    for name, _, module in M.CNN_LAYERS:
        want = sum(p.numel() for p in getattr(cnn.model, module).parameters())
        assert got[name] == want, name
    assert info.parameters == sum(p.numel() for p in cnn.model.parameters())
