"""Data files in: ``.npz``, ``.npy`` pairs, CSV, Parquet and image folders, each read into a
:class:`Source` (the tensors' specs and a way to stream their bytes).

A source is read twice when uploaded, never held whole: once to hash it (the upload's header
carries the sha256) and once to send it, a chunk at a time. The first pass also checks every
file, so a broken file stops the upload before a byte is sent. Pillow and pyarrow are
imported where used (extras ``images`` and ``parquet``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..lazy import lazy_module
from .npz import DataFileError, load_npz
from .rawarray import ITEMSIZE, RawArray

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ROWS_PER_CHUNK = 4096   # Parquet rows per batch
BLOCK_BYTES = 32 << 20  # the decoded images of one batch, at most (one image at least)


@dataclass(frozen=True)
class Source:
    """Tensors to upload: ``specs`` (name, dtype, shape) in upload order, and ``blocks()``
    yielding their C-order little-endian bytes in that order (callable more than once).
    ``key`` is ``labels`` or ``targets``; ``note`` says how the data was read (shown to the
    user: the image preprocessing, the class names); ``held``, for a source of arrays
    already in memory, those arrays (NumPy arrays, or RawArrays as the .npz reader gives
    them: what ``tensors()`` hands back)."""

    specs: tuple[tuple[str, str, tuple[int, ...]], ...]
    blocks: Callable[[], Iterator[np.ndarray | RawArray]]
    key: str
    note: str = ""
    classes: tuple[str, ...] = field(default=())
    held: dict[str, np.ndarray | RawArray] | None = field(default=None, repr=False,
                                                         compare=False)

    @property
    def size_bytes(self) -> int:
        return sum((ITEMSIZE[d] if d in ITEMSIZE else np.dtype(d).itemsize) * math.prod(s)
                   for _, d, s in self.specs)

    @property
    def rows(self) -> int:
        return self.specs[0][2][0]

    def arrays(self) -> dict[str, np.ndarray]:
        """The tensors as little-endian arrays (the whole source in memory). A source of
        arrays already in memory hands them back, no copy (read-only views of the file's
        mapped pages for an .npz's plain members); the others fill one new array per
        tensor a block at a time (no block held beyond its copy)."""
        if self.held is not None:
            return {k: np.asarray(v) for k, v in self.held.items()}
        out = {name: np.empty(shape, np.dtype(dtype).newbyteorder("<"))
               for name, dtype, shape in self.specs}
        targets = [a.reshape(-1).view(np.uint8) for a in out.values()]
        part, pos = 0, 0  # the tensor being filled, and the bytes of it filled
        for block in self.blocks():
            data = np.ascontiguousarray(block).reshape(-1).view(np.uint8)
            done = 0
            while done < len(data):  # a block may end one tensor and start the next
                while part < len(targets) and pos == len(targets[part]):
                    part, pos = part + 1, 0
                if part == len(targets):
                    raise ValueError("the source's blocks hold more bytes than its specs")
                n = min(len(data) - done, len(targets[part]) - pos)
                targets[part][pos : pos + n] = data[done : done + n]
                done, pos = done + n, pos + n
        while part < len(targets) and pos == len(targets[part]):
            part, pos = part + 1, 0
        if part != len(targets):
            raise ValueError("the source's blocks hold fewer bytes than its specs")
        return out

    def tensors(self) -> dict[str, np.ndarray | RawArray]:
        """The tensors as they are held: what ``arrays()`` gives, except that a RawArray
        stays one (so that sending it imports no NumPy)."""
        return dict(self.held) if self.held is not None else dict(self.arrays())


def array_source(arrays: dict[str, Any], key: str, note: str = "") -> Source:
    """A source of arrays already in memory (the ``key`` array last): NumPy arrays or
    array-likes, made C-order and little-endian; RawArrays, which are, as they are."""
    order = [k for k in arrays if k != key] + [key]
    fixed: dict[str, np.ndarray | RawArray] = {}
    for k in order:
        a = arrays[k]
        if not isinstance(a, RawArray):
            a = np.ascontiguousarray(a)
            a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        fixed[k] = a
    return Source(tuple((k, _dtype_name(a), tuple(a.shape)) for k, a in fixed.items()),
                  lambda: iter(list(fixed.values())), key, note, held=fixed)


def _dtype_name(a: np.ndarray | RawArray) -> str:
    """The dtype's name as the contract writes it (no byte order)."""
    return a.dtype if isinstance(a, RawArray) else str(a.dtype.newbyteorder("="))


# options --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageOptions:
    """How images become a model input: resize (shorter side), centre crop, scale, then
    (x - mean) / std per channel. None: derived from the model's input shape."""

    size: tuple[int, int] | None = None      # (height, width) of the crop
    resize: int | None = None                # the shorter side before cropping
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str | None = None                # "NCHW" or "NHWC"
    channels: int | None = None


@dataclass(frozen=True)
class Columns:
    """Which column of a table holds the labels (classification) or the targets."""

    label: str | None = None
    target: str | None = None

    def key_and_name(self, path: Path) -> tuple[str, str]:
        if (self.label is None) == (self.target is None):
            raise DataFileError(f"{path}: a table needs --label-column NAME (classification) "
                                "or --target-column NAME (regression), exactly one")
        return ("labels", self.label) if self.label else ("targets", str(self.target))


# the dispatcher -------------------------------------------------------------------------
def kind_of(path: str | os.PathLike[str]) -> str:
    """The loader of ``path``: npz, npy, csv, parquet or images (a folder)."""
    p = Path(path)
    if p.is_dir():
        return "images"
    suffix = p.suffix.lower()
    if suffix in (".npy", ".csv", ".parquet"):
        return suffix[1:]
    if suffix == ".pq":
        return "parquet"
    return "npz"


def open_source(
    path: str | os.PathLike[str],
    *,
    input_name: str = "inputs",
    labels: str | os.PathLike[str] | None = None,
    targets: str | os.PathLike[str] | None = None,
    columns: Columns = Columns(),
    images: ImageOptions = ImageOptions(),
    classes: Sequence[str] | None = None,
) -> Source:
    """The source of a data file or folder (DataFileError naming the file when it is not
    usable). ``input_name`` names the feature tensor of a ``.npy``, a table or an image
    folder; ``labels``/``targets`` give the ``.npy`` of an ``.npy`` pair; ``classes`` the
    class names a test image folder must use (those of the training folder)."""
    p = Path(path)
    if not p.exists():
        raise DataFileError(f"{p}: no such file or folder; expected a data file (.npz, .npy, "
                            ".csv, .parquet) or an image folder")
    kind = kind_of(p)
    if kind != "npy" and (labels is not None or targets is not None):
        raise DataFileError(f"{p}: --labels/--targets pair with an .npy file of inputs; this "
                            f"is a {kind} source")
    if kind == "npy":
        return npy_pair(p, labels, targets, input_name)
    if kind == "csv":
        return csv_source(p, columns, input_name)
    if kind == "parquet":
        return parquet_source(p, columns, input_name)
    if kind == "images":
        return image_folder(p, images, input_name, classes)
    arrays = load_npz(p, required_any=("labels|targets",), raw=True)
    if "labels" in arrays and "targets" in arrays:
        raise DataFileError(f"{p}: holds both 'labels' and 'targets'; keep one (labels for "
                            "classification, targets for regression)")
    return array_source(arrays, "labels" if "labels" in arrays else "targets")


# .npy pairs -----------------------------------------------------------------------------
def load_npy(path: Path) -> np.ndarray:
    """One ``.npy`` array, memory-mapped, never a pickle."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)  # type: ignore[no-any-return]
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "python objects" in str(exc).lower():
            raise DataFileError(f"{path}: holds an object array (a pickle); layerscope never "
                                "loads pickles: save a numeric array") from None
        raise DataFileError(f"{path}: not a readable .npy file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise DataFileError(f"{path}: not a readable .npy file ({exc})") from None


def npy_pair(path: Path, labels: Any, targets: Any, input_name: str) -> Source:
    """An ``.npy`` of inputs (first axis: samples) and an ``.npy`` of labels or targets."""
    if (labels is None) == (targets is None):
        raise DataFileError(f"{path}: an .npy file holds one unnamed array; give its labels "
                            "with --labels LABELS.npy (or --targets TARGETS.npy), or use an "
                            ".npz (np.savez(path, inputs=x, labels=y))")
    key, ypath = ("labels", Path(labels)) if labels is not None else ("targets", Path(targets))
    if not ypath.is_file():
        raise DataFileError(f"{ypath}: no such file; expected an .npy of {key}")
    x, y = load_npy(path), load_npy(ypath)
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise DataFileError(f"{path} and {ypath}: {len(x) if x.ndim else 0} inputs but "
                            f"{len(y) if y.ndim else 0} {key}; one row of each per sample")
    xs = np.dtype(x.dtype).newbyteorder("<")
    ys = np.dtype(y.dtype).newbyteorder("<")

    def blocks() -> Iterator[np.ndarray]:
        for s in range(0, len(x), ROWS_PER_CHUNK):
            yield np.ascontiguousarray(x[s : s + ROWS_PER_CHUNK]).astype(xs, copy=False)
        yield np.ascontiguousarray(y).astype(ys, copy=False)

    return Source(((input_name, str(x.dtype), tuple(x.shape)),
                   (key, str(y.dtype), tuple(y.shape))), blocks, key)


# tables ---------------------------------------------------------------------------------
def _class_codes(values: Sequence[str], path: Path, column: str) -> tuple[np.ndarray, tuple[str,
                                                                                         ...]]:
    """Integer labels of a label column: the integers themselves, else class names coded in
    sorted order."""
    try:
        return np.array([int(v) for v in values], dtype=np.int64), ()
    except ValueError:
        pass
    names = tuple(sorted(set(values)))
    if "" in names:
        row = list(values).index("") + 2
        raise DataFileError(f"{path}: row {row}: column {column!r} is empty; expected a label")
    code = {n: i for i, n in enumerate(names)}
    return np.array([code[v] for v in values], dtype=np.int64), names


def csv_source(path: Path, columns: Columns, input_name: str) -> Source:
    """A CSV with a header: the label (or target) column and the other columns as float32
    features. Rows are numbered as in the file (the header is row 1)."""
    import csv  # noqa: PLC0415 - only CSV sources

    key, ycol = columns.key_and_name(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DataFileError(f"{path}: empty; expected a CSV with a header row")
            header = [h.strip() for h in header]
            if ycol not in header:
                raise DataFileError(f"{path}: no column {ycol!r} (the columns: "
                                    f"{', '.join(header)})")
            yi = header.index(ycol)
            feats = [i for i in range(len(header)) if i != yi]
            rows: list[list[float]] = []
            ys: list[str] = []
            for row_no, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataFileError(f"{path}: row {row_no} has {len(row)} fields; the "
                                        f"header has {len(header)}")
                ys.append(row[yi].strip())
                values = []
                for i in feats:
                    try:
                        values.append(float(row[i]))
                    except ValueError:
                        raise DataFileError(
                            f"{path}: row {row_no}: column {header[i]!r} holds {row[i]!r}, "
                            "not a number; features must be numeric (drop the column or "
                            "encode it)") from None
                rows.append(values)
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{path}: not a UTF-8 text CSV ({exc.reason})") from None
    except csv.Error as exc:
        raise DataFileError(f"{path}: not a readable CSV ({exc})") from None
    if not rows:
        raise DataFileError(f"{path}: no data rows under the header")
    x = np.array(rows, dtype=np.float32).reshape(len(rows), len(feats))
    note = ""
    if key == "labels":
        y, names = _class_codes(ys, path, ycol)
        if names:
            note = "classes: " + ", ".join(f"{i}={n}" for i, n in enumerate(names))
    else:
        try:
            y = np.array([float(v) for v in ys], dtype=np.float32)
        except ValueError:
            bad = next(i for i, v in enumerate(ys) if not _is_float(v))
            raise DataFileError(f"{path}: row {bad + 2}: target column {ycol!r} holds "
                                f"{ys[bad]!r}, not a number") from None
    return array_source({input_name: x, key: y}, key, note)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq  # noqa: PLC0415 - optional extra
    except ImportError:
        raise ImportError("reading Parquet needs pyarrow: pip install 'layerscope[parquet]'"
                          ) from None
    return pq


def parquet_source(path: Path, columns: Columns, input_name: str) -> Source:
    """A Parquet file read in row batches: the label (or target) column and the other
    numeric columns as float32 features; memory stays at one batch."""
    pq = _pyarrow()
    import pyarrow as pa  # noqa: PLC0415

    key, ycol = columns.key_and_name(path)
    try:
        pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    except (pa.ArrowException, OSError) as exc:
        raise DataFileError(f"{path}: not a readable Parquet file ({exc})") from None
    schema = pf.schema_arrow
    names = list(schema.names)
    if ycol not in names:
        raise DataFileError(f"{path}: no column {ycol!r} (the columns: {', '.join(names)})")
    feats = [n for n in names if n != ycol]
    for n in feats:
        t = schema.field(n).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            raise DataFileError(f"{path}: column {n!r} is {t}, not numeric; features must be "
                                "numeric (drop the column or encode it)")
    if not feats:
        raise DataFileError(f"{path}: no feature column besides {ycol!r}")
    rows = pf.metadata.num_rows
    try:
        ycolumn = pf.read(columns=[ycol]).column(0)
    except pa.ArrowException as exc:
        raise DataFileError(f"{path}: column {ycol!r} cannot be read ({exc})") from None
    if ycolumn.null_count:
        first = next(i for i, v in enumerate(ycolumn.is_null().to_pylist()) if v)
        raise DataFileError(f"{path}: row {first}: column {ycol!r} is empty")
    note = ""
    ytype = schema.field(ycol).type
    if key == "labels":
        if pa.types.is_integer(ytype):
            y = ycolumn.to_numpy().astype(np.int64)
        else:
            y, classes = _class_codes([str(v) for v in ycolumn.to_pylist()], path, ycol)
            note = "classes: " + ", ".join(f"{i}={n}" for i, n in enumerate(classes))
    else:
        if not (pa.types.is_integer(ytype) or pa.types.is_floating(ytype)):
            raise DataFileError(f"{path}: target column {ycol!r} is {ytype}, not numeric")
        y = ycolumn.to_numpy().astype(np.float32)
    del ycolumn

    def blocks() -> Iterator[np.ndarray]:
        start = 0
        try:
            # pre_buffer would read ahead whole row groups of every column (several times
            # the data of one batch); without it memory stays at about one row group
            reader = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
            for batch in reader.iter_batches(batch_size=ROWS_PER_CHUNK, columns=feats,
                                             use_threads=False):
                cols = []
                for n, col in zip(feats, batch.columns, strict=True):
                    if col.null_count:
                        row = start + col.is_null().to_pylist().index(True)
                        raise DataFileError(f"{path}: row {row}: column {n!r} is empty")
                    cols.append(col.to_numpy(zero_copy_only=False).astype(np.float32))
                start += batch.num_rows
                yield np.stack(cols, axis=1).astype("<f4", copy=False)
        except pa.ArrowException as exc:
            raise DataFileError(f"{path}: row {start}: cannot be read ({exc})") from None
        yield y.astype(y.dtype.newbyteorder("<"), copy=False)

    return Source(((input_name, "float32", (rows, len(feats))), (key, str(y.dtype), (rows,))),
                  blocks, key, note)


# image folders --------------------------------------------------------------------------
def image_options_for(shape: Sequence[Any], given: ImageOptions) -> ImageOptions:
    """``given`` with what it leaves open taken from a model input's shape (N, C, H, W) or
    (N, H, W, C): the layout, the channels (1 or 3) and the crop size."""
    dims = [d if isinstance(d, int) else int(d) if str(d).isdigit() else None for d in shape]
    layout, channels, size = given.layout, given.channels, given.size
    if len(dims) == 4:
        if layout is None:
            layout = "NHWC" if dims[3] in (1, 3) and dims[1] not in (1, 3) else "NCHW"
        c, h, w = (dims[1], dims[2], dims[3]) if layout == "NCHW" else (dims[3], dims[1],
                                                                          dims[2])
        channels = channels or c
        if size is None and h and w:
            size = (h, w)
    return ImageOptions(size=size, resize=given.resize, scale=given.scale, mean=given.mean,
                        std=given.std, layout=layout or "NCHW", channels=channels or 3)


def describe_images(o: ImageOptions) -> str:
    """One line that states the preprocessing (shown to the user)."""
    assert o.size is not None
    h, w = o.size
    return (f"images: resize shorter side to {o.resize or min(h, w)}, centre-crop {h}x{w}, "
            f"{'RGB' if o.channels == 3 else 'grayscale'}, x * {o.scale:g}, then "
            f"(x - mean {list(o.mean)}) / std {list(o.std)}, layout {o.layout}")


def image_folder(path: Path, given: ImageOptions, input_name: str,
                 classes: Sequence[str] | None = None) -> Source:
    """An ImageFolder layout (one subfolder per class, sorted names are the labels 0..k-1),
    decoded with Pillow a batch at a time."""
    o = image_options_for([], given)
    found = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise DataFileError(f"{path}: no class subfolders; expected an image folder with one "
                            "subfolder per class (root/cat/1.jpg, root/dog/2.png)")
    names = list(classes) if classes is not None else found
    unknown = [c for c in found if c not in names]
    if unknown:
        raise DataFileError(f"{path}: class folder(s) {unknown} are not among the training "
                            f"classes {names}")
    files: list[tuple[Path, int]] = []
    for c in found:
        for f in sorted((path / c).rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                files.append((f, names.index(c)))
    if not files:
        raise DataFileError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in its "
                            "class folders")
    if o.size is None:
        raise DataFileError(f"{path}: the image size is unknown: give --image-size H[,W] "
                            "(or a model whose input has a fixed height and width)")
    channels = int(o.channels or 3)
    mean, std = _per_channel(o.mean, channels, "mean"), _per_channel(o.std, channels, "std")
    h, w = o.size
    shape = (len(files), channels, h, w) if o.layout == "NCHW" else (len(files), h, w, channels)
    labels = np.array([c for _, c in files], dtype=np.int64)

    per_block = max(1, BLOCK_BYTES // (4 * channels * h * w))

    def blocks() -> Iterator[np.ndarray]:
        for s in range(0, len(files), per_block):
            batch = np.stack([_decode(f, o, channels) for f, _ in files[s : s + per_block]])
            batch = (batch * np.float32(o.scale) - mean) / std
            if o.layout == "NCHW":
                batch = batch.transpose(0, 3, 1, 2)
            yield np.ascontiguousarray(batch, dtype="<f4")
        yield labels

    note = describe_images(o) + "; classes: " + ", ".join(
        f"{i}={n}" for i, n in enumerate(names))
    return Source(((input_name, "float32", shape), ("labels", "int64", (len(files),))),
                  blocks, "labels", note, tuple(names))


def _per_channel(values: tuple[float, ...], channels: int, what: str) -> np.ndarray:
    if len(values) not in (1, channels):
        raise DataFileError(f"--{what} takes 1 or {channels} values (one per channel); got "
                            f"{len(values)}")
    if what == "std" and any(v == 0 for v in values):
        raise DataFileError("--std values must be non-zero")
    return np.array(values if len(values) == channels else values * channels, np.float32)


def _decode(path: Path, o: ImageOptions, channels: int) -> np.ndarray:
    """One image as float32 (H, W, C): resized (shorter side), centre-cropped."""
    try:
        from PIL import Image, UnidentifiedImageError  # noqa: PLC0415 - optional extra
    except ImportError:
        raise ImportError("reading image folders needs Pillow: pip install "
                          "'layerscope[images]'") from None
    assert o.size is not None
    h, w = o.size
    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            side = o.resize or max(h, w)
            scale = side / min(im.size)
            nw, nh = max(w, round(im.size[0] * scale)), max(h, round(im.size[1] * scale))
            im = im.resize((nw, nh), Image.Resampling.BILINEAR)
            left, top = (nw - w) // 2, (nh - h) // 2
            im = im.crop((left, top, left + w, top + h))
            a = np.asarray(im, dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataFileError(f"{path}: not a readable image ({exc})") from None
    return a[:, :, None] if a.ndim == 2 else a
