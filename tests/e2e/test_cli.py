"""The `layerscope indices` and `layerscope demo` commands, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import rank as H
from helpers import server as F
from helpers.server import embedded_server_fixture

from layerscope.client.cli import main

embedded_server = embedded_server_fixture("cli-data")


@pytest.fixture
def cls_files(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) * 7 - 2  # labels -2 and 5
    xt = rng.normal(size=(40, 6)).astype(np.float32)
    yt = (xt[:, 0] > 0).astype(np.int64) * 7 - 2
    train, test = tmp_path / "train.npz", tmp_path / "test.npz"
    np.savez(train, features=x, labels=y)
    np.savez(test, features=xt, labels=yt)
    return train, test, x, y


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes of each chunk the client sends (uploads and ComputeIndices), as they go."""
    import layerscope.client.client as client_module

    counts: list[int] = []
    chunk_requests = client_module._chunk_requests

    def counted(message, pieces, *rest):
        for req in chunk_requests(message, pieces, *rest):
            counts.append(len(req.chunk.data))
            yield req

    monkeypatch.setattr(client_module, "_chunk_requests", counted)
    return counts


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_uses_canonical_names_and_string_keys(cls_files, capsys):
    train, test, x, y = cls_files
    code, out, _ = run_cli(["indices", str(train), "--test", str(test), "--orders", "1,5",
                            "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    assert res["task"] == "classification"
    assert res["si"] == pytest.approx(H.si(x, y), abs=0)
    assert set(res["high_order_si"]) == {"1", "5"}
    assert set(res["si_per_class"]) == {"-2", "5"}
    assert set(res["high_order_si_per_class"]["5"]) == {"-2", "5"}
    assert {"si", "high_order_si", "soft_order_si", "anti_si", "center_si"} <= set(res["cross"])
    assert res["options"]["orders"] == [1, 5]


def test_table_output_lists_train_and_test_columns(cls_files, capsys):
    train, test, _, _ = cls_files
    code, out, _ = run_cli(["indices", str(train), "--test", str(test), "--per-class"], capsys)
    assert code == 0
    assert "train" in out and "test" in out
    assert "high_order_si[5]" in out
    assert "per class (train):" in out


def test_regression_file_gives_smi_family(tmp_path, capsys):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(80, 3))
    path = tmp_path / "reg.npz"
    np.savez(path, features=x, targets=x[:, 0] * 2.0 + 0.1 * rng.normal(size=80))
    code, out, _ = run_cli(["indices", str(path), "--json", "--orders", "1,3"], capsys)
    assert code == 0
    res = json.loads(out)
    assert res["task"] == "regression"
    assert res["smi_linear"] == res["high_order_smi_linear"]["1"]
    assert 0.0 <= res["smi_exp"] <= 1.0


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"feats": np.zeros((5, 2)), "labels": np.arange(5)}, "missing array 'features'"),
        ({"features": np.zeros((5, 2))}, "'labels' or 'targets'"),
        ({"features": np.zeros((5, 2)), "labels": np.arange(4)}, "has 4 samples but"),
        ({"features": np.zeros((5, 2)), "labels": np.zeros(5)}, "integer"),
    ],
)
def test_bad_data_file_exits_2_with_the_problem_named(tmp_path, capsys, arrays, needle):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    code, _, err = run_cli(["indices", str(path)], capsys)
    assert code == 2
    assert needle in err


def test_nan_features_are_reported_with_count_and_first_index(tmp_path, capsys):
    x = np.ones((6, 3))
    x[4, 1] = np.nan
    x[5, 0] = np.inf
    path = tmp_path / "nan.npz"
    np.savez(path, features=x, labels=np.arange(6) % 2)
    code, _, err = run_cli(["indices", str(path)], capsys)
    assert code == 2
    assert "2 non-finite" in err and "sample 4, feature 1" in err


def test_pickled_npz_is_refused(tmp_path, capsys):
    path = tmp_path / "pickled.npz"
    obj = np.empty(3, dtype=object)
    obj[:] = [1, "a", None]
    np.savez(path, features=obj, labels=np.arange(3))
    code, _, err = run_cli(["indices", str(path)], capsys)
    assert code == 2
    assert "pickle" in err


def test_not_an_npz_file_is_reported(tmp_path, capsys):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"this is not a zip archive")
    code, _, err = run_cli(["indices", str(path)], capsys)
    assert code == 2
    assert "is not an .npz archive" in err
    assert "pickle" not in err  # a text file is not "pickled data"


def test_missing_file_is_reported(tmp_path, capsys):
    code, _, err = run_cli(["indices", str(tmp_path / "nope.npz")], capsys)
    assert code == 2
    assert "no such file" in err


def test_test_set_of_other_width_is_refused(cls_files, tmp_path, capsys):
    train, _, _, _ = cls_files
    other = tmp_path / "other.npz"
    np.savez(other, features=np.zeros((4, 9), np.float32), labels=np.array([-2, 5, 5, -2]))
    code, _, err = run_cli(["indices", str(train), "--test", str(other)], capsys)
    assert code == 2
    assert "9 features" in err and "6" in err


def test_test_set_of_other_task_is_refused(cls_files, tmp_path, capsys):
    train, _, _, _ = cls_files
    other = tmp_path / "reg.npz"
    np.savez(other, features=np.zeros((4, 6), np.float32), targets=np.zeros(4))
    code, _, err = run_cli(["indices", str(train), "--test", str(other)], capsys)
    assert code == 2
    assert "same task" in err


def labelled_pair(folder: Path, stem: str, seed: int, m: int, mt: int, d: int, classes: int,
                  **extra: np.ndarray
                  ) -> tuple[Path, Path, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A training and a test .npz of random features and labels (``extra`` arrays beside
    the training ones): ``(train, test, x, y, xt, yt)``."""
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(m, d)), rng.integers(0, classes, m)
    xt, yt = rng.normal(size=(mt, d)), rng.integers(0, classes, mt)
    path, test = folder / f"{stem}.npz", folder / f"{stem}-test.npz"
    np.savez(path, features=x, labels=y, **extra)
    np.savez(test, features=xt, labels=yt)
    return path, test, x, y, xt, yt


def test_data_indexed_again_is_not_sent_again(tmp_path, capsys, sent):
    """The first `indices` on a file uploads its features and labels (an .npz's other
    arrays stay home) and indexes them by id; later runs, with other options or a test set
    beside, send the header alone. Each answer is checked against brute force."""
    path, test, x, y, xt, yt = labelled_pair(tmp_path, "again", 8, 90, 30, 4, 3,
                                             ids=np.arange(90))

    code, out, _ = run_cli(["indices", str(path), "--json"], capsys)
    assert code == 0 and json.loads(out)["si"] == pytest.approx(H.si(x, y), abs=0)
    assert sum(sent) == x.nbytes + y.nbytes  # the ids array is not part of the data
    sent.clear()
    code, out, _ = run_cli(["indices", str(path), "--json", "--orders", "3"], capsys)
    res = json.loads(out)
    assert code == 0 and sent == []
    assert res["high_order_si"]["3"] == pytest.approx(H.high_order_si(x, y, 3), abs=0)
    code, out, _ = run_cli(["indices", str(path), "--test", str(test), "--json"], capsys)
    assert code == 0 and sum(sent) == xt.nbytes + yt.nbytes  # the test set, once
    assert json.loads(out)["cross"]["si"] == pytest.approx(F.brute_si(x, y, xt, yt), abs=0)
    sent.clear()
    code, out, _ = run_cli(["indices", str(path), "--test", str(test), "--json"], capsys)
    assert code == 0 and sent == []


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Files count as settled at once (no wait for SETTLED_NS); the files read, by path."""
    import layerscope.client.cli as cli_module
    import layerscope.client.remembered as remembered_module

    monkeypatch.setattr(remembered_module, "SETTLED_NS", 0)
    read: list[str] = []
    read_data = cli_module.read_data

    def counted(args, path, *rest, **kw):
        read.append(str(path))
        return read_data(args, path, *rest, **kw)

    monkeypatch.setattr(cli_module, "read_data", counted)
    return read


def test_an_unchanged_file_is_not_read_again(tmp_path, capsys, sent, settled,
                                             embedded_server):
    """A file stored by `indices` is remembered: run again while unchanged, the command
    names its dataset without reading it. Changed (even to the same size and mtime), it is
    read and its new values indexed; its dataset deleted, it is read and stored again."""
    path, test, x, y, xt, yt = labelled_pair(tmp_path, "kept", 12, 80, 25, 4, 3)

    def si(*flags):
        code, out, err = run_cli(["indices", str(path), *flags, "--json"], capsys)
        assert code == 0, err
        return json.loads(out)

    assert si()["si"] == pytest.approx(H.si(x, y), abs=0)
    assert settled == [str(path)] and sum(sent) == x.nbytes + y.nbytes
    settled.clear()
    sent.clear()
    res = si("--orders", "2", "--test", str(test))
    assert settled == [str(path), str(test)]  # the test file is new: both read, once
    assert res["cross"]["si"] == pytest.approx(F.brute_si(x, y, xt, yt), abs=0)
    settled.clear()
    sent.clear()
    for flags in ([], ["--test", str(test)]):
        res = si(*flags)
        assert settled == [] and sent == []  # not read, not sent
        assert res["si"] == pytest.approx(H.si(x, y), abs=0)
    assert res["cross"]["si"] == pytest.approx(F.brute_si(x, y, xt, yt), abs=0)

    st = os.stat(path)
    time.sleep(0.05)  # past the clock's tick
    y2 = (y + 1) % 3
    np.savez(path, features=x, labels=y2)  # same size: only the labels differ
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size
    assert si()["si"] == pytest.approx(H.si(x, y2), abs=0)
    assert settled == [str(path)] and sum(sent) == x.nbytes + y2.nbytes
    settled.clear()
    sent.clear()

    for d in embedded_server.datasets():  # someone's `datasets delete`
        embedded_server.delete_dataset(d)
    assert si()["si"] == pytest.approx(H.si(x, y2), abs=0)
    assert settled == [str(path)] and sum(sent) == x.nbytes + y2.nbytes
    settled.clear()
    assert si()["si"] == pytest.approx(H.si(x, y2), abs=0)
    assert settled == []


def test_remembered_files_that_do_not_fit_together_are_refused_as_when_read(
        cls_files, tmp_path, capsys, settled):
    """Two files remembered from runs of their own, never checked together. Of another
    width: the server refuses the pair by id, naming both widths, as it does when the
    files are read (nothing is read). Of another task: the command reads them, so that the
    error names the file, as always."""
    train, _, _, _ = cls_files
    wide, reg = tmp_path / "wide.npz", tmp_path / "reg.npz"
    np.savez(wide, features=np.zeros((4, 9), np.float32), labels=np.array([-2, 5, 5, -2]))
    np.savez(reg, features=np.ones((5, 6), np.float32), targets=np.arange(5.0))
    for f in (train, wide, reg, train, wide, reg):
        assert run_cli(["indices", str(f), "--json"], capsys)[0] == 0
    assert settled == [str(train), str(wide), str(reg)]
    settled.clear()
    code, _, err = run_cli(["indices", str(train), "--test", str(wide)], capsys)
    assert code == 2
    assert "9 features" in err and "6" in err
    assert settled == []
    code, _, err = run_cli(["indices", str(train), "--test", str(reg)], capsys)
    assert code == 2
    assert "same task" in err and str(reg) in err
    assert settled == [str(train), str(reg)]


def test_npy_pairs_are_read_each_time(tmp_path, capsys, settled):
    """Only .npz files are remembered: an .npy pair's labels come from a second file."""
    rng = np.random.default_rng(13)
    x, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    for _ in range(2):
        code, out, err = run_cli(["indices", str(tmp_path / "x.npy"), "--labels",
                                  str(tmp_path / "y.npy"), "--json"], capsys)
        assert code == 0, err
        assert json.loads(out)["si"] == pytest.approx(H.si(x, y), abs=0)
    assert len(settled) == 2


def test_no_store_sends_the_arrays_each_time_and_stores_nothing(tmp_path, capsys, sent,
                                                                embedded_server):
    path, test, x, y, xt, yt = labelled_pair(tmp_path, "once", 9, 70, 20, 3, 4)
    before = {d.id for d in embedded_server.datasets()}
    for _ in range(2):
        code, out, _ = run_cli(["indices", str(path), "--test", str(test), "--no-store",
                                "--json"], capsys)
        res = json.loads(out)
        assert code == 0 and sum(sent) == x.nbytes + y.nbytes + xt.nbytes + yt.nbytes
        assert res["si"] == pytest.approx(H.si(x, y), abs=0)
        assert res["cross"]["si"] == pytest.approx(F.brute_si(x, y, xt, yt), abs=0)
        sent.clear()
    assert {d.id for d in embedded_server.datasets()} == before


def _server_address() -> str:
    from layerscope.local import read_announcement

    found = read_announcement(Path(os.environ["LAYERSCOPE_DATA_DIR"]))
    assert found is not None
    return found.address


def test_with_server_the_arrays_go_with_the_call_unless_store(tmp_path, capsys, sent,
                                                              embedded_server):
    """A --server keeps nothing by default (a shared server's datasets are visible to its
    other users); --store keeps the data there, once."""
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(50, 3)), rng.integers(0, 3, 50)
    path = tmp_path / "remote.npz"
    np.savez(path, features=x, labels=y)
    before = {d.id for d in embedded_server.datasets()}
    server = ["--server", _server_address()]
    for flags, stored in (([], False), ([], False), (["--store"], True), (["--store"], True)):
        code, out, _ = run_cli(["indices", str(path), *server, *flags, "--json"], capsys)
        assert code == 0 and json.loads(out)["si"] == pytest.approx(H.si(x, y), abs=0)
        new = {d.id for d in embedded_server.datasets()} - before
        assert len(new) == stored, flags
        sent.clear()
    code, _, _ = run_cli(["indices", str(path), *server, "--store", "--json"], capsys)
    assert code == 0 and sent == []  # stored by the --store run before


@pytest.mark.parametrize("kind", ["labels (m, 1)", "integer targets"])
def test_data_a_dataset_cannot_hold_is_sent_with_the_call(tmp_path, capsys, embedded_server,
                                                         kind):
    """The engine takes (m, 1) labels and integer targets; a stored dataset does not (1-D
    integer labels, float targets): such a file is indexed as before, its arrays sent."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(60, 3))
    path = tmp_path / "odd.npz"
    before = {d.id for d in embedded_server.datasets()}
    if kind == "labels (m, 1)":
        y = rng.integers(0, 3, 60)
        np.savez(path, features=x, labels=y[:, None])
        code, out, err = run_cli(["indices", str(path), "--json"], capsys)
        assert code == 0, err
        assert json.loads(out)["si"] == pytest.approx(H.si(x, y), abs=0)
    else:
        t = rng.integers(0, 5, 60)
        np.savez(path, features=x, targets=t)
        code, out, err = run_cli(["indices", str(path), "--json"], capsys)
        assert code == 0, err
        assert json.loads(out)["smi_linear"] == pytest.approx(H.smi_linear(x, t), abs=1e-12)
    assert {d.id for d in embedded_server.datasets()} == before


def test_a_server_without_stored_indices_gets_the_arrays(cls_files, capsys, monkeypatch):
    """A server from before ComputeIndicesHeader.dataset_id sees a header without tensors
    and refuses it; the command then sends the arrays with the call."""
    from layerscope.client.client import Client, LayerscopeError
    from layerscope.client.results import Dataset

    train, _, x, y = cls_files
    compute = Client.compute_indices
    refused = []

    def old_server(self, features, *args, **kwargs):
        if isinstance(features, Dataset):
            refused.append(features.id)
            raise LayerscopeError("INVALID_ARGUMENT", "ComputeIndices tensors must be named "
                                  "among [...] with 'features' present; got []")
        return compute(self, features, *args, **kwargs)

    monkeypatch.setattr(Client, "compute_indices", old_server)
    code, out, err = run_cli(["indices", str(train), "--json"], capsys)
    assert code == 0, err
    assert refused and json.loads(out)["si"] == pytest.approx(H.si(x, y), abs=0)


def test_a_dataset_deleted_before_the_call_is_uploaded_again(cls_files, capsys, monkeypatch,
                                                             embedded_server):
    from layerscope.client.client import Client

    train, _, x, y = cls_files
    upload = Client.upload_source
    uploads = []

    def deleted_at_once(self, source, *args, **kwargs):
        stored = upload(self, source, *args, **kwargs)
        uploads.append(stored.id)
        if len(uploads) == 1:
            embedded_server.delete_dataset(stored)  # someone else's `datasets delete`
        return stored

    monkeypatch.setattr(Client, "upload_source", deleted_at_once)
    code, out, err = run_cli(["indices", str(train), "--json"], capsys)
    assert code == 0, err
    assert len(uploads) == 2 and uploads[0] == uploads[1]
    assert json.loads(out)["si"] == pytest.approx(H.si(x, y), abs=0)


def test_order_too_large_exits_2(cls_files, capsys):
    train, _, _, _ = cls_files
    code, _, err = run_cli(["indices", str(train), "--orders", "500"], capsys)
    assert code == 2
    assert "order 500" in err


def test_demo_trains_exports_and_analyses_digits(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    code, out, _ = run_cli(["demo", "--out", str(out_dir)], capsys)
    assert code == 0
    for name in ("digits-mlp.onnx", "digits-train.npz", "digits-test.npz", "result.json",
                 "layers.png"):
        assert (out_dir / name).is_file(), name
    res = json.loads((out_dir / "result.json").read_text())
    kinds = [la["kind"] for la in res["layers"]]
    assert kinds[0] == "input" and "layer" in kinds
    assert all("cross" in la and "probe" in la for la in res["layers"])
    with np.load(out_dir / "digits-train.npz") as f:
        expected = H.si(f["inputs"], f["labels"])
    assert res["layers"][0]["si"] == pytest.approx(expected, abs=0)
    assert "stops improving" in out


def test_demo_reuses_the_trained_model(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    assert run_cli(["demo", "--out", str(out_dir)], capsys)[0] == 0
    first = (out_dir / "digits-mlp.onnx").stat().st_mtime_ns
    assert run_cli(["demo", "--out", str(out_dir)], capsys)[0] == 0
    assert (out_dir / "digits-mlp.onnx").stat().st_mtime_ns == first


def test_installed_entry_point_runs(cls_files):
    train, _, _, _ = cls_files
    exe = Path(sys.executable).with_name("layerscope")
    proc = subprocess.run([str(exe), "indices", str(train), "--json"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["task"] == "classification"


def test_demo_model_goes_through_our_exporter_with_hidden_layer_names(tmp_path, capsys):
    """docs/exporters.md: MLP hidden activations are named hidden1, hidden2 (not the
    converter's next_activations)."""
    out_dir = tmp_path / "demo"
    code, out, _ = run_cli(["demo", "--out", str(out_dir), "--json"], capsys)
    assert code == 0
    names = [la["name"] for la in json.loads(out)["layers"]]
    assert "hidden1" in names and "hidden2" in names
    assert not any(n.startswith("next_activations") for n in names)
