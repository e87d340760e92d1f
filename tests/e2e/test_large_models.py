"""Models beyond 2 GB (issue 17): a model file and its external-data files travel as one
upload, are stored together and run in place, and the indices of each layer equal a NumPy
computation of the same layers from the same weight files.

The large fixture is a chain of 8192 x 8192 MatMul + Relu layers, 256 MiB of weights
each, 9 of them: 2.25 GiB of external data, generated in pieces and deleted afterwards.
Peak memory (VmHWM) of the server process and of a client process is measured and printed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from helpers import models as M
from helpers import reference as H
from helpers import server as F

from layerscope.protos.stubs import models_pb2

MIB = 1 << 20
BIG_D, BIG_LAYERS = 8192, 9  # 9 x 256 MiB = 2.25 GiB of weights


def vm_hwm_kib(pid: int | str = "self") -> int:
    """Peak resident memory of a process since it started (VmHWM), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def set_id(model_path: str, files: list[tuple[str, bytes | Path]]) -> str:
    """The id docs/large-models.md defines, computed here from the file bytes."""
    def sha(v: bytes | Path) -> str:
        return hashlib.sha256(v if isinstance(v, bytes) else v.read_bytes()).hexdigest()
    lines = ["layerscope-model-files-v1", f"model {model_path}"]
    lines += [f"{sha(v)} {p}" for p, v in sorted(files, key=lambda f: f[0])]
    return hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()


def labelled(n: int, d: int, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = rng.standard_normal((classes, d)) * 1.5
    x = (centres[y] + rng.standard_normal((n, d))).astype(np.float32)
    return x, y


@pytest.fixture
def server(tmp_path: Path) -> Iterator[F.ServerProcess]:
    with F.ServerProcess(tmp_path / "data") as srv:
        yield srv


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    """A small chain (32 wide, 3 layers) with its weights in weights/w{i}.bin."""
    return M.build_matmul_chain(tmp_path / "chain", 32, 3)


def set_folder(data_dir: Path, model_id: str) -> Path:
    return F.blob_path(data_dir, model_id)


# ---------------------------------------------------------------------------------------
# Small sets: the protocol, the store, the safety rules
# ---------------------------------------------------------------------------------------


def test_model_files_upload_as_one_set_whose_layers_equal_numpy(server, chain, tmp_path):
    x, y = labelled(60, 32)
    with server.client() as client:
        stored = client.upload_model(chain, files=True)
        files = [("model.onnx", chain)] + [(f"weights/w{i}.bin", chain.parent / f"weights/w{i}.bin")
                                           for i in range(3)]
        assert stored.id == set_id("model.onnx", files)
        assert stored.model_path == "model.onnx"
        assert [f[0] for f in stored.files] == [p for p, _ in files]
        assert stored.size_bytes == sum(p.stat().st_size for _, p in files)
        assert [la.name for la in stored.layers if la.auto] == ["h0", "h1", "h2"]
        assert stored.id in {m.id for m in client.models()}
        res = client.analyze_layers(stored, {"x": x}, labels=y)
    rows = {r["name"]: r for r in res.layers}
    for i, h in enumerate(M.chain_layers(chain.parent, x, 3)):
        assert rows[f"h{i}"]["si"] == pytest.approx(H.si(h, y), abs=0)
    # stored together: the set's folder holds every file at its path, byte for byte
    folder = set_folder(tmp_path / "data", stored.id)
    for path, local in files:
        assert (folder / path).read_bytes() == Path(local).read_bytes()


def test_uploading_the_same_files_again_sends_nothing(server, chain):
    with server.client() as client:
        first = client.upload_model(chain, files=True)
        sent: list[Any] = []
        real = client._models.UploadModelFiles
        client._models.UploadModelFiles = lambda reqs, **kw: sent.append(1) or real(reqs, **kw)
        again = client.upload_model(chain, files=True)
    assert again.id == first.id and sent == []


def test_deleting_a_set_removes_its_folder(server, chain, tmp_path):
    with server.client() as client:
        stored = client.upload_model(chain, files=True)
        folder = set_folder(tmp_path / "data", stored.id)
        assert (folder / "weights" / "w2.bin").is_file()
        client.delete_model(stored.id)
    assert not folder.exists()


def test_a_truncated_external_file_is_refused_naming_it(server, chain):
    w1 = chain.parent / "weights" / "w1.bin"
    with open(w1, "r+b") as f:
        f.truncate(w1.stat().st_size - 4)
    with server.client() as client, pytest.raises(ValueError) as exc:
        client.upload_model(chain, files=True)
    assert "weights/w1.bin" in str(exc.value) and "truncated" in str(exc.value)


def test_a_missing_external_file_is_refused_naming_it(server, chain):
    (chain.parent / "weights" / "w2.bin").unlink()
    with server.client() as client, pytest.raises(ValueError) as exc:
        client.upload_model(chain, files=True)
    assert "weights/w2.bin" in str(exc.value) and "does not exist" in str(exc.value)


def raw_upload(channel: grpc.Channel, files: list[tuple[str, bytes]],
               model_path: str = "model.onnx", sent: list[tuple[str, bytes]] | None = None,
               files_sha256: str | None = None) -> Any:
    """UploadModelFiles over a raw stub: the header declares ``files``, the chunks carry
    ``sent`` (the same by default)."""
    header = models_pb2.UploadModelFilesHeader(
        name="raw", model_path=model_path,
        files_sha256=files_sha256 or set_id(model_path, list(files)),
        files=[models_pb2.ModelFile(path=p, size_bytes=len(b),
                                    sha256=hashlib.sha256(b).hexdigest()) for p, b in files])
    reqs = [models_pb2.UploadModelFilesRequest(header=header)]
    for i, (_, data) in enumerate(sent if sent is not None else files):
        if data:
            reqs.append(models_pb2.UploadModelFilesRequest(
                chunk=models_pb2.FileChunk(file=i, offset=0, data=data)))
    return F.stubs(channel).models.UploadModelFiles(iter(reqs), timeout=60)


def chain_files(chain: Path) -> list[tuple[str, bytes]]:
    return [("model.onnx", chain.read_bytes())] + [
        (f"weights/w{i}.bin", (chain.parent / f"weights/w{i}.bin").read_bytes())
        for i in range(3)]


def assert_nothing_stored(data_dir: Path) -> None:
    assert F.tmp_uploads(data_dir) == []
    assert not [p for p in (data_dir / "blobs" / "sha256").glob("??/*")]


def test_server_refuses_a_set_missing_a_file_the_model_names(server, chain, tmp_path):
    files = [f for f in chain_files(chain) if f[0] != "weights/w1.bin"]
    with server.channel() as ch:
        code, msg = F.code_of(lambda: raw_upload(ch, files))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'weights/w1.bin'" in msg and "does not exist" in msg
    assert str(tmp_path) not in msg  # the server's folders are not told
    assert_nothing_stored(tmp_path / "data")


def test_server_refuses_a_file_whose_bytes_do_not_match_its_hash(server, chain, tmp_path):
    files = chain_files(chain)
    sent = [(p, b if p != "weights/w0.bin" else b[:-8] + bytes(8)) for p, b in files]
    with server.channel() as ch:
        code, msg = F.code_of(lambda: raw_upload(ch, files, sent=sent))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'weights/w0.bin'" in msg and "sha256" in msg
    assert_nothing_stored(tmp_path / "data")


@pytest.mark.parametrize("path", ["../w.bin", "/etc/w.bin", "weights/./w.bin", "a\\w.bin",
                                  "weights//w.bin", ""])
def test_server_refuses_paths_that_could_leave_the_set(server, chain, tmp_path, path):
    files = [*chain_files(chain), (path, b"1234")]
    with server.channel() as ch:
        code, msg = F.code_of(lambda: raw_upload(ch, files))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "header.files path" in msg
    assert_nothing_stored(tmp_path / "data")


def test_server_refuses_a_wrong_set_id(server, chain, tmp_path):
    with server.channel() as ch:
        code, msg = F.code_of(lambda: raw_upload(ch, chain_files(chain), files_sha256="0" * 64))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "files_sha256" in msg
    assert_nothing_stored(tmp_path / "data")


def test_a_set_above_the_size_limit_is_resource_exhausted(tmp_path, chain):
    with F.ServerProcess(tmp_path / "data", "--max-model-files-mb", "0.01") as srv, \
            srv.channel() as ch:
        code, msg = F.code_of(lambda: raw_upload(ch, chain_files(chain)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-model-files-mb" in msg
    assert_nothing_stored(tmp_path / "data")


def test_a_half_received_set_is_swept_when_the_server_starts(tmp_path):
    data = tmp_path / "data"
    with F.ServerProcess(data):
        pass
    left = data / "blobs" / "tmp" / "set-crashed" / "weights"
    left.mkdir(parents=True)
    (left / "w0.bin").write_bytes(b"half")
    with F.ServerProcess(data):
        assert not (data / "blobs" / "tmp" / "set-crashed").exists()


# ---------------------------------------------------------------------------------------
# Beyond 2 GB
# ---------------------------------------------------------------------------------------

UPLOAD_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from layerscope.client import Client
    with Client(sys.argv[1], timeout=None) as client:
        model = client.upload_model(Path(sys.argv[2]))
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    print(json.dumps({"id": model.id, "size": model.size_bytes, "files": len(model.files),
                      "vm_hwm_kib": hwm}))
""")


def upload_in_a_process(address: str, path: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", UPLOAD_SCRIPT, address, str(path)],
                         capture_output=True, text=True, timeout=1200, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture
def big_chain(tmp_path: Path) -> Iterator[Path]:
    free = shutil.disk_usage(tmp_path).free
    need = 2 * BIG_LAYERS * BIG_D * BIG_D * 4 + (1 << 30)  # the files and the store's copy
    if free < need:
        pytest.skip(f"needs {need >> 30} GiB of free disk in {tmp_path}; {free >> 30} free")
    path = M.build_matmul_chain(tmp_path / "big", BIG_D, BIG_LAYERS)
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_model_beyond_2gb_uploads_lists_and_analyses_in_bounded_memory(big_chain, tmp_path):
    external = sum(p.stat().st_size for p in (big_chain.parent / "weights").iterdir())
    assert external > 2 << 30
    x, y = labelled(48, BIG_D)
    data = tmp_path / "data"
    try:
        with F.ServerProcess(data) as srv:
            uploaded = upload_in_a_process(srv.address, big_chain)
            server_upload_kib = vm_hwm_kib(srv.pid)
            with srv.client(timeout=None) as client:
                assert uploaded["id"] in {m.id for m in client.models()}
                stored = client.get_model(uploaded["id"])
                assert stored.size_bytes == external + big_chain.stat().st_size
                assert len(stored.files) == BIG_LAYERS + 1
                res = client.analyze_layers(stored, {"x": x}, labels=y,
                                            layers=[f"h{i}" for i in range(BIG_LAYERS)])
            server_run_kib = vm_hwm_kib(srv.pid)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    rows = {r["name"]: r for r in res.layers}
    for i, h in enumerate(M.chain_layers(big_chain.parent, x, BIG_LAYERS)):
        assert rows[f"h{i}"]["si"] == pytest.approx(H.si(h, y), abs=0), f"h{i}"
    print(f"\nexternal data: {external / MIB:.0f} MiB in {BIG_LAYERS} files\n"
          f"client VmHWM (upload):            {uploaded['vm_hwm_kib'] / 1024:8.0f} MiB\n"
          f"server VmHWM (upload, describe):  {server_upload_kib / 1024:8.0f} MiB\n"
          f"server VmHWM (+ analysis, ORT):   {server_run_kib / 1024:8.0f} MiB")
    assert uploaded["vm_hwm_kib"] * 1024 < 0.25 * external
    assert server_upload_kib * 1024 < 0.25 * external
