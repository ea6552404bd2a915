"""FID reference statistics cached across runs, keyed by exactly what they are computed from.

The key is a sha256 of the Inception weights' identity and of every uint8 image the Inception would see (after the
evaluation resize, in order), so any change of data, split, image size, ``max_images`` or weights gives a new key
and a stale entry is never read. Hashing the images costs one extra pass of image loading, which is small next
to the Inception forward passes it saves. Entries live in fid/ of the project's cache folder (``scan.cache_dir``:
``$DCDGAN_CACHE_DIR``, else ``~/.cache/dcdgan``).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Callable

from torch.utils.data import DataLoader

from dcdgan import scan
from dcdgan.errors import UserError
from dcdgan.metrics.fid import ReferenceStats, load_stats, save_stats
from dcdgan.metrics.inception import FIDInception
from dcdgan.metrics.paired import to_uint8

# Bump when what a cached entry means changes without its inputs changing (Inception preprocessing, statistics).
FORMAT_VERSION = "fid-reference/1"


def cache_dir() -> Path:
    """Folder of cached reference statistics: fid/ in the project's cache folder."""
    return scan.cache_dir() / "fid"


def inception_identity(inception: FIDInception) -> str:
    """The weights' source, plus size and modification time when it is a file (a replaced file gives a new key)."""
    path = Path(inception.source)
    if path.is_file():
        stat = path.stat()
        return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return inception.source


def reference_key(loader: DataLoader, inception: FIDInception, key: str = "A") -> str:
    """sha256 of the format version, the Inception's identity and each uint8 image of ``loader`` (shape and bytes)."""
    digest = hashlib.sha256(f"{FORMAT_VERSION}\n{inception_identity(inception)}\n".encode())
    for batch in loader:
        for image in to_uint8(batch[key]):  # image by image, so the batch size does not change the key
            digest.update(str(tuple(image.shape)).encode())
            digest.update(image.contiguous().numpy().tobytes())
    return digest.hexdigest()


def cached_reference_stats(loader: DataLoader, inception: FIDInception, compute: Callable[[], ReferenceStats]) -> ReferenceStats:
    """The statistics ``compute()`` returns for the images of ``loader``: computed once per key, then read back."""
    path = cache_dir() / f"{reference_key(loader, inception)}.npz"
    if path.is_file():
        try:
            return load_stats(path)
        except UserError:  # an unreadable entry (interrupted copy, disk trouble): compute it again below
            pass
    stats = compute()
    try:
        save_stats(path, stats)
    except OSError as err:  # a read-only or full cache folder costs time, never the run
        warnings.warn(f"{path.parent}: cannot cache FID reference statistics ({err.strerror or err}); set ${scan.CACHE_ENV} to a writable folder", stacklevel=2)
    return stats
