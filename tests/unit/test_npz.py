"""The .npz reader (client/npz.py): stored members read straight into their arrays, compressed
ones through NumPy; values, dtypes and memory order as ``np.load`` gives them, and a broken
or hostile file refused with a message that names the file and the array."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from layerscope.client.npz import DataFileError, load_npz
from layerscope.client.rawarray import RawArray


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


@pytest.mark.parametrize("raw", [False, True], ids=["arrays", "raw"])
def test_a_member_with_a_flipped_byte_fails_its_crc_naming_the_array(tmp_path, raw):
    path = tmp_path / "d.npz"
    np.savez(path, features=np.arange(1000, dtype=np.float64), labels=np.arange(1000))
    raw = bytearray(path.read_bytes())
    raw[raw.find(b"NUMPY") + 300] ^= 0xFF  # inside the first member's data
    path.write_bytes(bytes(raw))
    with pytest.raises(DataFileError, match=r"d\.npz: array 'features' fails its CRC-32 "
                                            r"check: the file is corrupt"):
        load_npz(path, raw=raw)


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@pytest.mark.parametrize("raw", [False, True], ids=["arrays", "raw"])
def test_a_member_shorter_than_its_header_says_names_both_sizes(tmp_path, raw):
    path = tmp_path / "d.npz"
    whole = npy_bytes(np.arange(100, dtype=np.float64))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("features.npy", whole[:-400])  # a consistent zip of a cut .npy
        zf.writestr("labels.npy", npy_bytes(np.arange(100)))
    with pytest.raises(DataFileError, match=r"d\.npz: array 'features' holds 400 bytes of "
                                            r"data; its header describes 800"):
        load_npz(path, raw=raw)


def test_a_file_cut_short_is_named(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, features=np.zeros((50, 4), np.float32), labels=np.arange(50))
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(DataFileError, match=r"d\.npz: not a readable \.npz file"):
        load_npz(path)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "compressed"])
@pytest.mark.parametrize("raw", [False, True], ids=["arrays", "raw"])
def test_a_pickled_member_is_refused_never_loaded(tmp_path, save, raw):
    path = tmp_path / "d.npz"
    obj = np.empty(2, dtype=object)
    obj[:] = [{"a": 1}, None]
    save(path, features=obj, labels=np.arange(2))
    with pytest.raises(DataFileError, match=r"array 'features' is a pickled object array; "
                                            "layerscope never loads pickles"):
        load_npz(path, raw=raw)


@pytest.mark.parametrize("raw", [False, True], ids=["arrays", "raw"])
def test_a_member_that_is_not_an_npy_array_is_refused(tmp_path, raw):
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("features.npy", npy_bytes(np.zeros((3, 2))))
        zf.writestr("notes.txt", b"not an array")
    with pytest.raises(DataFileError, match=r"d\.npz: array 'notes\.txt' is not an \.npy "
                                            r"array"):
        load_npz(path, raw=raw)


PLAIN = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
         "float16", "float32", "float64"]


def test_raw_reading_hands_plain_c_order_members_over_as_their_bytes(tmp_path):
    rng = np.random.default_rng(1)
    plain = {f"a_{d}": (rng.normal(size=(7, 3)) * 50).astype(d) for d in PLAIN}
    path = tmp_path / "d.npz"
    others = {k: v for k, v in arrays_of_every_kind().items() if k != "utf8_fields"}
    np.savez(path, **plain, **others)
    got, want = load_npz(path, raw=True), expected(path)
    assert list(got) == list(want)
    for name, w in want.items():
        g = got[name]
        fortran = w.flags.f_contiguous and not w.flags.c_contiguous
        if w.dtype.name in PLAIN and w.dtype.isnative and not fortran:
            assert isinstance(g, RawArray), name
            assert (g.dtype, g.shape, g.nbytes) == (str(w.dtype), w.shape, w.nbytes), name
            assert g.view().tobytes() == np.ascontiguousarray(w).tobytes(), name
            back = np.asarray(g)
            assert back.dtype == w.dtype and not back.flags.writeable, name
        else:  # big-endian, Fortran order, complex, records: NumPy arrays, as before
            assert isinstance(g, np.ndarray), name
            assert g.dtype == w.dtype and g.flags.f_contiguous == w.flags.f_contiguous, name
        np.testing.assert_array_equal(np.asarray(g), w, err_msg=name)


def test_a_compressed_member_comes_back_as_an_array_in_raw_reading(tmp_path):
    path = tmp_path / "d.npz"
    np.savez_compressed(path, features=np.arange(12, dtype=np.float32).reshape(4, 3))
    got = load_npz(path, raw=True)["features"]
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, np.arange(12, dtype=np.float32).reshape(4, 3))


def npz_with_header(path, header: bytes, data: bytes = b"\0" * 16) -> None:
    """An .npz whose one stored member has .npy format 1.0 with ``header`` as written."""
    pad = -(10 + len(header) + 1) % 64
    member = (b"\x93NUMPY\x01\x00" + (len(header) + pad + 1).to_bytes(2, "little") + header
              + b" " * pad + b"\n" + data)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("features.npy", member)


@pytest.mark.parametrize("raw", [False, True], ids=["arrays", "raw"])
def test_a_header_that_is_code_is_never_run(tmp_path, raw):
    marker = tmp_path / "ran"
    path = tmp_path / "d.npz"
    npz_with_header(path, b"{'descr': '<f4', 'fortran_order': False, 'shape': "
                          b"(open(%r, 'w').close() or 4,), }" % str(marker).encode())
    with pytest.raises(DataFileError, match=r"d\.npz: array 'features' cannot be read"):
        load_npz(path, raw=raw)
    assert not marker.exists()


@pytest.mark.parametrize("header", [
    b"{'descr': '<f4', 'fortran_order': False, 'shape': (-4,), }",
    b"{'descr': '<f4', 'fortran_order': 'no', 'shape': (4,), }",
    b"{'descr': '<f4', 'shape': (4,), }",
    b"['descr', '<f4']",
    b"{'descr': '<f4', 'fortran_order': False, 'shape': (4,), " + b"'x': 0, " * 2000 + b"}",
], ids=["negative", "not-a-bool", "missing-key", "not-a-dict", "too-long"])
@pytest.mark.parametrize("raw", [False, True], ids=["arrays", "raw"])
def test_a_malformed_header_is_refused_naming_the_array(tmp_path, header, raw):
    path = tmp_path / "d.npz"
    npz_with_header(path, header)
    with pytest.raises(DataFileError, match=r"d\.npz: array 'features' "):
        load_npz(path, raw=raw)


@pytest.mark.parametrize("raw", [False, True], ids=["arrays", "raw"])
def test_a_header_describing_more_data_than_there_is_names_both_sizes(tmp_path, raw):
    path = tmp_path / "d.npz"
    npz_with_header(path, b"{'descr': '<f8', 'fortran_order': False, 'shape': (1000000,), }")
    with pytest.raises(DataFileError, match=r"array 'features' holds 16 bytes of data; its "
                                            r"header describes 8000000"):
        load_npz(path, raw=raw)


def test_a_raw_array_checks_what_it_is_given():
    with pytest.raises(ValueError, match=r"dtype 'complex64' is not one of bool, int8"):
        RawArray("complex64", (2,), bytearray(16))
    with pytest.raises(ValueError, match=r"shape \(2, -1\) is not a tuple of sizes >= 0"):
        RawArray("float32", (2, -1), bytearray(0))
    with pytest.raises(ValueError, match=r"7 bytes for float32 \[2\], which needs 8"):
        RawArray("float32", (2,), bytearray(7))
    raw = RawArray("int16", (2, 2), bytearray(np.arange(4, dtype="<i2").tobytes()))
    assert (len(raw), raw.ndim, raw.size, raw.nbytes) == (2, 2, 4, 8)
    np.testing.assert_array_equal(np.asarray(raw), [[0, 1], [2, 3]])
    np.testing.assert_array_equal(np.asarray(raw, dtype=np.float64), [[0.0, 1.0], [2.0, 3.0]])


def test_a_file_that_cannot_be_mapped_is_read_instead(tmp_path, monkeypatch):
    import mmap

    def refuse(*args, **kwargs):
        raise OSError(19, "No such device")  # what mmap says of a file it cannot map

    x = np.arange(24, dtype=np.float64).reshape(6, 4)
    np.savez(tmp_path / "d.npz", features=x)
    monkeypatch.setattr(mmap, "mmap", refuse)
    got = load_npz(tmp_path / "d.npz", raw=True)["features"]
    assert isinstance(got, RawArray) and isinstance(got.data, bytearray)
    np.testing.assert_array_equal(np.asarray(got), x)
