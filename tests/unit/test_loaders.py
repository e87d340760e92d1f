"""The data loaders (client/loaders.py) on real files they did not write: Pillow-written
image folders, pyarrow-written Parquet, CSV with a header, .npy pairs; broken files name the
file and the row."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from layerscope.client.loaders import (
    Columns,
    ImageOptions,
    image_options_for,
    open_source,
)
from layerscope.client.npz import DataFileError, load_npz

Image = pytest.importorskip("PIL.Image", reason="the image loader decodes with Pillow")
pa = pytest.importorskip("pyarrow", reason="the Parquet loader reads with pyarrow")
pq = pytest.importorskip("pyarrow.parquet", reason="the Parquet loader reads with pyarrow")


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def image_folder(root: Path, n_per_class: int = 3, size: tuple[int, int] = (10, 8),
                 fmt: str = "PNG") -> dict[Path, np.ndarray]:
    """An ImageFolder tree of random RGB images; the pixels of each file by path."""
    rng = np.random.default_rng(0)
    pixels = {}
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            a = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            p = root / cls / f"{i}.{fmt.lower()}"
            Image.fromarray(a).save(p, fmt)
            pixels[p] = a
    return pixels


# .npy pairs -----------------------------------------------------------------------------
def test_npy_pair_gives_the_inputs_and_labels_as_saved(tmp_path):
    x = np.arange(24, dtype=np.float32).reshape(6, 2, 2)
    y = np.array([0, 1, 0, 1, 1, 0])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    arrays = open_source(tmp_path / "x.npy", labels=tmp_path / "y.npy").arrays()
    np.testing.assert_array_equal(arrays["inputs"], x)
    np.testing.assert_array_equal(arrays["labels"], y)


def test_npy_without_its_labels_says_how_to_give_them(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    with pytest.raises(DataFileError, match=r"x\.npy: .*--labels LABELS\.npy"):
        open_source(tmp_path / "x.npy")


def test_npy_pair_of_different_lengths_is_refused_naming_both(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    np.save(tmp_path / "y.npy", np.zeros(4))
    with pytest.raises(DataFileError, match=r"x\.npy and .*y\.npy: 3 inputs but 4 targets"):
        open_source(tmp_path / "x.npy", targets=tmp_path / "y.npy")


def test_npy_object_array_is_never_unpickled(tmp_path):
    np.save(tmp_path / "x.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(tmp_path / "y.npy", np.zeros(2))
    with pytest.raises(DataFileError, match="never loads pickles"):
        open_source(tmp_path / "x.npy", targets=tmp_path / "y.npy")


def test_a_text_file_named_npz_is_not_called_pickled(tmp_path):
    p = tmp_path / "data.npz"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(DataFileError) as err:
        load_npz(p)
    assert "pickle" not in str(err.value)
    assert "not an .npz archive" in str(err.value)


# CSV ------------------------------------------------------------------------------------
def test_csv_label_column_and_numeric_features(tmp_path):
    p = write_csv(tmp_path / "t.csv", ["a", "label", "b"],
                  [[1.5, 2, -1], [0.25, 0, 3], [2, 2, 4e3]])
    arrays = open_source(p, columns=Columns(label="label")).arrays()
    np.testing.assert_array_equal(arrays["inputs"],
                                  np.array([[1.5, -1], [0.25, 3], [2, 4e3]], np.float32))
    np.testing.assert_array_equal(arrays["labels"], [2, 0, 2])


def test_csv_class_names_are_coded_in_sorted_order_and_stated(tmp_path):
    p = write_csv(tmp_path / "t.csv", ["x", "species"],
                  [[1, "virginica"], [2, "setosa"], [3, "versicolor"], [4, "setosa"]])
    source = open_source(p, columns=Columns(label="species"))
    np.testing.assert_array_equal(source.arrays()["labels"], [2, 0, 1, 0])
    assert source.note == "classes: 0=setosa, 1=versicolor, 2=virginica"


def test_csv_target_column_is_float(tmp_path):
    p = write_csv(tmp_path / "t.csv", ["x", "y"], [[1, 0.5], [2, -1.25]])
    arrays = open_source(p, columns=Columns(target="y")).arrays()
    np.testing.assert_array_equal(arrays["targets"], np.array([0.5, -1.25], np.float32))


def test_csv_ragged_row_names_file_and_row(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("a,b,label\n1,2,0\n3,4\n5,6,1\n")
    with pytest.raises(DataFileError, match=r"t\.csv: row 3 has 2 fields; the header has 3"):
        open_source(p, columns=Columns(label="label"))


def test_csv_non_numeric_feature_names_column_and_row(tmp_path):
    p = write_csv(tmp_path / "t.csv", ["a", "city", "label"], [[1, 2, 0], [3, "Paris", 1]])
    with pytest.raises(DataFileError, match=r"row 3: column 'city' holds 'Paris', not a num"):
        open_source(p, columns=Columns(label="label"))


def test_csv_missing_label_column_lists_the_columns(tmp_path):
    p = write_csv(tmp_path / "t.csv", ["a", "b"], [[1, 2]])
    with pytest.raises(DataFileError, match=r"no column 'label' \(the columns: a, b\)"):
        open_source(p, columns=Columns(label="label"))


def test_table_needs_exactly_one_of_label_and_target_column(tmp_path):
    p = write_csv(tmp_path / "t.csv", ["a", "b"], [[1, 2]])
    with pytest.raises(DataFileError, match="--label-column NAME"):
        open_source(p)


# Parquet --------------------------------------------------------------------------------
def test_parquet_is_read_in_batches_to_the_same_arrays(tmp_path, monkeypatch):
    from layerscope.client import loaders

    monkeypatch.setattr(loaders, "ROWS_PER_CHUNK", 7)  # several batches, a short last one
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=30), rng.integers(-5, 5, size=30)
    y = rng.integers(0, 3, size=30)
    pq.write_table(pa.table({"a": a, "y": y, "b": b}), tmp_path / "t.parquet",
                   row_group_size=11)
    source = open_source(tmp_path / "t.parquet", columns=Columns(label="y"))
    blocks = list(source.blocks())
    assert max(len(b) for b in blocks[:-1]) <= 7 and len(blocks) >= 6  # batches, then labels
    arrays = source.arrays()
    np.testing.assert_array_equal(arrays["inputs"],
                                  np.stack([a, b], axis=1).astype(np.float32))
    np.testing.assert_array_equal(arrays["labels"], y)


def test_parquet_string_feature_is_refused_naming_the_column(tmp_path):
    pq.write_table(pa.table({"a": [1.0, 2.0], "name": ["x", "y"], "y": [0, 1]}),
                   tmp_path / "t.parquet")
    with pytest.raises(DataFileError, match=r"t\.parquet: column 'name' is string, not num"):
        open_source(tmp_path / "t.parquet", columns=Columns(label="y"))


def test_parquet_missing_target_column_lists_the_columns(tmp_path):
    pq.write_table(pa.table({"a": [1.0], "b": [2.0]}), tmp_path / "t.parquet")
    with pytest.raises(DataFileError, match=r"no column 'y' \(the columns: a, b\)"):
        open_source(tmp_path / "t.parquet", columns=Columns(target="y"))


def test_parquet_empty_feature_value_names_the_row(tmp_path):
    pq.write_table(pa.table({"a": [1.0, None, 3.0], "y": [0, 1, 0]}), tmp_path / "t.parquet")
    source = open_source(tmp_path / "t.parquet", columns=Columns(label="y"))
    with pytest.raises(DataFileError, match=r"row 1: column 'a' is empty"):
        source.arrays()


def test_a_corrupt_parquet_file_is_named(tmp_path):
    p = tmp_path / "t.parquet"
    p.write_bytes(b"PAR1" + b"\0" * 40)
    with pytest.raises(DataFileError, match=r"t\.parquet: not a readable Parquet file"):
        open_source(p, columns=Columns(label="y"))


# image folders --------------------------------------------------------------------------
def test_image_folder_labels_are_sorted_class_folders_and_pixels_scaled(tmp_path):
    pixels = image_folder(tmp_path / "imgs", size=(6, 6))
    o = ImageOptions(size=(6, 6), scale=0.5, mean=(1.0, 2.0, 3.0), std=(2.0,),
                     layout="NCHW")
    source = open_source(tmp_path / "imgs", images=o)
    arrays = source.arrays()
    files = sorted(pixels)  # cat/0..2, then dog/0..2
    want = np.stack([(pixels[f].astype(np.float64) * 0.5 - [1.0, 2.0, 3.0]) / 2.0
                     for f in files]).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(arrays["inputs"], want, rtol=1e-6)
    np.testing.assert_array_equal(arrays["labels"], [0, 0, 0, 1, 1, 1])
    assert source.classes == ("cat", "dog")


def test_image_folder_resizes_shorter_side_then_centre_crops(tmp_path):
    root = tmp_path / "imgs" / "a"
    root.mkdir(parents=True)
    a = np.arange(8 * 12, dtype=np.uint8).reshape(8, 12)  # height 8, width 12
    Image.fromarray(a).save(root / "0.png")
    o = ImageOptions(size=(8, 8), scale=1.0, layout="NHWC", channels=1)
    arrays = open_source(tmp_path / "imgs", images=o).arrays()
    np.testing.assert_array_equal(arrays["inputs"][0, :, :, 0], a[:, 2:10])  # no resize


def test_image_defaults_come_from_the_model_input_shape():
    nchw = image_options_for(["N", "3", "32", "24"], ImageOptions())
    assert (nchw.layout, nchw.channels, nchw.size) == ("NCHW", 3, (32, 24))
    nhwc = image_options_for(["batch", "28", "28", "1"], ImageOptions())
    assert (nhwc.layout, nhwc.channels, nhwc.size) == ("NHWC", 1, (28, 28))


def test_jpeg_folder_decodes_to_the_requested_layout(tmp_path):
    image_folder(tmp_path / "imgs", size=(16, 16), fmt="JPEG")
    o = image_options_for(["N", "16", "16", "3"], ImageOptions())
    arrays = open_source(tmp_path / "imgs", images=o).arrays()
    assert arrays["inputs"].shape == (6, 16, 16, 3)
    first = sorted((tmp_path / "imgs").rglob("*.jpeg"))[0]
    want = np.asarray(Image.open(first).convert("RGB"), np.float32) / 255
    np.testing.assert_allclose(arrays["inputs"][0], want, atol=1e-6)


def test_a_corrupt_image_is_named(tmp_path):
    image_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "dog" / "9.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    source = open_source(tmp_path / "imgs", images=ImageOptions(size=(4, 4)))
    with pytest.raises(DataFileError, match=r"dog/9\.jpg: not a readable image"):
        source.arrays()


def test_test_folder_with_an_unknown_class_is_refused(tmp_path):
    image_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "cow").mkdir()
    with pytest.raises(DataFileError, match=r"\['cow'\] are not among the training classes"):
        open_source(tmp_path / "imgs", images=ImageOptions(size=(4, 4)),
                    classes=["cat", "dog"])


def test_image_folder_without_a_size_asks_for_one(tmp_path):
    image_folder(tmp_path / "imgs")
    with pytest.raises(DataFileError, match="--image-size"):
        open_source(tmp_path / "imgs")


def test_progress_line_of_a_finished_job_is_its_final_stage_at_100_percent():
    from layerscope.client.progress import duration, job_line

    final = {"stage": "done", "fraction": 1.0, "remaining_seconds": 0.0}
    assert job_line(final, "succeeded") == ("done", 1.0, 0.0, "")
    running = {"stage": "extract:train", "done": 3, "total": 8, "fraction": 0.25,
               "remaining_seconds": 65.0, "layer": ""}
    assert job_line(running, "running") == ("extract:train", 0.25, 65.0, "3/8")
    assert (duration(65), duration(5), duration(3720)) == ("1m05s", "5s", "1h02m")


# Source.arrays ----------------------------------------------------------------------------
def test_an_npz_source_hands_back_its_arrays_without_a_copy(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    y = np.array([0, 1, 0, 1])
    np.savez(tmp_path / "d.npz", features=x, labels=y)
    source = open_source(tmp_path / "d.npz")
    first, second = source.arrays(), source.arrays()
    # the arrays read from the file, not a new concatenation per call
    assert np.shares_memory(first["features"], second["features"])
    assert np.shares_memory(first["labels"], second["labels"])
    np.testing.assert_array_equal(first["features"], x)
    np.testing.assert_array_equal(first["labels"], y)


def test_an_npz_source_holds_plain_arrays_as_their_bytes_and_the_others_as_arrays(tmp_path):
    from layerscope.client.rawarray import RawArray

    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    y = np.array([3, 1, 2, 0], dtype=">i4")  # big-endian: through NumPy, made little-endian
    np.savez(tmp_path / "d.npz", features=x, labels=y)
    source = open_source(tmp_path / "d.npz")
    held = source.tensors()
    assert isinstance(held["features"], RawArray) and held["features"].dtype == "float32"
    assert held["features"].view().tobytes() == x.tobytes()
    assert isinstance(held["labels"], np.ndarray) and held["labels"].dtype == np.dtype("<i4")
    assert source.specs == (("features", "float32", (4, 3)), ("labels", "int32", (4,)))
    assert source.size_bytes == x.nbytes + y.nbytes
    arrays = source.arrays()  # NumPy arrays over the same bytes
    assert isinstance(arrays["features"], np.ndarray)
    np.testing.assert_array_equal(arrays["features"], x)
    sent = b"".join(bytes(np.asarray(b).reshape(-1).view(np.uint8)) for b in source.blocks())
    assert sent == x.tobytes() + y.astype("<i4").tobytes()


def test_an_npz_source_of_big_endian_fortran_arrays_is_little_endian_c_order(tmp_path):
    x = np.asfortranarray(np.arange(12, dtype=">f8").reshape(4, 3))
    y = np.array([3, 1, 2, 0], dtype=">i4")
    np.savez(tmp_path / "d.npz", features=x, labels=y)
    arrays = open_source(tmp_path / "d.npz").arrays()
    assert arrays["features"].dtype == np.dtype("<f8") and arrays["features"].flags.c_contiguous
    assert arrays["labels"].dtype == np.dtype("<i4")
    np.testing.assert_array_equal(arrays["features"], np.arange(12.0).reshape(4, 3))
    np.testing.assert_array_equal(arrays["labels"], [3, 1, 2, 0])


def test_blocks_that_span_tensors_fill_each_array(tmp_path):
    from layerscope.client.loaders import Source

    x = np.arange(10, dtype=np.uint8).reshape(5, 2)  # 10 bytes
    y = np.array([7, 8, 9, 10, 11], dtype="<i8")     # 40 bytes
    raw = np.concatenate([x.reshape(-1), y.view(np.uint8)])
    pieces = [raw[:3], raw[3:25], raw[25:25], raw[25:]]  # one block ends x and starts y
    source = Source((("inputs", "uint8", (5, 2)), ("labels", "int64", (5,))),
                    lambda: iter(pieces), "labels")
    arrays = source.arrays()
    np.testing.assert_array_equal(arrays["inputs"], x)
    np.testing.assert_array_equal(arrays["labels"], y)
    short = Source(source.specs, lambda: iter(pieces[:2]), "labels")
    with pytest.raises(ValueError, match="fewer bytes than its specs"):
        short.arrays()
