"""The .npz reader (client/npz.py): stored members read straight into their arrays, compressed
ones through NumPy; values, dtypes and memory order as ``np.load`` gives them, and a broken
or hostile file refused with a message that names the file and the array."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from layerscope.client.npz import DataFileError, load_npz


def arrays_of_every_kind() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "features": rng.normal(size=(37, 5)).astype(np.float32),
        "labels": rng.integers(0, 4, 37),
        "big_endian": rng.normal(size=(6, 3)).astype(">f8"),
        "fortran": np.asfortranarray(rng.integers(-9, 9, size=(4, 7)).astype(np.int16)),
        "big_endian_fortran": np.asfortranarray(rng.normal(size=(3, 2, 4))).astype(">f4"),
        "complex": (rng.normal(size=5) + 1j * rng.normal(size=5)).astype(np.complex128),
        "flags": rng.integers(0, 2, 9).astype(bool),
        "scalar": np.array(3.5),
        "empty": np.zeros((0, 3), np.float32),
        "records": np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "<i4"), ("b", ">f8")]),
        # a field name outside latin-1: NumPy writes format 3.0, read through NumPy's reader
        "utf8_fields": np.array([(1.0,), (2.0,)], dtype=[("\u03c8", "<f8")]),
    }


def expected(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.filterwarnings("ignore:Stored array in format 3.0")  # the utf8_fields array
@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "compressed"])
def test_values_dtypes_and_order_equal_numpys_reading(tmp_path, save):
    path = tmp_path / "d.npz"
    save(path, **arrays_of_every_kind())
    got, want = load_npz(path), expected(path)
    assert list(got) == list(want)
    for name, w in want.items():
        g = got[name]
        assert g.dtype == w.dtype and g.shape == w.shape, name
        assert g.flags.f_contiguous == w.flags.f_contiguous, name
        assert g.flags.c_contiguous == w.flags.c_contiguous, name
        np.testing.assert_array_equal(g, w, err_msg=name)


def test_a_member_with_a_flipped_byte_fails_its_crc_naming_the_array(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, features=np.arange(1000, dtype=np.float64), labels=np.arange(1000))
    raw = bytearray(path.read_bytes())
    raw[raw.find(b"NUMPY") + 300] ^= 0xFF  # inside the first member's data
    path.write_bytes(bytes(raw))
    with pytest.raises(DataFileError, match=r"d\.npz: array 'features' fails its CRC-32 "
                                            r"check: the file is corrupt"):
        load_npz(path)


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_a_member_shorter_than_its_header_says_names_both_sizes(tmp_path):
    path = tmp_path / "d.npz"
    whole = npy_bytes(np.arange(100, dtype=np.float64))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("features.npy", whole[:-400])  # a consistent zip of a cut .npy
        zf.writestr("labels.npy", npy_bytes(np.arange(100)))
    with pytest.raises(DataFileError, match=r"d\.npz: array 'features' holds 400 bytes of "
                                            r"data; its header describes 800"):
        load_npz(path)


def test_a_file_cut_short_is_named(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, features=np.zeros((50, 4), np.float32), labels=np.arange(50))
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(DataFileError, match=r"d\.npz: not a readable \.npz file"):
        load_npz(path)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "compressed"])
def test_a_pickled_member_is_refused_never_loaded(tmp_path, save):
    path = tmp_path / "d.npz"
    obj = np.empty(2, dtype=object)
    obj[:] = [{"a": 1}, None]
    save(path, features=obj, labels=np.arange(2))
    with pytest.raises(DataFileError, match=r"array 'features' is a pickled object array; "
                                            "layerscope never loads pickles"):
        load_npz(path)


def test_a_member_that_is_not_an_npy_array_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("features.npy", npy_bytes(np.zeros((3, 2))))
        zf.writestr("notes.txt", b"not an array")
    with pytest.raises(DataFileError, match=r"d\.npz: array 'notes\.txt' is not an \.npy "
                                            r"array"):
        load_npz(path)
