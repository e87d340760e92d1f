"""The Python client's public surface against a real server process: the short entry
(`from layerscope.client import Client`), typed results (frozen dataclasses, never protobuf
messages), ranking that names models as the caller gave them, one IndexOptions value, and
to_pandas through its declared extra.

Expected values are computed without layerscope: sha256 of the bytes, the ONNX graph read
with onnx, brute-force indices from ``helpers.rank``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from typing import Any

import numpy as np
import pytest
import tomllib
from google.protobuf.message import Message
from helpers import ROOT
from helpers import rank as H
from helpers import server as F

import layerscope.client.client
from layerscope.client import (
    Client,
    Dataset,
    IndexOptions,
    IndicesResult,
    Job,
    LayerInfo,
    LayerscopeError,
    Model,
    RankingResult,
    Reference,
    TensorInfo,
    TensorSpec,
)

pytestmark = pytest.mark.timeout(120)

INFO_COLS = [0, 1]
NOISE_COLS = [2, 3, 4]
PYPROJECT = ROOT / "pyproject.toml"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with F.ServerProcess(tmp_path_factory.mktemp("client-api") / "data") as s:
        yield s
        assert s.alive(), f"the server died during the tests:\n{s.log_tail()}"


@pytest.fixture(scope="module")
def client(server: F.ServerProcess) -> Any:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    x, y = H.informative_data()
    info = H.selection_mlp(6, INFO_COLS, n_classes=3, seed=1)
    noise = H.selection_mlp(6, NOISE_COLS, n_classes=3, seed=2)
    root = tmp_path_factory.mktemp("client-api-models")
    paths = {"info": root / "info.onnx", "noise": root / "noise.onnx"}
    paths["info"].write_bytes(info.SerializeToString())
    paths["noise"].write_bytes(noise.SerializeToString())
    return {"x": x, "y": y, "info": info.SerializeToString(), "info_proto": info,
            "noise": noise.SerializeToString(), "paths": paths}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _assert_plain_frozen(value: Any) -> None:
    assert dataclasses.is_dataclass(value) and not isinstance(value, Message)
    field = dataclasses.fields(value)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, field, None)


# ---------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------


def test_the_client_and_its_types_import_from_layerscope_client():
    assert Client is layerscope.client.client.Client
    assert LayerscopeError is layerscope.client.client.LayerscopeError
    assert IndexOptions.build(orders=[3]).orders == (3,)


# ---------------------------------------------------------------------------------------
# Typed results
# ---------------------------------------------------------------------------------------


def test_models_are_frozen_dataclasses_with_the_message_fields(client, data):
    proto = data["info_proto"]
    model = client.upload_model(data["info"], name="info-net")
    _assert_plain_frozen(model)
    assert isinstance(model, Model)
    assert model.id == _sha(data["info"]) and model.name == "info-net"
    assert model.size_bytes == len(data["info"]) and model.ir_version == proto.ir_version
    assert dict(model.opsets) == {(o.domain or "ai.onnx"): o.version for o in proto.opset_import}
    assert model.inputs == (TensorInfo("x", "float32", ("N", "6")),)
    assert model.outputs == (TensorInfo("logits", "float32", ("N", "3")),)
    assert all(isinstance(la, LayerInfo) for la in model.layers)
    by_name = {la.name: la for la in model.layers}
    producers = {n.output[0]: n for n in proto.graph.node}
    for name in ("hidden", "act", "logits"):
        assert by_name[name].op_type == producers[name].op_type
        assert by_name[name].node == producers[name].name
    assert by_name["act"].elements_per_sample == len(INFO_COLS)
    # get_model takes the Model (or its id) and gives the same value
    assert client.get_model(model) == model == client.get_model(model.id)
    listed = client.models()
    assert all(isinstance(m, Model) for m in listed)
    assert {m.id: m for m in listed}[model.id].layers == ()  # listings leave layers out
    assert {model: "usable as a key"}[client.get_model(model.id)] == "usable as a key"


def test_datasets_are_frozen_dataclasses_with_the_message_fields(client, data):
    x, y = data["x"], data["y"]
    ds = client.upload_dataset({"x": x}, labels=y, name="info-train")
    _assert_plain_frozen(ds)
    assert isinstance(ds, Dataset)
    assert ds.tensors == (TensorSpec("x", "float32", x.shape), TensorSpec("labels", "int64",
                                                                          y.shape))
    assert (ds.n_samples, ds.task, ds.name) == (len(y), "classification", "info-train")
    assert ds.size_bytes == x.nbytes + y.nbytes
    assert client.get_dataset(ds) == ds == client.get_dataset(ds.id)
    assert ds in client.datasets()
    assert all(isinstance(d, Dataset) for d in client.datasets())


def test_references_and_jobs_are_frozen_dataclasses(client, data):
    model = client.upload_model(data["info"])
    ds = client.upload_dataset({"x": data["x"]}, labels=data["y"])
    ref = client.build_reference(model, ds)  # a Model and a Dataset are taken as they are
    _assert_plain_frozen(ref)
    assert isinstance(ref, Reference)
    assert (ref.model_id, ref.dataset_id, ref.layer) == (model.id, ds.id, "act")
    assert (ref.n_samples, ref.features, ref.task) == (len(data["y"]), 2, "classification")
    assert ref.summary["confidence"] == H.si(H.hidden_of(data["x"], INFO_COLS), data["y"])
    q = H.hidden_of(data["x"][:4], INFO_COLS)
    assert client.certify(ref, q).results == client.certify(ref.id, q).results
    jobs = client.jobs()
    assert jobs and all(isinstance(j, Job) for j in jobs)
    (listed,) = [j for j in jobs if j.kind == "reference"]
    _assert_plain_frozen(listed)
    again = client.job(listed)  # a Job is taken where its id was
    assert (again.id, again.state) == (listed.id, "succeeded")
    assert again.result == ref


# ---------------------------------------------------------------------------------------
# Ranking names the models as they were given
# ---------------------------------------------------------------------------------------


def test_ranking_names_models_by_the_paths_given(client, data):
    info, noise = data["paths"]["info"], data["paths"]["noise"]
    res = client.rank_models([str(noise), info], {"x": data["x"]}, labels=data["y"])
    assert isinstance(res, RankingResult)
    assert res.ranking == [str(info), str(noise)]
    assert res.ranking_ids == [_sha(data["info"]), _sha(data["noise"])]
    rows = {m["model"]: m for m in res.models}
    assert rows[str(info)]["model_id"] == _sha(data["info"]) and rows[str(info)]["rank"] == 1
    hid = H.hidden_of(data["x"], INFO_COLS)
    assert rows[str(info)]["all_features"] == pytest.approx(H.si(hid, data["y"]), rel=1e-12)


def test_ranking_names_models_by_the_keys_of_a_mapping(client, data):
    res = client.rank_models({"noise": data["noise"], "informative": data["info"]},
                             {"x": data["x"]}, labels=data["y"])
    assert res.ranking == ["informative", "noise"]
    assert res.ranking_ids == [_sha(data["info"]), _sha(data["noise"])]


def test_ranking_names_stored_models_by_their_names(client, data):
    # models not uploaded before (an upload of known bytes keeps the first name)
    info = client.upload_model(H.selection_mlp(6, INFO_COLS, n_classes=3, seed=5)
                               .SerializeToString(), name="info-net")
    noise = client.upload_model(H.selection_mlp(6, NOISE_COLS, n_classes=3, seed=6)
                                .SerializeToString(), name="noise-net")
    res = client.rank_models([noise, info.id], {"x": data["x"]}, labels=data["y"])
    assert res.ranking == [info.id, "noise-net"]  # an id given is the name it goes by
    assert res.ranking_ids == [info.id, noise.id]


def test_ranking_layers_take_the_name_given(client, data):
    err = F.client_error(lambda: client.rank_models(
        {"informative": data["info"]}, {"x": data["x"]}, labels=data["y"],
        layers={"informative": "nope"}))
    assert err.code == "INVALID_ARGUMENT" and "nope" in err.details


def test_ranking_layers_of_a_model_not_given_is_refused(client, data):
    with pytest.raises(ValueError, match=r"other\.onnx.*none of the models given"):
        client.rank_models([data["paths"]["info"]], {"x": data["x"]}, labels=data["y"],
                           layers={"other.onnx": "act"})


def test_ranking_the_same_model_twice_is_refused(client, data):
    with pytest.raises(ValueError, match="same model"):
        client.rank_models([data["paths"]["info"], data["info"]], {"x": data["x"]},
                           labels=data["y"])


# ---------------------------------------------------------------------------------------
# One IndexOptions value
# ---------------------------------------------------------------------------------------


def test_an_index_options_value_is_what_the_server_computes(client, data):
    x, y = data["x"], data["y"]
    res = client.compute_indices(x, labels=y, options=IndexOptions.build(orders=[2, 3],
                                                                         indices=["si",
                                                                                  "high_order_si"]))
    assert set(res["high_order_si"]) == {"2", "3"}
    assert res["high_order_si"]["3"] == pytest.approx(H.high_order_si(x, y, 3), rel=1e-12)
    assert "soft_order_si" not in res.data
    with pytest.raises(TypeError, match="not both"):
        client.compute_indices(x, labels=y, options=IndexOptions.build(), orders=[2])


# ---------------------------------------------------------------------------------------
# to_pandas and its extra
# ---------------------------------------------------------------------------------------


def test_pyproject_declares_the_pandas_extra():
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    assert [r for r in extras["pandas"] if r.replace(" ", "").startswith("pandas>=")]


def test_to_pandas_without_pandas_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # what `import pandas` meets uninstalled
    with pytest.raises(RuntimeError, match=r"pip install 'layerscope\[pandas\]'"):
        IndicesResult({"task": "classification", "si": 0.5}).to_pandas()


def test_to_pandas_gives_one_row_per_set(client, data):
    pytest.importorskip("pandas")
    x, y = data["x"], data["y"]
    res = client.compute_indices(x[:60], labels=y[:60], test_features=x[60:],
                                 test_labels=y[60:], orders=[1])
    frame = res.to_pandas()
    assert list(frame["set"]) == ["train", "test"]
    assert frame["si"].iloc[0] == pytest.approx(H.si(x[:60], y[:60]), rel=1e-12)
    assert np.isfinite(frame["si"].iloc[1])


# ---------------------------------------------------------------------------------------
# The light client
# ---------------------------------------------------------------------------------------


def test_a_model_file_uploads_without_onnx_installed(client, data, monkeypatch):
    """The light install has no onnx: a model file goes as its bytes."""
    monkeypatch.setitem(sys.modules, "onnx", None)
    model = client.upload_model(data["paths"]["info"])
    assert model.id == _sha(data["info"]) and model.layers
