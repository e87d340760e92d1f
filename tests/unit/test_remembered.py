"""The record of datasets stored from data files (client/remembered.py): a file is
recalled only while unchanged, and only once it had settled when it was read."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from layerscope.client import remembered as R
from layerscope.client.remembered import Recalled, RememberedDatasets, Seen, identity


def later(seconds: float):
    """A clock ``seconds`` ahead of the real one: files written now count as settled."""
    return lambda: time.time_ns() + int(seconds * 1e9)


def ds(name: str) -> Recalled:
    return Recalled(name, "labels")


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_an_unchanged_file_is_recalled_under_its_purpose_only(tmp_path: Path) -> None:
    f = write(tmp_path / "a.npz", b"x" * 100)
    book = RememberedDatasets(tmp_path / "data", clock_ns=later(10))
    before = book.see(f)
    assert book.recall(f, "indices") is None
    assert book.remember(f, "indices", before, "ds-1", "targets")
    assert book.recall(f, "indices") == Recalled("ds-1", "targets")
    assert book.recall(str(f), "indices") == Recalled("ds-1", "targets")
    assert book.recall(tmp_path / "." / "a.npz", "indices") == Recalled("ds-1", "targets")
    assert book.recall(f, "analyze") is None
    # another process reads the same record
    assert RememberedDatasets(tmp_path / "data").recall(f, "indices") == Recalled("ds-1",
                                                                                   "targets")


@pytest.mark.parametrize("change", ["same size, old mtime put back", "appended", "replaced",
                                    "touched", "removed"])
def test_a_changed_file_is_not_recalled(tmp_path: Path, change: str) -> None:
    f = write(tmp_path / "a.npz", b"x" * 100)
    book = RememberedDatasets(tmp_path / "data", clock_ns=later(10))
    assert book.remember(f, "indices", book.see(f), "ds-1", "labels")
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
    before = book.see(f)
    time.sleep(0.05)
    write(f, b"y" * 101)  # during the read
    assert not book.remember(f, "indices", before, "ds-1", "labels")
    assert book.recall(f, "indices") is None
    assert not book.remember(f, "indices", Seen(None, later(10)()), "ds-1", "labels")


def test_a_file_that_changed_within_the_settling_time_is_not_remembered(
        tmp_path: Path) -> None:
    """A rewrite within the timestamps' resolution of a change made just before the file
    was read could keep all its times: such a file is read again next time (git's racy
    entries). What counts is the clock when the file was seen, before the reading, not
    when the dataset is remembered (a command that runs longer than SETTLED_NS would pass
    any file at that point)."""
    f = write(tmp_path / "a.npz", b"x" * 100)
    changed = max(os.stat(f).st_mtime_ns, os.stat(f).st_ctime_ns)
    clock = [changed + R.SETTLED_NS - 1]
    book = RememberedDatasets(tmp_path / "data", clock_ns=lambda: clock[0])
    seen = book.see(f)
    clock[0] += 60 * R.SETTLED_NS  # the command ran a minute
    assert not book.remember(f, "indices", seen, "ds-1", "labels")
    clock[0] = changed + R.SETTLED_NS
    assert book.remember(f, "indices", book.see(f), "ds-1", "labels")
    assert book.recall(f, "indices") == ds("ds-1")


def test_a_file_seen_unsettled_in_a_real_command_is_not_remembered(tmp_path: Path) -> None:
    """The real clock: a file written just now, seen, then 'read' for longer than
    SETTLED_NS (a clock that jumps), is not remembered."""
    f = write(tmp_path / "a.npz", b"x" * 100)
    jump = [0]
    book = RememberedDatasets(tmp_path / "data", clock_ns=lambda: time.time_ns() + jump[0])
    seen = book.see(f)
    jump[0] = 3 * R.SETTLED_NS
    assert not book.remember(f, "indices", seen, "ds-1", "labels")


def test_a_folder_is_not_a_file_to_remember(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    assert identity(tmp_path / "images") is None
    assert identity(tmp_path / "missing.npz") is None
    os.mkfifo(tmp_path / "pipe")
    assert identity(tmp_path / "pipe") is None  # opened without blocking, not a file


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
    assert book.remember(f, "indices", book.see(f), "ds-2", "labels")
    assert book.recall(f, "indices") == ds("ds-2")
    assert isinstance(json.loads((data / R.FILE_NAME).read_bytes()), dict)


def test_an_unwritable_record_costs_nothing_but_the_memory(tmp_path: Path) -> None:
    blocker = write(tmp_path / "not-a-folder", b"")
    f = write(tmp_path / "a.npz", b"x" * 10)
    book = RememberedDatasets(blocker, clock_ns=later(10))  # its "folder" is a file
    assert not book.remember(f, "indices", book.see(f), "ds-1", "labels")
    assert book.recall(f, "indices") is None
    book.forget(f, "indices")


def test_the_record_keeps_the_newest_entries(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R, "MAX_ENTRIES", 5)
    ticks = iter(range(10**19, 10**19 + 100))
    book = RememberedDatasets(tmp_path / "data", clock_ns=lambda: next(ticks))
    files = [write(tmp_path / f"{i}.npz", bytes([i])) for i in range(8)]
    for i, f in enumerate(files):
        assert book.remember(f, "indices", book.see(f), f"ds-{i}", "labels")
    kept = [book.recall(f, "indices") for f in files]
    assert kept == [None, None, None] + [ds(f"ds-{i}") for i in range(3, 8)]


def test_forgetting_a_file_drops_its_entry_only(tmp_path: Path) -> None:
    a, b = write(tmp_path / "a.npz", b"a"), write(tmp_path / "b.npz", b"b")
    book = RememberedDatasets(tmp_path / "data", clock_ns=later(10))
    for f, name in ((a, "ds-a"), (b, "ds-b")):
        assert book.remember(f, "indices", book.see(f), name, "labels")
    book.forget(a, "indices")
    assert book.recall(a, "indices") is None and book.recall(b, "indices") == ds("ds-b")


def test_the_record_is_the_user_s_alone(tmp_path: Path) -> None:
    """It names the user's files: a data directory it creates is private, as the store's."""
    f = write(tmp_path / "a.npz", b"x")
    book = RememberedDatasets(tmp_path / "fresh" / "data", clock_ns=later(10))
    assert book.remember(f, "indices", book.see(f), "ds-1", "labels")
    assert (tmp_path / "fresh" / "data").stat().st_mode & 0o777 == 0o700
    assert book.path.stat().st_mode & 0o777 == 0o600


def test_where_the_change_time_is_a_creation_time_nothing_is_remembered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows' st_ctime is the file's creation time: an mtime put back would hide a
    rewrite, so nothing is remembered there."""
    f = write(tmp_path / "a.npz", b"x")
    monkeypatch.setattr(R, "CHANGE_TIME", False)
    book = RememberedDatasets(tmp_path / "data", clock_ns=later(10))
    assert identity(f) is None
    assert not book.remember(f, "indices", book.see(f), "ds-1", "labels")
    assert book.recall(f, "indices") is None
