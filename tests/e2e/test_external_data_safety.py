"""No file of the machine is read through a model's external data (issue 11, section 1).

A tensor may keep its bytes in another file that the model names; whoever opens the model
resolves that name. Every place a tensor can sit (initializers, sparse initializers,
Constant attributes, subgraphs of If/Loop/Scan at two depths, custom-op graphs, functions,
training graphs) is combined with every kind of location (relative, '..', absolute, a
symlink leaving the folder):

- over gRPC, a real server whose working directory holds the file the model names refuses
  the upload with INVALID_ARGUMENT; nothing is stored;
- through the CLI, run as a subprocess from two working directories, a local model file that
  names a file outside its folder exits 2 naming the tensor and the location;
- a model file whose external data sits in its own folder works from any directory, and
  uploads exactly the bytes of the same model with its data embedded;
- onnxruntime is never handed a path to resolve (a ModelProto with a reference left in it is
  refused before a session exists; the session itself resolves against no folder).

"Nothing read" is proven by the kernel: inotify reports every open or read of the sentinel
files the models point at, whichever process does it (:class:`OpenWatch`); a control test
shows that onnxruntime alone does read them.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import server as F
from onnx import TensorProto, helper, numpy_helper

from layerscope.client.cli import main
from layerscope.onnx_external import (
    ExternalDataError,
    check_external_data,
    external_refs,
    load_external_data,
)
from layerscope.protos.stubs import models_pb2
from layerscope.server.analysis import analyze_layers
from layerscope.server.graph import ModelError, load_model
from layerscope.server.runtime import make_session

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="inotify proves what was opened")]

W = np.array([1.5, -2.0, 0.25, 4.0], np.float32)  # the model's own weights
SECRET = np.array([101.0, 202.0, 303.0, 404.0], np.float32)  # a file it may not read
F32 = TensorProto.FLOAT


# ---------------------------------------------------------------------------------------
# Watching opens: inotify
# ---------------------------------------------------------------------------------------

IN_ACCESS, IN_OPEN = 0x1, 0x20


class OpenWatch:
    """Every open or read of the watched files, by any process, as the kernel reports it."""

    def __init__(self, *paths: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.names: dict[int, str] = {}
        for p in paths:
            wd = self._libc.inotify_add_watch(self.fd, os.fsencode(p), IN_OPEN | IN_ACCESS)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {p}")
            self.names[wd] = str(p)

    def events(self) -> list[str]:
        """The watched files opened or read since the last call (one entry per event)."""
        out: list[str] = []
        while True:
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return out
            pos = 0
            while pos < len(buf):
                wd, _mask, _cookie, length = struct.unpack_from("iIII", buf, pos)
                out.append(self.names.get(wd, f"wd {wd}"))
                pos += 16 + length

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def watch(layout: Layout) -> Iterator[OpenWatch]:
    w = OpenWatch(*layout.sentinels)
    assert w.events() == []
    yield w
    w.close()


# ---------------------------------------------------------------------------------------
# The files: sentinels, working directories
# ---------------------------------------------------------------------------------------


class Layout:
    """root/secret.bin (P), root/work/secret.bin (C, the working directory's),
    root/work/link.bin -> P; model folders are made in root, so '../secret.bin' is P."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work"
        self.work.mkdir()
        self.parent_secret = root / "secret.bin"
        self.cwd_secret = self.work / "secret.bin"
        for p in (self.parent_secret, self.cwd_secret):
            p.write_bytes(SECRET.tobytes())
        (self.work / "link.bin").symlink_to(self.parent_secret)
        self.decoy = self.work / "weights.bin"  # same name as a legitimate model's data
        self.decoy.write_bytes(SECRET.tobytes())
        self.sentinels = (self.parent_secret, self.cwd_secret, self.decoy)

    def location(self, kind: str) -> str:
        return {"relative": "secret.bin", "dotdot": "../secret.bin",
                "absolute": str(self.parent_secret), "symlink": "link.bin"}[kind]

    def model_folder(self, name: str) -> Path:
        folder = self.root / name
        folder.mkdir()
        (folder / "link.bin").symlink_to(self.parent_secret)
        return folder


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    return Layout(tmp_path_factory.mktemp("external-safety"))


KINDS = ("relative", "dotdot", "absolute", "symlink")


# ---------------------------------------------------------------------------------------
# Models: one tensor 'w'-like at a chosen place, y = x + w (x of shape (N, 4))
# ---------------------------------------------------------------------------------------


def external(t: TensorProto, location: str | None) -> TensorProto:
    """``t`` with its bytes moved to ``location`` (offset 0); ``t`` itself for None."""
    if location is None:
        return t
    length = len(t.raw_data)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def weight(name: str, location: str | None) -> TensorProto:
    return external(numpy_helper.from_array(W, name), location)


def vi(name: str, elem: int = F32, shape: Any = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


Body = Callable[[str, str], tuple[list[onnx.NodeProto], list[TensorProto]]]


def add_w(p: str, loc: str | None) -> Body:
    def body(inp: str, out: str) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
        return [helper.make_node("Add", [inp, f"{p}w"], [out], name=f"{p}add")], \
            [weight(f"{p}w", loc)]
    return body


def in_if(p: str, inner: Body) -> Body:
    def body(inp: str, out: str) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
        nodes, inits = inner(inp, f"{p}then")
        then = helper.make_graph(nodes, f"{p}then_branch", [], [vi(f"{p}then")], inits)
        other = helper.make_graph([helper.make_node("Identity", [inp], [f"{p}else"])],
                                  f"{p}else_branch", [], [vi(f"{p}else")])
        node = helper.make_node("If", [f"{p}cond"], [out], name=f"{p}if", then_branch=then,
                                else_branch=other)
        # cond depends on the input (true for finite data), so y is a layer of the model
        cond = [helper.make_node("ReduceSum", [inp], [f"{p}sum"], keepdims=0),
                helper.make_node("IsNaN", [f"{p}sum"], [f"{p}nan"]),
                helper.make_node("Not", [f"{p}nan"], [f"{p}cond"])]
        return [*cond, node], []
    return body


def in_loop(p: str, inner: Body) -> Body:
    def body(inp: str, out: str) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
        nodes, inits = inner(f"{p}v", f"{p}v_out")
        g = helper.make_graph(
            [helper.make_node("Identity", [f"{p}c"], [f"{p}c_out"]), *nodes], f"{p}body",
            [vi(f"{p}i", TensorProto.INT64, []), vi(f"{p}c", TensorProto.BOOL, []), vi(f"{p}v")],
            [vi(f"{p}c_out", TensorProto.BOOL, []), vi(f"{p}v_out")], inits)
        node = helper.make_node("Loop", [f"{p}trips", f"{p}cond", inp], [out], name=f"{p}loop",
                                body=g)
        return [node], [numpy_helper.from_array(np.array(1, np.int64), f"{p}trips"),
                        numpy_helper.from_array(np.array(True), f"{p}cond")]
    return body


def in_scan(p: str, inner: Body) -> Body:
    def body(inp: str, out: str) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
        nodes, inits = inner(f"{p}s", f"{p}s_out")
        g = helper.make_graph(nodes, f"{p}body", [vi(f"{p}s")], [vi(f"{p}s_out")], inits)
        return [helper.make_node("Scan", [inp], [out], name=f"{p}scan", body=g,
                                 num_scan_inputs=1)], []
    return body


WRAP = {"If": (in_if, "if", "then_branch"), "Loop": (in_loop, "loop", "body"),
        "Scan": (in_scan, "scan", "body")}


def model_of(body: Body, *, sparse: list[onnx.SparseTensorProto] | None = None,
             functions: list[onnx.FunctionProto] | None = None,
             domains: tuple[str, ...] = ()) -> onnx.ModelProto:
    nodes, inits = body("x", "y")
    g = helper.make_graph(nodes, "m", [vi("x", F32, ["N", 4])], [vi("y")], inits,
                          sparse_initializer=sparse or [])
    m = helper.make_model(g, functions=functions or [], opset_imports=[
        helper.make_opsetid("", 17), *(helper.make_opsetid(d, 1) for d in domains)])
    m.ir_version = 8
    return m


def build(site: str, loc: str | None) -> tuple[onnx.ModelProto, str]:
    """The model with its tensor at ``site`` in ``loc`` (embedded for None), and the path
    the error must name, written out by hand."""
    for op, (wrap, suffix, attr) in WRAP.items():
        if site == f"{op}/1":
            return model_of(wrap("a_", add_w("i_", loc))), \
                f"{op} node 'a_{suffix}' attribute {attr} > initializer 'i_w'"
        if site == f"{op}/2":
            return model_of(wrap("a_", wrap("b_", add_w("i_", loc)))), (
                f"{op} node 'a_{suffix}' attribute {attr} > {op} node 'b_{suffix}' attribute "
                f"{attr} > initializer 'i_w'")
    if site == "initializer":
        return model_of(add_w("", loc)), "initializer 'w'"
    if site in ("sparse values", "sparse indices"):
        values = numpy_helper.from_array(W, "w")
        indices = numpy_helper.from_array(np.arange(4, dtype=np.int64), "w_indices")
        which = values if site == "sparse values" else indices
        external(which, loc)
        sparse = helper.make_sparse_tensor(values, indices, [4])
        body = lambda i, o: ([helper.make_node("Add", [i, "w"], [o], name="add")], [])  # noqa: E731
        return model_of(body, sparse=[sparse]), f"sparse initializer 'w' > {site.split()[1]}"
    if site == "Constant":
        def body(i: str, o: str) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
            return [helper.make_node("Constant", [], ["w"], name="const", value=weight("w", loc)),
                    helper.make_node("Add", [i, "w"], [o], name="add")], []
        return model_of(body), "Constant node 'const' attribute value"
    if site == "function":
        fn = helper.make_function(
            "local", "AddW", ["a"], ["b"],
            [helper.make_node("Constant", [], ["fw"], name="fconst", value=weight("fw", loc)),
             helper.make_node("Add", ["a", "fw"], ["b"], name="fadd")],
            [helper.make_opsetid("", 17)])
        body = lambda i, o: ([helper.make_node("AddW", [i], [o], domain="local", name="call")],  # noqa: E731
                             [])
        return model_of(body, functions=[fn], domains=("local",)), \
            "function local:AddW > Constant node 'fconst' attribute value"
    if site == "function default":
        fn = helper.make_function(
            "local", "AddW", ["a"], ["b"],
            [helper.make_node("Add", ["a", "a"], ["b"], name="fadd")],
            [helper.make_opsetid("", 17)])
        fn.attribute_proto.append(helper.make_attribute("wdefault", weight("fw", loc)))
        body = lambda i, o: ([helper.make_node("AddW", [i], [o], domain="local", name="call")],  # noqa: E731
                             [])
        return model_of(body, functions=[fn], domains=("local",)), \
            "function local:AddW > default attribute wdefault"
    if site == "custom op":
        inner = helper.make_graph([helper.make_node("Identity", ["i_w"], ["g_out"])], "g", [],
                                  [vi("g_out")], [weight("i_w", loc)])
        body = lambda i, o: ([helper.make_node("Wrap", [i], [o], domain="com.example",  # noqa: E731
                                               name="wrap", body=inner)], [])
        return model_of(body, domains=("com.example",)), \
            "Wrap node 'wrap' attribute body > initializer 'i_w'"
    if site == "training":
        m = model_of(add_w("", None))
        m.training_info.add().initialization.CopyFrom(
            helper.make_graph([], "init", [], [], [weight("t_w", loc)]))
        return m, "training_info[0] > initialization > initializer 't_w'"
    raise AssertionError(site)


def inner_graph(model: onnx.ModelProto, depth: int) -> onnx.GraphProto:
    """The subgraph ``depth`` levels down (then_branch of If, body of Loop and Scan)."""
    g = model.graph
    for _ in range(depth):
        node = next(n for n in g.node if n.op_type in WRAP)
        g = next(a.g for a in node.attribute if a.name in ("then_branch", "body"))
    return g


SUBGRAPH_SITES = ("If/1", "If/2", "Loop/1", "Loop/2", "Scan/1", "Scan/2")
RUNNABLE_SITES = (*SUBGRAPH_SITES, "initializer", "sparse values", "Constant", "function")
SITES = (*RUNNABLE_SITES, "sparse indices", "function default", "custom op", "training")


def run_onnxruntime(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """y of ``model`` on plain onnxruntime (graph optimisations off: with them, 1.31 stops at
    a top-level external initializer of a model without a path, and reads the others)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0])


X = np.zeros((3, 4), np.float32)


# ---------------------------------------------------------------------------------------
# The walk finds every place
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("site", SITES)
def test_every_external_tensor_is_found_with_its_path(site):
    model, where = build(site, "secret.bin")
    refs = external_refs(model)
    assert [(r.where, r.location) for r in refs] == [(where, "secret.bin")]
    assert external_refs(build(site, None)[0]) == []


def test_external_data_entries_without_the_external_flag_count_too():
    model, where = build("If/2", None)
    entry = inner_graph(model, 2).initializer[0]
    assert entry.name == "i_w"
    e = entry.external_data.add()
    e.key, e.value = "location", "secret.bin"
    assert [r.where for r in external_refs(model)] == [where]
    with pytest.raises(ModelError, match="secret.bin"):
        load_model(model.SerializeToString())


def test_tensors_in_attribute_lists_and_under_a_wrong_declared_type_are_found():
    node = helper.make_node("Custom", ["x"], ["y"], domain="com.example", name="n")
    gs = helper.make_attribute("gs", [helper.make_graph([], "g0", [], []),
                                      helper.make_graph([], "g1", [], [],
                                                        [weight("gw", "a.bin")])])
    ts = helper.make_attribute("ts", [numpy_helper.from_array(W, "t0"), weight("t1", "b.bin")])
    liar = helper.make_attribute("liar", 1.0)  # declared FLOAT, but a tensor is set too
    liar.t.CopyFrom(weight("lw", "c.bin"))
    node.attribute.extend([gs, ts, liar])
    model = model_of(lambda i, o: ([node], []), domains=("com.example",))
    assert [(r.where, r.location) for r in external_refs(model)] == [
        ("Custom node 'n' attribute gs > graphs[1] > initializer 'gw'", "a.bin"),
        ("Custom node 'n' attribute ts > tensors[1]", "b.bin"),
        ("Custom node 'n' attribute liar", "c.bin"),
    ]


# ---------------------------------------------------------------------------------------
# onnxruntime resolves nothing itself
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("site", RUNNABLE_SITES)
def test_onnxruntime_alone_reads_the_working_directory_and_make_session_does_not(
        site, layout, watch, monkeypatch):
    model, _ = build(site, "secret.bin")
    monkeypatch.chdir(layout.work)
    # The control: onnxruntime on these bytes reads the working directory's file.
    y = run_onnxruntime(model, X)
    np.testing.assert_array_equal(y.reshape(-1, 4), np.broadcast_to(SECRET, (y.size // 4, 4)))
    assert str(layout.cwd_secret) in watch.events()
    # The server's session resolves external data under the null device: no file there.
    with pytest.raises(Exception, match=re.escape(f"{os.devnull}/secret.bin")):  # noqa: PT011
        make_session(model.SerializeToString())
    assert watch.events() == []


@pytest.mark.parametrize("site", RUNNABLE_SITES)
def test_analysis_of_a_model_proto_with_external_references_is_refused_unread(
        site, layout, watch, monkeypatch):
    model, where = build(site, "secret.bin")
    monkeypatch.chdir(layout.work)
    with pytest.raises(ModelError) as exc:
        analyze_layers(model, {"x": np.zeros((8, 4), np.float32)},
                       labels=np.arange(8) % 2, layers=["y"])
    assert where in str(exc.value)
    assert watch.events() == []


# ---------------------------------------------------------------------------------------
# Over gRPC: uploads may not refer to external data at all
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(layout: Layout) -> Iterator[F.ServerProcess]:
    """A real server whose working directory holds secret.bin and link.bin."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(layout.work)
        proc = F.ServerProcess(layout.root / "server-data")
    with proc as s:
        assert Path(os.readlink(f"/proc/{s.pid}/cwd")) == layout.work
        yield s
        assert s.alive(), s.log_tail()


def _listing(stub: Any) -> list[str]:
    return [m.id for m in stub.models.ListModels(models_pb2.ListModelsRequest()).models]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("site", SITES)
def test_upload_with_external_data_is_invalid_argument_and_stores_nothing(
        site, kind, layout, server, watch):
    model, where = build(site, layout.location(kind))
    data = model.SerializeToString()
    digest = hashlib.sha256(data).hexdigest()
    with server.channel() as ch:
        stub = F.stubs(ch)
        before = _listing(stub)
        code, details = F.code_of(lambda: stub.models.UploadModel(F.model_requests(data)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert where in details and repr(layout.location(kind)) in details
        assert "self-contained" in details and "fold the external data" in details
        assert _listing(stub) == before
    assert not F.blob_path(server.data_dir, digest).exists()
    assert F.tmp_uploads(server.data_dir) == []
    assert watch.events() == []


# ---------------------------------------------------------------------------------------
# Local model files: external data inside the model's own folder only
# ---------------------------------------------------------------------------------------


def write_local(layout: Layout, name: str, site: str, kind: str) -> tuple[Path, str, str]:
    """model.onnx in a fresh folder of root, its tensor at ``kind``'s location."""
    folder = layout.model_folder(name)
    loc = layout.location(kind)
    model, where = build(site, loc)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path, where, loc


def _expected_reason(kind: str) -> str:
    return {"relative": "does not exist in the model's folder", "dotdot": "'..'",
            "absolute": "absolute path", "symlink": "outside the model's folder"}[kind]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("site", SITES)
def test_local_model_leaving_its_folder_is_refused_unread(site, kind, layout, watch,
                                                          monkeypatch, server):
    path, where, loc = write_local(layout, f"local-{site.replace(' ', '_').replace('/', '')}"
                                   f"-{kind}", site, kind)
    monkeypatch.chdir(layout.work)
    with pytest.raises(ModelError) as exc:  # the server's own loader (library use)
        load_model(path)
    assert where in str(exc.value) and repr(loc) in str(exc.value)
    assert _expected_reason(kind) in str(exc.value)
    with server.client() as c, pytest.raises(ExternalDataError) as cexc:
        c.upload_model(path)
    assert str(cexc.value) == str(exc.value)
    assert watch.events() == []


def run_cli_process(args: list[Any], cwd: Path) -> tuple[int, str, str]:
    """``python -m layerscope.client.cli ARGS`` run from ``cwd``: (exit code, out, err)."""
    proc = subprocess.run([sys.executable, "-m", "layerscope.client.cli", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def run_cli_here(args: list[Any], cwd: Path, capsys: Any, monkeypatch: Any
                 ) -> tuple[int, str, str]:
    """The same command in this process, with ``cwd`` as the working directory."""
    with monkeypatch.context() as mp:
        mp.chdir(cwd)
        code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def train_npz(layout: Layout) -> Path:
    path = layout.root / "train.npz"
    np.savez(path, x=np.zeros((8, 4), np.float32), labels=np.arange(8) % 2)
    return path


def _assert_refused(result: tuple[int, str, str], where: str, loc: str, kind: str) -> None:
    code, out, err = result
    assert code == 2 and out == "", (code, err)
    assert err.startswith("layerscope: error: "), err
    assert where in err and repr(loc) in err and _expected_reason(kind) in err, err


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("site", SUBGRAPH_SITES)
def test_cli_refuses_a_model_leaving_its_folder_from_any_directory(
        site, kind, layout, watch, server, train_npz, capsys, monkeypatch):
    path, where, loc = write_local(layout, f"cli-{site.replace('/', '')}-{kind}", site, kind)
    for cwd, args in ((layout.work, ["layers", path]),
                      (layout.root, ["analyze", path, "--data", train_npz, "--no-progress"])):
        _assert_refused(run_cli_here([*args, "--server", server.address], cwd, capsys,
                                     monkeypatch), where, loc, kind)
    assert watch.events() == []


# One process per kind of location, each from a working directory that holds the file a
# resolution against it would find (work: secret.bin and link.bin; root: secret.bin).
PROCESS_CASES = [("If/2", "relative", "work", "layers"), ("Loop/2", "dotdot", "root", "analyze"),
                 ("Scan/2", "absolute", "work", "analyze"), ("Loop/2", "symlink", "root", "layers"),
                 ("Scan/2", "relative", "root", "analyze")]


@pytest.mark.parametrize(("site", "kind", "cwd", "command"), PROCESS_CASES)
def test_cli_process_refuses_a_model_leaving_its_folder(site, kind, cwd, command, layout, watch,
                                                        server, train_npz):
    path, where, loc = write_local(layout, f"proc-{site.replace('/', '')}-{kind}-{cwd}", site,
                                   kind)
    args = ["layers", path] if command == "layers" else \
        ["analyze", path, "--data", train_npz, "--no-progress"]
    folder = layout.work if cwd == "work" else layout.root
    _assert_refused(run_cli_process([*args, "--server", server.address], folder), where, loc,
                    kind)
    assert watch.events() == []


LEGIT_SITES = ("initializer", "If/2", "Loop/2", "Scan/2", "sparse values", "Constant",
               "function")


def _legit_folder(layout: Layout, site: str) -> tuple[Path, bytes]:
    folder = layout.model_folder(f"legit-{site.replace(' ', '_').replace('/', '')}")
    (folder / "weights.bin").write_bytes(W.tobytes())
    (folder / "model.onnx").write_bytes(build(site, "weights.bin")[0].SerializeToString())
    return folder / "model.onnx", build(site, None)[0].SerializeToString()


@pytest.mark.parametrize("site", LEGIT_SITES)
def test_local_model_with_its_data_in_its_folder_uploads_the_embedded_model(
        site, layout, server, watch, capsys, monkeypatch):
    path, embedded = _legit_folder(layout, site)
    # From the working directory holding a decoy weights.bin, through a relative path.
    code, out, err = run_cli_here(["layers", os.path.relpath(path, layout.work), "--json",
                                   "--server", server.address], layout.work, capsys,
                                  monkeypatch)
    assert code == 0, err
    assert json.loads(out)["id"] == hashlib.sha256(embedded).hexdigest()
    assert watch.events() == []  # neither the decoy nor any secret was opened
    with monkeypatch.context() as mp:
        mp.chdir(layout.work)
        assert load_model(path).SerializeToString() == embedded


def test_cli_process_uploads_a_local_model_with_its_data_in_its_folder(layout, server, watch):
    path, embedded = _legit_folder(layout, "Scan/1")
    code, out, err = run_cli_process(["layers", os.path.relpath(path, layout.work), "--json",
                                      "--server", server.address], layout.work)
    assert code == 0, err
    assert json.loads(out)["id"] == hashlib.sha256(embedded).hexdigest()
    assert watch.events() == []


def test_local_model_analysis_from_another_directory_equals_the_embedded_one(
        layout, server, monkeypatch, capsys):
    folder = layout.model_folder("legit-analyze")
    (folder / "data").mkdir()
    (folder / "data" / "w.bin").write_bytes(W.tobytes())
    (folder / "weights.bin").symlink_to(Path("data") / "w.bin")  # a link inside the folder
    (folder / "model.onnx").write_bytes(build("Loop/2", "weights.bin")[0].SerializeToString())
    (folder / "embedded.onnx").write_bytes(build("Loop/2", None)[0].SerializeToString())
    rng = np.random.default_rng(0)
    data = layout.root / "analyze.npz"
    np.savez(data, x=rng.standard_normal((40, 4)).astype(np.float32),
             labels=(np.arange(40) % 3).astype(np.int64))
    monkeypatch.chdir(layout.work)
    outs = []
    for name in ("model.onnx", "embedded.onnx"):
        code = main(["analyze", str(folder / name), "--data", str(data), "--layers", "y",
                     "--json", "--no-progress", "--server", server.address])
        out, err = capsys.readouterr()
        assert code == 0, err
        outs.append(json.loads(out)["layers"])
    assert outs[0] == outs[1]
    assert outs[0][0]["si"] is not None


# ---------------------------------------------------------------------------------------
# Neighbours: what a location, an offset or a length may be
# ---------------------------------------------------------------------------------------


def _folder_with(tmp_path: Path, loc: str, entries: Any = None, site: str = "Scan/2") -> Path:
    model, _ = build(site, loc)
    if entries is not None:
        refs = external_refs(model)
        t = refs[0].tensor
        del t.external_data[:]
        for k, v in entries.items() if isinstance(entries, dict) else entries:
            e = t.external_data.add()
            e.key, e.value = k, v
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize(("setup", "entries", "message"), [
    ("file16", {"location": "w.bin", "offset": "8", "length": "16"}, "truncated"),
    ("file16", {"location": "w.bin", "offset": "17"}, "truncated"),
    ("file16", {"location": "w.bin", "offset": "0", "length": "8"}, "need 16"),
    ("file16", {"location": "w.bin", "offset": "0x0"}, "not a non-negative integer"),
    ("file16", {"location": "w.bin", "offset": "-1"}, "not a non-negative integer"),
    ("file16", {"location": "w.bin", "flavour": "x"}, "unknown key"),
    ("file16", [("location", "w.bin"), ("location", "w.bin")], "twice"),
    ("file16", {"location": "w.bin\0.txt"}, "NUL"),
    ("file16", {"location": "sub\\w.bin"}, "backslash"),
    ("file16", {"location": "C:w.bin"}, "absolute"),
    ("file16", {"location": "sub/../w.bin"}, "'..'"),
    ("file16", {"location": ""}, "no location"),
    ("file16", {"offset": "0"}, "no location"),
    ("dir", {"location": "d"}, "not a regular file"),
    ("fifo", {"location": "p"}, "not a regular file"),
    ("zero", {"location": "z"}, "outside the model's folder"),
    ("file16", {"location": "/dev/zero"}, "absolute"),
])
def test_local_external_data_neighbours_are_refused(tmp_path, setup, entries, message):
    (tmp_path / "w.bin").write_bytes(W.tobytes())
    if setup == "dir":
        (tmp_path / "d").mkdir()
    elif setup == "fifo":
        os.mkfifo(tmp_path / "p")  # opening it for reading would block: it never is
    elif setup == "zero":
        (tmp_path / "z").symlink_to("/dev/zero")
    path = _folder_with(tmp_path, "w.bin", entries)
    with pytest.raises(ModelError, match=message) as exc:
        load_model(path)
    assert "Scan node 'a_scan' attribute body > Scan node 'b_scan'" in str(exc.value)
    with pytest.raises(ExternalDataError, match=message):
        load_external_data(onnx.load_model(str(path), load_external_data=False), tmp_path,
                           str(path))


def test_external_entries_without_the_external_flag_are_refused_for_files(tmp_path):
    model, _ = build("Loop/1", None)
    t = inner_graph(model, 1).initializer[0]
    e = t.external_data.add()
    e.key, e.value = "location", "w.bin"
    (tmp_path / "w.bin").write_bytes(W.tobytes())
    (tmp_path / "model.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match="data_location is not EXTERNAL"):
        load_model(tmp_path / "model.onnx")


def test_one_file_shared_by_tensors_at_several_depths_loads_each_slice(tmp_path):
    model, _ = build("If/2", None)
    inner = inner_graph(model, 2)
    inner.node.append(helper.make_node("Mul", ["x", "i_v"], ["scaled"]))
    v = np.array([3.0, 5.0, 7.0, 9.0], np.float32)
    inner.initializer.append(numpy_helper.from_array(v, "i_v"))
    (tmp_path / "all.bin").write_bytes(W.tobytes() + v.tobytes())
    for t, offset in ((inner.initializer[0], 0), (inner.initializer[1], 16)):
        external(t, "all.bin")
        t.external_data[1].value = str(offset)
    assert [r.tensor.name for r in external_refs(model)] == ["i_w", "i_v"]
    (tmp_path / "model.onnx").write_bytes(model.SerializeToString())
    loaded = load_model(tmp_path / "model.onnx")
    got = inner_graph(loaded, 2).initializer
    np.testing.assert_array_equal(numpy_helper.to_array(got[0]), W)
    np.testing.assert_array_equal(numpy_helper.to_array(got[1]), v)
    assert external_refs(loaded) == []


def test_checks_run_before_any_byte_is_read(tmp_path, layout):
    """The first tensor is fine, the second escapes: nothing at all is read."""
    model, _ = build("initializer", None)
    model.graph.initializer.append(numpy_helper.from_array(W, "w2"))
    external(model.graph.initializer[0], "w.bin")
    external(model.graph.initializer[1], str(layout.parent_secret))
    (tmp_path / "w.bin").write_bytes(W.tobytes())
    w = OpenWatch(tmp_path / "w.bin", layout.parent_secret)
    try:
        with pytest.raises(ExternalDataError, match="absolute"):
            check_external_data(model, tmp_path, "m")
        with pytest.raises(ExternalDataError, match="absolute"):
            load_external_data(model, tmp_path, "m")
        assert w.events() == []
    finally:
        w.close()


def test_a_model_file_reached_through_a_symlink_reads_its_real_folder(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "weights.bin").write_bytes(W.tobytes())
    (real / "model.onnx").write_bytes(build("If/1", "weights.bin")[0].SerializeToString())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "weights.bin").write_bytes(SECRET.tobytes())
    (elsewhere / "model.onnx").symlink_to(real / "model.onnx")
    loaded = load_model(elsewhere / "model.onnx")
    assert loaded.SerializeToString() == build("If/1", None)[0].SerializeToString()


# ---------------------------------------------------------------------------------------
# What onnxruntime could read besides tensors
# ---------------------------------------------------------------------------------------


def test_session_options_in_model_metadata_never_reach_onnxruntime():
    model, _ = build("initializer", None)
    helper.set_model_props(model, {"ort_config": '{"session_options": '
                                                 '{"enable_profiling": 1}}', "author": "me"})
    loaded = load_model(model.SerializeToString())
    assert {p.key: p.value for p in loaded.metadata_props} == {"author": "me"}
    with pytest.raises(ModelError, match="ort_config"):  # a ModelProto built in Python
        analyze_layers(model, {"x": np.zeros((8, 4), np.float32)}, labels=np.arange(8) % 2,
                       layers=["y"])


def test_fields_unknown_to_onnx_are_dropped_before_anything_runs():
    model, _ = build("If/1", None)
    data = model.SerializeToString()
    # field 99, length-delimited, 3 bytes: unknown to the schema, kept by a plain parse
    unknown = bytes([(99 << 3 | 2) & 0x7F | 0x80, (99 << 3 | 2) >> 7, 3]) + b"abc"
    plain = onnx.ModelProto()
    plain.ParseFromString(data + unknown)
    assert plain.SerializeToString() != data
    assert load_model(data + unknown).SerializeToString() == data
