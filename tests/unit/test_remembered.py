"""The record of datasets stored from data files (client/remembered.py): a file is
recalled only while unchanged, and only once it had settled when it was read."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from layerscope.client import remembered as R
from layerscope.client.remembered import RememberedDatasets, identity


def later(seconds: float):
    """A clock ``seconds`` ahead of the real one: files written now count as settled."""
    return lambda: time.time_ns() + int(seconds * 1e9)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_an_unchanged_file_is_recalled_under_its_purpose_only(tmp_path: Path) -> None:
    f = write(tmp_path / "a.npz", b"x" * 100)
    book = RememberedDatasets(tmp_path / "data", clock_ns=later(10))
    before = identity(f)
    assert book.recall(f, "indices") is None
    assert book.remember(f, "indices", before, "ds-1")
    assert book.recall(f, "indices") == "ds-1"
    assert book.recall(str(f), "indices") == "ds-1"
    assert book.recall(tmp_path / "." / "a.npz", "indices") == "ds-1"  # one file, one entry
    assert book.recall(f, "analyze") is None
    # another process reads the same record
    assert RememberedDatasets(tmp_path / "data").recall(f, "indices") == "ds-1"


@pytest.mark.parametrize("change", ["same size, old mtime put back", "appended", "replaced",
                                    "touched", "removed"])
def test_a_changed_file_is_not_recalled(tmp_path: Path, change: str) -> None:
    f = write(tmp_path / "a.npz", b"x" * 100)
    book = RememberedDatasets(tmp_path / "data", clock_ns=later(10))
    assert book.remember(f, "indices", identity(f), "ds-1")
    st = os.stat(f)
    time.sleep(0.05)  # past the clock's tick: the change time moves
    if change == "same size, old mtime put back":
        write(f, b"y" * 100)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert os.stat(f).st_mtime_ns == st.st_mtime_ns and os.stat(f).st_size == st.st_size
    elif change == "appended":
        with open(f, "ab") as h:
            h.write(b"z")
    elif change == "replaced":  # a new file renamed over the old one, same size and times
        other = write(tmp_path / "b.npz", b"y" * 100)
        os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(other, f)
    elif change == "touched":
        f.touch()
    else:
        f.unlink()
    assert book.recall(f, "indices") is None


def test_a_file_changed_while_it_was_read_is_not_remembered(tmp_path: Path) -> None:
    f = write(tmp_path / "a.npz", b"x" * 100)
    book = RememberedDatasets(tmp_path / "data", clock_ns=later(10))
    before = identity(f)
    time.sleep(0.05)
    write(f, b"y" * 101)  # during the read
    assert not book.remember(f, "indices", before, "ds-1")
    assert book.recall(f, "indices") is None
    assert not book.remember(f, "indices", None, "ds-1")  # not a file when first seen


def test_a_file_that_changed_within_the_settling_time_is_not_remembered(
        tmp_path: Path) -> None:
    """A rewrite within the clock's resolution of the last change could keep all of the
    file's times: such a file is read again next time (git's racy entries)."""
    f = write(tmp_path / "a.npz", b"x" * 100)
    changed = max(os.stat(f).st_mtime_ns, os.stat(f).st_ctime_ns)
    just = RememberedDatasets(tmp_path / "data", clock_ns=lambda: changed + R.SETTLED_NS - 1)
    assert not just.remember(f, "indices", identity(f), "ds-1")
    settled = RememberedDatasets(tmp_path / "data", clock_ns=lambda: changed + R.SETTLED_NS)
    assert settled.remember(f, "indices", identity(f), "ds-1")
    assert settled.recall(f, "indices") == "ds-1"


def test_a_folder_is_not_a_file_to_remember(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    assert identity(tmp_path / "images") is None
    assert identity(tmp_path / "missing.npz") is None


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b'{"indices:/x": 3}',
                                     b"\xff\xfe"])
def test_a_damaged_record_is_read_as_empty_and_written_anew(tmp_path: Path,
                                                            content: bytes) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / R.FILE_NAME).write_bytes(content)
    f = write(tmp_path / "a.npz", b"x" * 10)
    book = RememberedDatasets(data, clock_ns=later(10))
    assert book.recall(f, "indices") is None
    assert book.remember(f, "indices", identity(f), "ds-2")
    assert book.recall(f, "indices") == "ds-2"
    assert isinstance(json.loads((data / R.FILE_NAME).read_bytes()), dict)


def test_an_unwritable_record_costs_nothing_but_the_memory(tmp_path: Path) -> None:
    blocker = write(tmp_path / "not-a-folder", b"")
    f = write(tmp_path / "a.npz", b"x" * 10)
    book = RememberedDatasets(blocker, clock_ns=later(10))  # its "folder" is a file
    assert not book.remember(f, "indices", identity(f), "ds-1")
    assert book.recall(f, "indices") is None
    book.forget(f, "indices")


def test_the_record_keeps_the_newest_entries(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R, "MAX_ENTRIES", 5)
    ticks = iter(range(10**19, 10**19 + 100))
    book = RememberedDatasets(tmp_path / "data", clock_ns=lambda: next(ticks))
    files = [write(tmp_path / f"{i}.npz", bytes([i])) for i in range(8)]
    for i, f in enumerate(files):
        assert book.remember(f, "indices", identity(f), f"ds-{i}")
    kept = [book.recall(f, "indices") for f in files]
    assert kept == [None, None, None] + [f"ds-{i}" for i in range(3, 8)]


def test_forgetting_a_file_drops_its_entry_only(tmp_path: Path) -> None:
    a, b = write(tmp_path / "a.npz", b"a"), write(tmp_path / "b.npz", b"b")
    book = RememberedDatasets(tmp_path / "data", clock_ns=later(10))
    for f, ds in ((a, "ds-a"), (b, "ds-b")):
        assert book.remember(f, "indices", identity(f), ds)
    book.forget(a, "indices")
    assert book.recall(a, "indices") is None and book.recall(b, "indices") == "ds-b"


def test_the_record_is_the_user_s_alone(tmp_path: Path) -> None:
    """It names the user's files: a data directory it creates is private, as the store's."""
    f = write(tmp_path / "a.npz", b"x")
    book = RememberedDatasets(tmp_path / "fresh" / "data", clock_ns=later(10))
    assert book.remember(f, "indices", identity(f), "ds-1")
    assert (tmp_path / "fresh" / "data").stat().st_mode & 0o777 == 0o700
    assert book.path.stat().st_mode & 0o777 == 0o600
