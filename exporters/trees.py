"""XGBoost and LightGBM tree ensembles to ONNX with onnxmltools (``layerscope[xgboost]``,
``layerscope[lightgbm]``).

Input ``input`` (N, n_features) float32; outputs ``label`` and ``probabilities`` (no ZipMap)
for classifiers or ``variable`` for regressors, and ``tree_outputs`` (N, n_trees): each
tree's leaf value per sample, what the layer-wise analysis uses (:func:`add_tree_outputs`).
Objectives the converter gets wrong are refused up front. Model files are XGBoost ``.json``
/ ``.ubj`` and LightGBM text, never pickles. The rule of ``tree_outputs``, the supported
objectives and the opsets: docs/exporters.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from .base import (
    DEFAULT_TOLERANCE,
    MAX_OPSET,
    ExportReport,
    ParityError,
    finish,
    require,
    run_onnx,
)
from .inputs import as_input_list

CONVERTER_MAX_OPSET = 15  # onnxmltools refuses a higher target_opset
MIN_OPSET = 9  # the LightGBM converter emits opset-9 operators
ML_DOMAIN = "ai.onnx.ml"
INPUT = "input"
BATCH = "N"
TREE_OUTPUTS = "tree_outputs"
TREE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")

XGB_CLASSIFICATION = ("binary:logistic", "multi:softprob", "multi:softmax")
XGB_REGRESSION = ("reg:squarederror", "reg:squaredlogerror", "reg:pseudohubererror",
                  "reg:absoluteerror", "reg:quantileerror", "count:poisson", "reg:gamma",
                  "reg:tweedie")
LGB_CLASSIFICATION = ("binary", "multiclass")
LGB_REGRESSION = ("regression", "regression_l1", "huber", "quantile", "poisson", "gamma",
                  "tweedie")
LGB_BOOSTING = ("gbdt", "goss", "dart")


# ---------------------------------------------------------------------------------------
# Shared: inputs, opsets, the graph's outputs, tree_outputs
# ---------------------------------------------------------------------------------------


def _sample_matrix(sample_inputs: Any, n_features: int) -> np.ndarray:
    """The one sample input as a float32 (N, n_features) matrix."""
    arrays = as_input_list(sample_inputs)
    if len(arrays) != 1:
        raise ValueError(f"a tree ensemble takes one input matrix; got {len(arrays)} arrays")
    x = arrays[0]
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ValueError(f"sample input must have shape (N, {n_features}) for this model "
                         f"({n_features} features); got {list(x.shape)}")
    if len(x) == 0:
        raise ValueError("sample input has no rows; give at least one sample")
    return np.ascontiguousarray(x, dtype=np.float32)


def _opsets(opset: int | None) -> tuple[int, int]:
    """(opset to convert at, opset to declare) for the main domain."""
    declared = CONVERTER_MAX_OPSET if opset is None else int(opset)
    if not MIN_OPSET <= declared <= MAX_OPSET:
        raise ValueError(f"opset must be between {MIN_OPSET} and {MAX_OPSET} for tree "
                         f"ensembles; got {opset!r}")
    return min(declared, CONVERTER_MAX_OPSET), declared


def _tree_node(proto: onnx.ModelProto) -> onnx.NodeProto:
    nodes = [n for n in proto.graph.node if n.domain == ML_DOMAIN and n.op_type in TREE_OPS]
    if len(nodes) != 1:
        raise ValueError(f"expected the converter to emit one tree-ensemble node; found "
                         f"{len(nodes)}")
    return nodes[0]


def _drop_zipmap(proto: onnx.ModelProto) -> None:
    """Replace a ZipMap (a list of dicts) by its input tensor, kept under the output's name."""
    g = proto.graph
    for node in [n for n in g.node if n.op_type == "ZipMap"]:
        src, dst = node.input[0], node.output[0]
        g.node.remove(node)
        g.node.append(helper.make_node("Identity", [src], [dst], name=f"{dst}_tensor"))
        for out in g.output:
            if out.name == dst:
                out.CopyFrom(helper.make_tensor_value_info(dst, onnx.TensorProto.FLOAT,
                                                           [BATCH, None]))


def _set_batch_axis(proto: onnx.ModelProto) -> None:
    """Name the first axis of the input and of every output ``N``."""
    for vi in [*proto.graph.input, *proto.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = BATCH


def _set_opsets(proto: onnx.ModelProto, declared: int) -> None:
    versions = {o.domain: o.version for o in proto.opset_import}
    versions[""] = declared
    versions[ML_DOMAIN] = max(versions.get(ML_DOMAIN, 1), 1)
    versions.pop("ai.onnx", None)
    del proto.opset_import[:]
    proto.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(versions.items()))


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _floats(attrs: Mapping[str, Any], name: str) -> list[float]:
    """A float-list attribute, or its ``*_as_tensor`` form (ai.onnx.ml opset 3)."""
    if name in attrs:
        return [float(v) for v in attrs[name]]
    tensor = attrs.get(f"{name}_as_tensor")
    if tensor is None:
        raise ValueError(f"the converter's tree node has no {name}")
    return [float(v) for v in onnx.numpy_helper.to_array(tensor).ravel()]


def add_tree_outputs(proto: onnx.ModelProto, n_trees: int) -> None:
    """Add the ``tree_outputs`` (N, n_trees) output: tree t's leaf value in column t.

    Built from the model's one TreeEnsembleClassifier/TreeEnsembleRegressor node: a
    TreeEnsembleRegressor with the same ``nodes_*`` attributes, ``n_targets = n_trees``,
    ``target_ids`` = the leaf's tree id, ``target_weights`` = the leaf's weight, base
    values 0, aggregate SUM, post transform NONE.
    """
    node = _tree_node(proto)
    attrs = _attrs(node)
    prefix = "class_" if node.op_type == "TreeEnsembleClassifier" else "target_"
    tree_ids = [int(t) for t in attrs[f"{prefix}treeids"]]
    node_ids = [int(n) for n in attrs[f"{prefix}nodeids"]]
    weights = _floats(attrs, f"{prefix}weights")
    all_trees = {int(t) for t in attrs["nodes_treeids"]}
    if not all_trees or min(all_trees) < 0 or max(all_trees) >= n_trees:
        raise ValueError(f"the converter's tree ids {min(all_trees, default=None)}.."
                         f"{max(all_trees, default=None)} do not fit the model's "
                         f"{n_trees} trees")
    new = {k: v for k, v in attrs.items() if k.startswith("nodes_")}
    new.update(
        n_targets=n_trees, target_treeids=tree_ids, target_nodeids=node_ids,
        target_ids=tree_ids, target_weights=weights, base_values=[0.0] * n_trees,
        aggregate_function="SUM", post_transform="NONE",
    )
    proto.graph.node.append(helper.make_node(
        "TreeEnsembleRegressor", [node.input[0]], [TREE_OUTPUTS], name="per_tree_values",
        domain=ML_DOMAIN, **new,
    ))
    proto.graph.output.append(helper.make_tensor_value_info(
        TREE_OUTPUTS, onnx.TensorProto.FLOAT, [BATCH, n_trees]))


def _prepare(proto: onnx.ModelProto, classifier: bool, n_trees: int | None,
             declared_opset: int) -> onnx.ModelProto:
    """Plain-tensor outputs named label/probabilities or variable, the batch axis named,
    tree_outputs added when ``n_trees`` is given, the opsets declared."""
    _drop_zipmap(proto)
    names = [o.name for o in proto.graph.output]
    want = ["label", "probabilities"] if classifier else ["variable"]
    if names != want:
        raise ValueError(f"the converter gave outputs {names}; expected {want}")
    if n_trees is not None:
        add_tree_outputs(proto, n_trees)
    _set_batch_axis(proto)
    _set_opsets(proto, declared_opset)
    return proto


def _leaf_values(leaf_index: np.ndarray, leaves: list[dict[int, float]]) -> np.ndarray:
    """(N, n_trees) leaf values from (N, n_trees) leaf ids and per-tree {leaf id: value}."""
    out = np.empty(leaf_index.shape, dtype=np.float64)
    for t, table in enumerate(leaves):
        out[:, t] = [table[int(i)] for i in leaf_index[:, t]]
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def _binary_to_two_columns(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    return np.stack([1.0 - p, p], axis=1)


def _check_string_labels(proto: onnx.ModelProto, x: np.ndarray, want: np.ndarray) -> None:
    """Labels the parity check cannot compare as numbers (strings) are compared here."""
    got = run_onnx(proto, {INPUT: x})["label"].reshape(-1)
    wrong = int(np.sum(got.astype(str) != np.asarray(want).astype(str).reshape(-1)))
    if wrong:
        raise ParityError(f"output 'label': the ONNX model predicts another class for "
                          f"{wrong} of {len(x)} samples")


# ---------------------------------------------------------------------------------------
# XGBoost
# ---------------------------------------------------------------------------------------


def _attr_set(node: onnx.NodeProto, name: str, value: str) -> None:
    """Set (or replace) a string attribute of ``node``."""
    for attr in node.attribute:
        if attr.name == name:
            node.attribute.remove(attr)
            break
    node.attribute.append(helper.make_attribute(name, value))


def _xgb_config(booster: Any) -> dict[str, Any]:
    return dict(json.loads(booster.save_config())["learner"])


def _xgb_check(config: Mapping[str, Any]) -> tuple[str, bool, int]:
    """(objective, is classifier, number of classes); ValueError when not supported."""
    objective = str(config.get("objective", {}).get("name", "?"))
    gb = config.get("gradient_booster", {})
    kind = str(gb.get("name", "?"))
    if kind != "gbtree":
        raise ValueError(f"XGBoost booster {kind!r} is not supported (only 'gbtree': "
                         "'gblinear' is no tree ensemble, 'dart' weighs trees at predict time)")
    if objective not in XGB_CLASSIFICATION + XGB_REGRESSION:
        raise ValueError(
            f"XGBoost objective {objective!r} is not supported; supported: "
            f"{', '.join(XGB_CLASSIFICATION + XGB_REGRESSION)} (ranking, survival, "
            "binary:logitraw, binary:hinge and reg:logistic are not)")
    params = config.get("learner_model_param", {})
    if int(params.get("num_target", 1) or 1) != 1:
        raise ValueError("XGBoost models with several targets are not supported")
    forest = int(gb.get("gbtree_model_param", {}).get("num_parallel_tree", 1) or 1)
    n_classes = int(params.get("num_class", 0) or 0)
    if forest > 1 and n_classes > 1:
        raise ValueError("multi-class XGBoost models with num_parallel_tree > 1 are not "
                         "supported (the converter assigns trees to classes round-robin)")
    if objective == "reg:quantileerror":
        alpha = config.get("objective", {}).get("quantile_loss_param", {}).get(
            "quantile_alpha", "")
        if "," in str(alpha):
            raise ValueError("XGBoost reg:quantileerror with several quantiles is not "
                             "supported (one target only)")
    classifier = objective in XGB_CLASSIFICATION
    return objective, classifier, (max(n_classes, 2) if classifier else 0)


def _xgb_leaves(booster: Any) -> list[dict[int, float]]:
    """Per tree, {leaf node id: leaf value}, from the booster's JSON dump."""
    tables = []
    for text in booster.get_dump(dump_format="json"):
        table: dict[int, float] = {}
        stack = [json.loads(text)]
        while stack:
            node = stack.pop()
            if "leaf" in node:
                table[int(node["nodeid"])] = float(node["leaf"])
            stack.extend(node.get("children", []))
        tables.append(table)
    return tables


def xgboost_tree_values(booster: Any, x: np.ndarray) -> np.ndarray:
    """Each tree's leaf value for each sample, (N, n_trees), computed by XGBoost itself."""
    xgb = require("xgboost", "xgboost")
    dm = xgb.DMatrix(x, feature_names=booster.feature_names,
                     feature_types=booster.feature_types)
    leaves = _xgb_leaves(booster)
    index = np.asarray(booster.predict(dm, pred_leaf=True)).reshape(len(x), len(leaves))
    return _leaf_values(index, leaves)


def _xgb_expected(model: Any, booster: Any, x: np.ndarray, objective: str,
                  classifier: bool, n_classes: int) -> dict[str, np.ndarray]:
    """The framework's outputs: the sklearn API's predict/predict_proba for its models,
    Booster.predict for a Booster (binary [1 - p, p]; multi:softmax: softmax of margins)."""
    xgb = require("xgboost", "xgboost")
    n = len(x)
    if not isinstance(model, xgb.Booster):
        if classifier:
            return {"label": np.asarray(model.predict(x)),
                    "probabilities": np.asarray(model.predict_proba(x), dtype=np.float64)}
        return {"variable": np.asarray(model.predict(x), dtype=np.float64).reshape(n, 1)}
    dm = xgb.DMatrix(x, feature_names=booster.feature_names,
                     feature_types=booster.feature_types)
    pred = np.asarray(booster.predict(dm), dtype=np.float64)
    if not classifier:
        return {"variable": pred.reshape(n, 1)}
    if objective == "binary:logistic":
        proba = _binary_to_two_columns(pred)
    elif objective == "multi:softprob":
        proba = pred.reshape(n, n_classes)
    else:  # multi:softmax: predict gives the class; probabilities from the raw scores
        proba = _softmax(np.asarray(booster.predict(dm, output_margin=True),
                                    dtype=np.float64).reshape(n, n_classes))
    return {"label": np.argmax(proba, axis=1).astype(np.int64), "probabilities": proba}


def _xgb_for_converter(xgb: Any, booster: Any, classifier: bool) -> Any:
    """A fresh sklearn-API model holding ``booster``, without feature names (the converter
    then reads features as f0, f1, ... = input columns)."""
    fresh = (xgb.XGBClassifier if classifier else xgb.XGBRegressor)()
    fresh.load_model(bytearray(booster.save_raw(raw_format="json")))
    inner = fresh.get_booster()
    inner.feature_names = None
    inner.feature_types = None
    return fresh


def export_xgboost(
    model: Any,
    sample_inputs: Any,
    path: str | os.PathLike[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int | None = None,
    per_tree: bool = True,
) -> ExportReport:
    """Export an ``XGBClassifier``/``XGBRegressor`` (sklearn API) or an ``xgboost.Booster``
    with ``onnxmltools.convert_xgboost``; parity against predict/predict_proba (a Booster:
    ``Booster.predict``) and, with ``per_tree``, ``tree_outputs`` against each tree's leaf
    value (module docstring). A model trained with early stopping is exported up to its
    best iteration, as its sklearn ``predict`` uses it."""
    xgb = require("xgboost", "xgboost")
    onnxmltools = require("onnxmltools", "xgboost")
    from onnxmltools.convert.common.data_types import FloatTensorType

    if isinstance(model, xgb.Booster):
        booster = model
    elif isinstance(model, xgb.XGBModel):
        booster = model.get_booster()
    else:
        raise ValueError(f"expected an xgboost XGBClassifier, XGBRegressor or Booster; got "
                         f"{type(model).__module__}.{type(model).__name__}")
    objective, classifier, n_classes = _xgb_check(_xgb_config(booster))
    if isinstance(model, xgb.XGBModel) and (
            not isinstance(model, (xgb.XGBClassifier, xgb.XGBRegressor))
            or isinstance(model, xgb.XGBClassifier) != classifier):
        raise ValueError(f"{type(model).__name__} with objective {objective!r} is not "
                         "supported (XGBClassifier, XGBRegressor or Booster)")
    convert_at, declared = _opsets(opset)
    x = _sample_matrix(sample_inputs, int(booster.num_features()))
    notes = [f"objective {objective}"]
    exported = booster
    best = getattr(model, "best_iteration", None) if isinstance(model, xgb.XGBModel) else None
    if best is not None and best + 1 < booster.num_boosted_rounds():
        exported = booster[: best + 1]
        notes.append(f"exported up to the best iteration ({best + 1} rounds), as predict "
                     "uses it")
    expected = _xgb_expected(model, booster, x, objective, classifier, n_classes)
    proto = onnxmltools.convert_xgboost(
        _xgb_for_converter(xgb, exported, classifier),
        initial_types=[(INPUT, FloatTensorType([None, x.shape[1]]))],
        target_opset=convert_at,
    )
    if objective == "multi:softmax":  # the converter leaves raw scores: make probabilities
        _attr_set(_tree_node(proto), "post_transform", "SOFTMAX")
        notes.append("multi:softmax: probabilities are the softmax of the raw scores")
    n_trees = None
    if per_tree:
        values = xgboost_tree_values(exported, x)
        n_trees = values.shape[1]
        expected[TREE_OUTPUTS] = values
        notes.append(f"tree_outputs: {n_trees} trees"
                     + (f" ({n_trees // n_classes} rounds x {n_classes} classes)"
                        if n_classes > 2 else ""))
    _prepare(proto, classifier, n_trees, declared)
    return finish(proto, path, "xgboost", {INPUT: x}, expected, tolerance, notes)


def export_xgboost_file(src: str | os.PathLike[str], sample_inputs: Any,
                        path: str | os.PathLike[str], **kw: Any) -> ExportReport:
    """Export the model in an XGBoost model file (``.json`` or ``.ubj``), loaded as a
    ``Booster``."""
    xgb = require("xgboost", "xgboost")
    if Path(src).suffix.lower() not in (".json", ".ubj"):
        raise ValueError(f"{src}: XGBoost models come as .json or .ubj model files "
                         "(save_model; never pickles)")
    if not Path(src).is_file():
        raise ValueError(f"{src}: no such file")
    return export_xgboost(xgb.Booster(model_file=str(src)), sample_inputs, path, **kw)


# ---------------------------------------------------------------------------------------
# LightGBM
# ---------------------------------------------------------------------------------------


def _lgb_check(booster: Any, dump: Mapping[str, Any]) -> tuple[str, bool, int]:
    """(objective, is classifier, number of classes); ValueError when not supported."""
    text = str(dump.get("objective", "custom"))
    words = text.split()
    objective = words[0] if words else "custom"
    if objective not in LGB_CLASSIFICATION + LGB_REGRESSION:
        raise ValueError(
            f"LightGBM objective {objective!r} is not supported; supported: "
            f"{', '.join(LGB_CLASSIFICATION + LGB_REGRESSION)} (ranking, multiclassova, "
            "cross_entropy, fair, mape and custom objectives are not)")
    if objective == "binary" and any(w.startswith("sigmoid:") and float(w[8:]) != 1.0
                                     for w in words[1:]):
        raise ValueError(f"LightGBM binary objective with {text!r} is not supported "
                         "(sigmoid must be 1)")
    params = getattr(booster, "params", {}) or {}
    boosting = str(params.get("boosting", params.get("boosting_type", "gbdt")))
    if boosting not in LGB_BOOSTING or dump.get("average_output"):
        raise ValueError(f"LightGBM boosting {boosting!r} is not supported "
                         f"({', '.join(LGB_BOOSTING)}; random forests 'rf' are not)")
    if any(t.get("is_linear") for t in dump.get("tree_info", [])) or params.get("linear_tree"):
        raise ValueError("LightGBM linear trees (linear_tree=True) are not supported")
    classifier = objective in LGB_CLASSIFICATION
    n_classes = int(dump.get("num_class", 1))
    return objective, classifier, (max(n_classes, 2) if classifier else 0)


def lightgbm_tree_values(booster: Any, x: np.ndarray,
                         dump: Mapping[str, Any] | None = None) -> np.ndarray:
    """Each tree's leaf value for each sample, (N, n_trees), computed by LightGBM itself
    (``pred_leaf`` indices looked up in ``dump_model``)."""
    dump = booster.dump_model(num_iteration=-1) if dump is None else dump
    tables = []
    for tree in dump["tree_info"]:
        table: dict[int, float] = {}
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "leaf_value" in node:
                table[int(node.get("leaf_index", 0))] = float(node["leaf_value"])
            else:
                stack.extend([node["left_child"], node["right_child"]])
        tables.append(table)
    index = np.asarray(booster.predict(x, pred_leaf=True, num_iteration=-1))
    return _leaf_values(index.reshape(len(x), len(tables)), tables)


def _lgb_expected(model: Any, booster: Any, x: np.ndarray, classifier: bool,
                  n_classes: int) -> dict[str, np.ndarray]:
    """predict/predict_proba for the sklearn API, Booster.predict for a Booster."""
    lgb = require("lightgbm", "lightgbm")
    n = len(x)
    if not isinstance(model, lgb.Booster):
        if classifier:
            return {"label": np.asarray(model.predict(x)),
                    "probabilities": np.asarray(model.predict_proba(x), dtype=np.float64)}
        return {"variable": np.asarray(model.predict(x), dtype=np.float64).reshape(n, 1)}
    pred = np.asarray(booster.predict(x, num_iteration=-1), dtype=np.float64)
    if not classifier:
        return {"variable": pred.reshape(n, 1)}
    proba = _binary_to_two_columns(pred) if n_classes == 2 and pred.ndim == 1 else \
        pred.reshape(n, n_classes)
    return {"label": np.argmax(proba, axis=1).astype(np.int64), "probabilities": proba}


def export_lightgbm(
    model: Any,
    sample_inputs: Any,
    path: str | os.PathLike[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int | None = None,
    per_tree: bool = True,
) -> ExportReport:
    """Export an ``LGBMClassifier``/``LGBMRegressor`` or a ``lightgbm.Booster`` with
    ``onnxmltools.convert_lightgbm`` (``zipmap=False``); parity against
    predict/predict_proba (a Booster: ``Booster.predict``) and, with ``per_tree``,
    ``tree_outputs`` against each tree's leaf value (module docstring). Every tree is
    exported: a model trained with early stopping must be cut to its best iteration first
    (``Booster(model_str=booster.model_to_string(num_iteration=...))``)."""
    lgb = require("lightgbm", "lightgbm")
    onnxmltools = require("onnxmltools", "lightgbm")
    from onnxmltools.convert.common.data_types import FloatTensorType

    if isinstance(model, lgb.Booster):
        booster = model
    elif isinstance(model, (lgb.LGBMClassifier, lgb.LGBMRegressor)):
        booster = model.booster_
    else:
        raise ValueError(f"expected a lightgbm LGBMClassifier, LGBMRegressor or Booster; got "
                         f"{type(model).__module__}.{type(model).__name__}")
    dump = booster.dump_model(num_iteration=-1)
    objective, classifier, n_classes = _lgb_check(booster, dump)
    if not isinstance(model, lgb.Booster) and isinstance(model, lgb.LGBMClassifier) != classifier:
        raise ValueError(f"{type(model).__name__} with objective {objective!r} is not "
                         "supported")
    best = int(getattr(booster, "best_iteration", 0) or 0)
    if 0 < best < booster.current_iteration():
        raise ValueError(f"the model was trained with early stopping (best iteration {best} "
                         f"of {booster.current_iteration()}) and predicts with its best "
                         "iteration; cut it first: lightgbm.Booster(model_str=booster."
                         f"model_to_string(num_iteration={best}))")
    convert_at, declared = _opsets(opset)
    x = _sample_matrix(sample_inputs, int(booster.num_feature()))
    notes = [f"objective {objective}"]
    expected = _lgb_expected(model, booster, x, classifier, n_classes)
    string_labels = classifier and expected["label"].dtype.kind not in "biuf"
    labels = expected.pop("label") if string_labels else None
    proto = onnxmltools.convert_lightgbm(
        model, initial_types=[(INPUT, FloatTensorType([None, x.shape[1]]))],
        target_opset=convert_at, zipmap=False,
    )
    n_trees = None
    if per_tree:
        values = lightgbm_tree_values(booster, x, dump)
        n_trees = values.shape[1]
        expected[TREE_OUTPUTS] = values
        notes.append(f"tree_outputs: {n_trees} trees"
                     + (f" ({n_trees // n_classes} rounds x {n_classes} classes)"
                        if n_classes > 2 else ""))
    _prepare(proto, classifier, n_trees, declared)
    if labels is not None:
        _check_string_labels(proto, x, labels)
        notes.append("string class labels: label compared as text")
    return finish(proto, path, "lightgbm", {INPUT: x}, expected, tolerance, notes)


def export_lightgbm_file(src: str | os.PathLike[str], sample_inputs: Any,
                         path: str | os.PathLike[str], **kw: Any) -> ExportReport:
    """Export the model in a LightGBM text model file (``save_model``), loaded as a
    ``Booster``."""
    lgb = require("lightgbm", "lightgbm")
    if not Path(src).is_file():
        raise ValueError(f"{src}: no such file")
    head = Path(src).read_bytes()[:64]
    if not head.startswith(b"tree"):
        raise ValueError(f"{src}: not a LightGBM text model file (save_model writes one "
                         "starting with 'tree'); never pickles")
    return export_lightgbm(lgb.Booster(model_file=str(src)), sample_inputs, path, **kw)
