"""The embedded store: SQLite catalog, content-addressed blobs, and the job runner."""

from .blobs import BlobError, SizeLimitError
from .catalog import Catalog, JobRow, NotFound
from .jobs import JobManager, QueueFull, ShuttingDown
from .store import (
    DataDirBusy,
    InvalidUpload,
    Store,
    check_dataset_specs,
    dataset_id,
    default_data_dir,
)

__all__ = [
    "BlobError", "Catalog", "DataDirBusy", "InvalidUpload", "JobManager",
    "JobRow", "NotFound", "QueueFull", "ShuttingDown", "SizeLimitError", "Store",
    "check_dataset_specs", "dataset_id", "default_data_dir",
]
