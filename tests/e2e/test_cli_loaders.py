"""Data files in through the CLI, end to end: .npy pairs, CSV, Parquet and image folders
reach the server as the same numbers; broken files exit 2 naming the file and row, and
nothing is uploaded; the management commands list, upload and delete."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import models as M
from helpers import rank as H
from helpers.server import ServerProcess, embedded_server_fixture

from layerscope.client.cli import main

pa = pytest.importorskip("pyarrow", reason="the Parquet loader reads with pyarrow")
pq = pytest.importorskip("pyarrow.parquet", reason="the Parquet loader reads with pyarrow")
Image = pytest.importorskip("PIL.Image", reason="the image loader decodes with Pillow")

pytestmark = pytest.mark.timeout(300)
embedded_server = embedded_server_fixture("loaders-data")


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def table() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return x, y


def si_of(out: str) -> float:
    return float(json.loads(out)["si"])


def test_indices_of_a_csv_equal_the_reference_si(tmp_path, table, capsys):
    x, y = table
    p = tmp_path / "t.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["f0", "f1", "label", "f2", "f3"])
        for row, lab in zip(x, y, strict=True):
            w.writerow([repr(float(row[0])), repr(float(row[1])), int(lab),
                        repr(float(row[2])), repr(float(row[3]))])
    code, out, err = run_cli(["indices", str(p), "--label-column", "label", "--json"], capsys)
    assert code == 0, err
    assert si_of(out) == pytest.approx(H.si(x.astype(np.float64), y), abs=0)


def test_indices_of_a_parquet_file_equal_the_reference_si(tmp_path, table, capsys):
    x, y = table
    cols = {f"f{i}": x[:, i] for i in range(4)}
    pq.write_table(pa.table({**cols, "cls": y}), tmp_path / "t.parquet", row_group_size=16)
    code, out, err = run_cli(["indices", str(tmp_path / "t.parquet"), "--label-column", "cls",
                              "--json"], capsys)
    assert code == 0, err
    assert si_of(out) == pytest.approx(H.si(x.astype(np.float64), y), abs=0)


def test_indices_of_an_npy_pair_equal_the_reference_si(tmp_path, table, capsys):
    x, y = table
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    code, out, err = run_cli(["indices", str(tmp_path / "x.npy"), "--labels",
                              str(tmp_path / "y.npy"), "--json"], capsys)
    assert code == 0, err
    assert si_of(out) == pytest.approx(H.si(x.astype(np.float64), y), abs=0)


def test_an_npy_without_labels_exits_2_with_the_way_to_give_them(tmp_path, table, capsys):
    np.save(tmp_path / "x.npy", table[0])
    code, _, err = run_cli(["indices", str(tmp_path / "x.npy")], capsys)
    assert code == 2
    assert "x.npy" in err and "--labels LABELS.npy" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> M.Built:
    return M.build_cnn(tmp_path_factory.mktemp("cnn"), epochs=5)


def write_digit_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """PNG files (8x8 grayscale) in class folders named 0..9; the uint8 pixels in the order
    the folder is read (class folder, then file name)."""
    order = []
    for i, (im, lab) in enumerate(zip(images, labels, strict=True)):
        folder = root / f"{lab}"
        folder.mkdir(parents=True, exist_ok=True)
        px = np.round(im[0] * 255).astype(np.uint8)
        Image.fromarray(px).save(folder / f"{i:05d}.png")
        order.append((str(lab), f"{i:05d}", px, lab))
    order.sort(key=lambda t: (t[0], t[1]))
    return np.stack([o[2] for o in order]), np.array([o[3] for o in order])


def test_analyze_an_image_folder_equals_the_same_pixels_as_npz(tmp_path, cnn, capsys):
    x = np.clip(cnn.train["image"][:120], 0, 1)
    y = cnn.y[:120]
    px, labels = write_digit_folder(tmp_path / "train", x, y)
    ref = tmp_path / "ref.npz"
    np.savez(ref, image=(px.astype(np.float32) / 255)[:, None], labels=labels)
    code, out, err = run_cli(["analyze", str(cnn.path), "--data", str(tmp_path / "train"),
                              "--json"], capsys)
    assert code == 0, err
    assert "centre-crop 8x8" in err and "layout NCHW" in err and "grayscale" in err
    code, ref_out, err = run_cli(["analyze", str(cnn.path), "--data", str(ref), "--json"],
                                 capsys)
    assert code == 0, err
    got = {la["name"]: la["si"] for la in json.loads(out)["layers"]}
    want = {la["name"]: la["si"] for la in json.loads(ref_out)["layers"]}
    assert got == want and len(got) > 2
    pixels = px.reshape(len(px), -1).astype(np.float64) / 255  # the input layer: the pixels
    assert got["image"] == pytest.approx(H.si(pixels, labels), abs=0)


# broken files: exit 2, the file and row named, nothing uploaded -------------------------
def _broken_image_folder(tmp: Path) -> tuple[list[str], str]:
    root = tmp / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((6, 6, 3), 40 * i, np.uint8)).save(root / c / f"{i}.jpg")
    (root / "b" / "2.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return [str(root), "--image-size", "6"], "b/2.jpg: not a readable image"


def _ragged_csv(tmp: Path) -> tuple[list[str], str]:
    p = tmp / "r.csv"
    p.write_text("a,b,label\n1,2,0\n3,4,1\n5,6\n7,8,1\n")
    return [str(p), "--label-column", "label"], "r.csv: row 4 has 2 fields"


def _csv_without_label(tmp: Path) -> tuple[list[str], str]:
    p = tmp / "n.csv"
    p.write_text("a,b\n1,2\n")
    return [str(p), "--label-column", "label"], "n.csv: no column 'label'"


def _parquet_with_text(tmp: Path) -> tuple[list[str], str]:
    pq.write_table(pa.table({"a": [1.0, 2.0], "city": ["x", "y"], "y": [0, 1]}),
                   tmp / "s.parquet")
    return [str(tmp / "s.parquet"), "--label-column", "y"], "column 'city' is string"


@pytest.mark.parametrize("broken", [_broken_image_folder, _ragged_csv, _csv_without_label,
                                    _parquet_with_text])
def test_a_broken_file_exits_2_naming_it_and_uploads_nothing(tmp_path, broken, capsys,
                                                            embedded_server):
    before = [d.id for d in embedded_server.datasets()]
    args, message = broken(tmp_path)
    code, out, err = run_cli(["datasets", "upload", *args], capsys)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert [d.id for d in embedded_server.datasets()] == before


# management -----------------------------------------------------------------------------
def test_datasets_upload_list_and_delete(tmp_path, table, capsys, embedded_server):
    x, y = table
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "y": y}), tmp_path / "m.parquet")
    code, out, err = run_cli(["datasets", "upload", str(tmp_path / "m.parquet"),
                              "--label-column", "y", "--json"], capsys)
    assert code == 0, err
    ds = json.loads(out)["dataset"]
    assert (ds["n_samples"], ds["name"], ds["task"]) == (80, "m.parquet", "classification")
    code, out, _ = run_cli(["datasets", "list"], capsys)
    assert code == 0 and ds["id"] in out and "m.parquet" in out
    code, out, _ = run_cli(["datasets", "delete", ds["id"]], capsys)
    assert code == 0
    assert ds["id"] not in [d.id for d in embedded_server.datasets()]
    code, _, err = run_cli(["datasets", "delete", ds["id"]], capsys)
    assert code == 2 and "NOT_FOUND" in err


def test_models_list_and_delete_and_jobs_list(tmp_path, capsys, embedded_server):
    model = H.selection_mlp(4, [0, 1])
    path = tmp_path / "sel.onnx"
    path.write_bytes(model.SerializeToString())
    stored = embedded_server.upload_model(path)
    code, out, _ = run_cli(["models"], capsys)
    assert code == 0 and stored.id in out and "sel.onnx" in out
    code, out, _ = run_cli(["jobs", "--json"], capsys)
    assert code == 0 and isinstance(json.loads(out)["jobs"], list)
    code, _, _ = run_cli(["models", "delete", stored.id], capsys)
    assert code == 0
    assert stored.id not in [m.id for m in embedded_server.models()]
    code, _, err = run_cli(["jobs", "cancel"], capsys)
    assert code == 2 and "needs the job's id" in err


# memory: a dataset far larger than the client's memory use ------------------------------
PEAK_SCRIPT = """
import sys
from layerscope.client.cli import main
code = main(sys.argv[1:])
for line in open('/proc/self/status'):
    if line.startswith('VmHWM'):
        print('PEAK_KIB', line.split()[1], file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.timeout(900)
def test_a_several_gb_image_folder_uploads_with_bounded_client_memory(tmp_path):
    """1200 tiny PNGs that decode to 3 x 512 x 512 float32 each: 3.8 GB of tensor data. The
    client process's peak RSS must stay a small fraction of it."""
    root = tmp_path / "big"
    n = 1200
    for i in range(n):
        folder = root / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), i % 251, np.uint8)).save(folder / f"{i:05d}.png")
    data_bytes = n * 3 * 512 * 512 * 4
    with ServerProcess(tmp_path / "data", "--max-upload-mb", "8192") as server:
        proc = subprocess.run(
            [sys.executable, "-c", PEAK_SCRIPT, "datasets", "upload", str(root),
             "--image-size", "512", "--json", "--server", server.address],
            capture_output=True, text=True, env=dict(os.environ), check=False)
        assert proc.returncode == 0, proc.stderr
        ds = json.loads(proc.stdout)["dataset"]
        assert ds["n_samples"] == n and ds["size_bytes"] >= data_bytes
        peak_kib = int(proc.stderr.split("PEAK_KIB")[1].split()[0])
        assert peak_kib * 1024 < data_bytes / 10, (peak_kib, data_bytes)
        server.stop()


def documented_stages() -> set[str]:
    """The job stages docs/api.md lists (the sentence that starts 'stage (')."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    listed = text.split("stage (", 1)[1].split(")", 1)[0]
    import re

    return set(re.findall(r"`([^`]+)`", listed))


def test_jobs_watch_follows_a_job_to_its_end_through_documented_stages(cnn, capsys,
                                                                       embedded_server):
    model = embedded_server.upload_model(cnn.path)
    data = embedded_server.upload_dataset({"image": cnn.train["image"][:60]},
                                          labels=cnn.y[:60])
    job = embedded_server.start_layer_analysis(model, data)
    stages = {str(j.progress.get("stage")) for j in embedded_server.watch(job)
              if j.progress.get("stage")}
    assert "done" in stages
    assert stages <= documented_stages(), stages - documented_stages()
    code, out, err = run_cli(["jobs", "watch", job.id, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["job"]["state"] == "succeeded"
    code, out, _ = run_cli(["jobs"], capsys)
    assert job.id in out and "succeeded" in out


def test_the_progress_bar_ends_on_the_final_stage_at_100_percent(cnn, capsys,
                                                                 embedded_server):
    embedded_server.analyze_layers(cnn.path, {"image": cnn.train["image"][:50]},
                                   labels=cnn.y[:50], progress=True)
    err = capsys.readouterr().err
    final = err.rstrip("\n").split("\r")[-1]
    assert final.startswith("done") and "100.0%" in final, final
    assert "0/1" not in final


def test_a_parquet_upload_shows_reading_and_uploading_with_an_eta(tmp_path, table, capsys,
                                                                  embedded_server):
    from layerscope.client.loaders import Columns, open_source

    x, y = table
    pq.write_table(pa.table({"a": x[:, 0], "y": y}), tmp_path / "p.parquet")
    source = open_source(tmp_path / "p.parquet", columns=Columns(label="y"))
    embedded_server.upload_source(source, progress=True)
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any(s.startswith("reading") and "100.0%" in s for s in lines)
    assert any(s.startswith("uploading") and "100.0%" in s for s in lines)


def test_indices_show_the_upload_and_end_at_100_percent(table, capsys, embedded_server):
    x, y = table
    res = embedded_server.compute_indices(x, labels=y, progress=True)
    assert res.to_dict()["si"] == pytest.approx(H.si(x.astype(np.float64), y), abs=0)
    parts = capsys.readouterr().err.rstrip("\n").split("\r")
    assert any(p.startswith("uploading") for p in parts)
    assert parts[-1].startswith("indices") and "100.0%" in parts[-1]


def test_references_list_and_delete(cnn, capsys, embedded_server):
    model = embedded_server.upload_model(cnn.path)
    ref = embedded_server.build_reference(model, {"image": cnn.train["image"][:40]},
                                          labels=cnn.y[:40])
    code, out, _ = run_cli(["references", "--json"], capsys)
    assert code == 0
    listed = {r["id"]: r for r in json.loads(out)["references"]}
    assert listed[ref.id]["model_id"] == model.id and listed[ref.id]["n_samples"] == 40
    code, _, _ = run_cli(["references", "delete", ref.id], capsys)
    assert code == 0
    assert ref.id not in [r.id for r in embedded_server.references()]
    code, _, err = run_cli(["references", "delete", ref.id], capsys)
    assert code == 2 and "NOT_FOUND" in err
    with pytest.raises(Exception, match="NOT_FOUND"):
        embedded_server.certify(ref, np.zeros((1, listed[ref.id]["features"]), np.float32))


def test_layers_shows_parameters_per_layer_and_in_total(cnn, capsys):
    code, out, _ = run_cli(["layers", str(cnn.path), "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    total = sum(p.numel() for p in cnn.model.parameters())
    assert d["parameters"] == total
    fc1 = next(la for la in d["layers"] if la["name"] == "/fc1/Gemm_output_0")
    assert fc1["parameters"] == 256 * 64 + 64
    code, out, _ = run_cli(["layers", str(cnn.path)], capsys)
    assert f"parameters: {total:,} in total" in out and "16,448" in out


def test_the_regression_table_fits_100_columns_and_shows_every_value(tmp_path, capsys):
    """The SmI family has 20 columns at two orders: the table splits into panels of at
    most 100 characters, each value of the JSON result still shown."""
    import warnings

    from sklearn.neural_network import MLPRegressor

    from layerscope.exporters import export

    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 5)).astype(np.float32)
    y = (2 * x[:, 0] + np.sin(x[:, 1])).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg = MLPRegressor(hidden_layer_sizes=(8, 4), max_iter=100, random_state=0).fit(x, y)
    export(reg, x[:4], tmp_path / "reg.onnx")
    np.savez(tmp_path / "tr.npz", inputs=x[:120], targets=y[:120])
    np.savez(tmp_path / "te.npz", inputs=x[120:], targets=y[120:])
    argv = ["analyze", str(tmp_path / "reg.onnx"), "--data", str(tmp_path / "tr.npz"),
            "--test", str(tmp_path / "te.npz"), "--orders", "1,5", "--probe"]
    code, table, err = run_cli(argv, capsys)
    assert code == 0, err
    assert max(len(line) for line in table.splitlines()) <= 100
    code, out, _ = run_cli([*argv, "--json"], capsys)
    tokens = set(table.split())
    for la in json.loads(out)["layers"]:
        for key in ("smi_linear", "high_order_smi_linear", "anti_smi_exp"):
            values = la[key].values() if isinstance(la[key], dict) else [la[key]]
            for v in values:
                assert f"{v:.4f}" in tokens, (la["name"], key, v)
        assert f"{la['probe']['test_r2']:.4f}" in tokens
