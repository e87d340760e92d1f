"""`layerscope compress`, Client.compress and the StartCompression / DownloadModel RPCs
against a real embedded server (one for the module, as a person's shell would reuse it)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from helpers import models as M
from helpers.server import code_of, embedded_server_fixture, stubs
from onnx import TensorProto, helper

from layerscope.client.cli import main
from layerscope.protos.stubs import analysis_pb2, models_pb2

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.timeout(300)

embedded_server = embedded_server_fixture("cli-compress-data")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("compress-files")
    x, y = M.xor_data(600, 0)
    xt, yt = M.xor_data(300, 1)
    model = M.xor_model(root / "xor.onnx")
    np.savez(root / "train.npz", x=x, labels=y)
    np.savez(root / "test.npz", x=xt, labels=yt)
    nobatch = root / "nobatch.onnx"
    nodes = [helper.make_node("ReduceMean", ["x"], ["colmean"], axes=[0], keepdims=0),
             helper.make_node("Add", ["x", "colmean"], ["logits"])]
    g = helper.make_graph(
        nodes, "nobatch", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(nobatch))
    return {"root": root, "model": str(model), "train": str(root / "train.npz"),
            "test": str(root / "test.npz"), "nobatch": str(nobatch), "xt": xt, "yt": yt}


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_compress_writes_the_stored_compressed_model_and_reports_the_cut(files, capsys):
    out_path = Path(files["root"]) / "small.onnx"
    code, out, _ = run_cli(["compress", files["model"], "--data", files["train"], "--test",
                            files["test"], "--layers", "all", "--out", str(out_path), "--json"],
                           capsys)
    assert code == 0
    report = json.loads(out)
    assert report["cut"]["layer"] == "folded"  # the first layer where XOR is linear
    raw = out_path.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == report["model_id"]
    assert len(raw) == report["size_bytes"]
    sess = ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
    scores = sess.run(["logits"], {"x": files["xt"]})[0]
    acc = float(np.mean(np.argmax(scores, axis=1) == files["yt"]))
    assert acc == report["comparison"]["compressed"]["score"]
    assert acc >= 0.98


def test_compress_table_marks_the_cut(files, capsys):
    out_path = Path(files["root"]) / "small-table.onnx"
    code, out, _ = run_cli(["compress", files["model"], "--data", files["train"], "--test",
                            files["test"], "--layers", "all", "--out", str(out_path)], capsys)
    assert code == 0
    marked = [line for line in out.splitlines() if line.startswith("* ")]
    assert len(marked) == 1 and marked[0].split()[1] == "folded"
    assert "original" in out and "compressed" in out and "ratio" in out


@pytest.mark.parametrize(("extra", "message"), [
    (["--layers", "foldd"], "no tensor named 'foldd'"),
    (["--tolerance", "1.5"], "tolerance must be a number in [0, 1]"),
    (["--tolerance", "-0.01"], "tolerance must be a number in [0, 1]"),
])
def test_compress_bad_input_exits_2_naming_the_problem(files, capsys, extra, message):
    out_path = Path(files["root"]) / "never.onnx"
    code, _, err = run_cli(["compress", files["model"], "--data", files["train"], "--test",
                            files["test"], "--out", str(out_path), *extra], capsys)
    assert code == 2
    assert message in err and "INVALID_ARGUMENT" in err
    assert not out_path.exists()


def test_compress_a_cut_without_batch_axis_exits_2(files, capsys):
    out_path = Path(files["root"]) / "never.onnx"
    code, _, err = run_cli(["compress", files["nobatch"], "--data", files["train"], "--test",
                            files["test"], "--layers", "colmean", "--out", str(out_path)],
                           capsys)
    assert code == 2
    assert "colmean" in err and "batch axis" in err
    assert not out_path.exists()


def test_start_compression_refuses_bad_settings_with_invalid_argument(files, embedded_server):
    c = embedded_server
    model = c.upload_model(files["model"])
    train = c.upload_dataset({"x": M.xor_data(600, 0)[0]}, labels=M.xor_data(600, 0)[1])
    test = c.upload_dataset({"x": files["xt"]}, labels=files["yt"])
    s = stubs(c._channel)
    base = {"model_id": model.id, "dataset_id": train.id, "test_dataset_id": test.id}
    for extra, words in [({"tolerance": 2.0}, "tolerance"), ({"criterion": "best"}, "criterion"),
                         ({"layers": ["nope"]}, "nope"), ({"test_dataset_id": ""}, "test"),
                         ({"select_features": 0}, "select_features")]:
        req = analysis_pb2.StartCompressionRequest(**{**base, **extra})
        code, details = code_of(lambda r=req: s.analysis.StartCompression(r))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (extra, details)
        assert words in details
    code, _ = code_of(lambda: s.analysis.StartCompression(
        analysis_pb2.StartCompressionRequest(**{**base, "model_id": "0" * 64})))
    assert code == grpc.StatusCode.NOT_FOUND


def test_download_model_streams_the_bytes_in_chunks_that_hash_to_the_id(files, embedded_server):
    c = embedded_server
    model = c.upload_model(files["model"])
    raw = Path(files["model"]).read_bytes()
    chunks = list(stubs(c._channel).models.DownloadModel(
        models_pb2.DownloadModelRequest(id=model.id, chunk_bytes=100)))
    assert len(chunks) == -(-len(raw) // 100)
    assert [ch.offset for ch in chunks] == list(range(0, len(raw), 100))
    assert b"".join(ch.data for ch in chunks) == raw
    assert c.download_model(model.id) == raw
    code, _ = code_of(lambda: list(stubs(c._channel).models.DownloadModel(
        models_pb2.DownloadModelRequest(id="0" * 64))))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = code_of(lambda: list(stubs(c._channel).models.DownloadModel(
        models_pb2.DownloadModelRequest(id=model.id, chunk_bytes=-1))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_client_compress_returns_the_model_bytes_and_a_compression_job(files, embedded_server):
    c = embedded_server
    x, y = M.xor_data(600, 0)
    res = c.compress(files["model"], {"x": x}, {"x": files["xt"]}, labels=y,
                     test_labels=files["yt"], layers="all", tolerance=0.6)
    assert res.cut_layer == "mix"
    assert res.model is not None and hashlib.sha256(res.model).hexdigest() == res.model_id
    assert c.get_model(res.model_id).name == "xor.onnx-compressed"
    job = next(j for j in c.jobs() if j.kind == "compression")
    assert job.state == "succeeded"
