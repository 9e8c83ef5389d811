"""Readers for the official file formats, written defensively.

* IDX (MNIST, Fashion-MNIST): ``.gz`` files holding a big-endian header (two zero bytes, a type
  byte ``0x08`` = unsigned byte, the number of dimensions, then one uint32 per dimension) and the
  raw bytes.
* CIFAR binary: fixed-size records ``label byte(s) + 3072 pixel bytes`` (1024 R, 1024 G, 1024 B,
  row-major), inside a ``.tar.gz`` archive.

Every check happens before allocating arrays sized from a header, and every error is a
:class:`~bioplausible.errors.DataError` naming the file and the problem. No pickle anywhere.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import DataError

#: Largest decompressed IDX file we accept (MNIST train images are 47 MB).
MAX_IDX_BYTES = 256 * 1024 * 1024
#: Largest archive member we extract (a CIFAR batch is 31 MB, CIFAR-100 train.bin 154 MB).
MAX_MEMBER_BYTES = 512 * 1024 * 1024

CIFAR_PIXELS = 3 * 32 * 32


def gunzip(path: Path, limit: int | None = None) -> bytes:
    """Return the decompressed content of a ``.gz`` file, at most ``limit`` (default
    :data:`MAX_IDX_BYTES`) bytes."""
    limit = MAX_IDX_BYTES if limit is None else limit
    try:
        with gzip.open(path, "rb") as f:
            data = f.read(limit + 1)
    except gzip.BadGzipFile as e:
        raise DataError(f"{path}: not a gzip file ({e}); expected an official .gz download") from None
    except EOFError:
        raise DataError(
            f"{path}: truncated gzip file (ended before the end-of-stream marker); "
            "the download or copy was cut short: delete it and fetch it again"
        ) from None
    except (zlib.error, OSError) as e:
        raise DataError(f"{path}: corrupt gzip data ({e}); delete it and fetch it again") from None
    if len(data) > limit:
        raise DataError(f"{path}: decompresses to more than {limit} bytes; not an official IDX file")
    return data


def parse_idx(data: bytes, ndim: int, name: str = "<idx>") -> np.ndarray:
    """Parse IDX bytes of unsigned bytes with ``ndim`` dimensions into a uint8 array.

    The declared size is checked against the actual byte count before anything is allocated.
    """
    header = 4 + 4 * ndim
    if len(data) < 4:
        raise DataError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{name}: wrong IDX magic {data[:4].hex()} (first two bytes must be zero); not an IDX file"
        )
    if data[2] != 0x08:
        raise DataError(
            f"{name}: IDX type byte 0x{data[2]:02x} is not 0x08 (unsigned byte); not an official file"
        )
    if data[3] != ndim:
        raise DataError(f"{name}: IDX file has {data[3]} dimensions, expected {ndim}")
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header ({len(data)} bytes, need {header})")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    declared = 1
    for d in dims:
        declared *= d  # Python int: no overflow
    actual = len(data) - header
    if declared != actual:
        raise DataError(
            f"{name}: IDX header declares shape {dims} = {declared} bytes of data but the file "
            f"holds {actual}; the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_pair(images_path: Path, labels_path: Path, hw: tuple[int, int], n_classes: int):
    """Read an IDX image file and its label file; return ``(images (N, H*W) uint8, labels int64)``."""
    images = parse_idx(gunzip(images_path), 3, str(images_path))
    labels = parse_idx(gunzip(labels_path), 1, str(labels_path))
    return check_idx_pair(images, labels, images_path, labels_path, hw, n_classes)


def check_idx_pair(images, labels, images_path, labels_path, hw, n_classes):
    if tuple(images.shape[1:]) != tuple(hw):
        raise DataError(
            f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected {hw[0]}x{hw[1]}"
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} "
            "labels; the pair does not match"
        )
    if images.shape[0] == 0:
        raise DataError(f"{images_path}: holds no images")
    check_labels(labels, n_classes, str(labels_path))
    return images.reshape(images.shape[0], -1), labels.astype(np.int64)


def check_labels(labels: np.ndarray, n_classes: int, name: str) -> None:
    if labels.size and int(labels.max()) >= n_classes:
        bad = int(np.flatnonzero(labels >= n_classes)[0])
        raise DataError(
            f"{name}: label {int(labels[bad])} at record {bad} is out of range "
            f"(expected 0..{n_classes - 1})"
        )


def parse_cifar(data: bytes, label_bytes: int, label_classes: tuple[int, ...], name: str):
    """Parse CIFAR binary records; return ``(images (N, 3072) uint8, labels (N, label_bytes) uint8)``."""
    record = label_bytes + CIFAR_PIXELS
    if len(data) == 0:
        raise DataError(f"{name}: empty file; expected records of {record} bytes")
    if len(data) % record:
        raise DataError(
            f"{name}: length {len(data)} is not a multiple of the record size {record} "
            f"({label_bytes} label byte(s) + {CIFAR_PIXELS} pixels); the file is truncated or not a "
            "CIFAR binary batch"
        )
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    labels = rows[:, :label_bytes]
    for j, k in enumerate(label_classes):
        check_labels(labels[:, j], k, name + (f" (label byte {j})" if label_bytes > 1 else ""))
    return rows[:, label_bytes:], labels


def _member_problem(m: tarfile.TarInfo) -> str | None:
    p = PurePosixPath(m.name)
    if m.name.startswith(("/", "\\")) or p.is_absolute() or (len(m.name) > 1 and m.name[1] == ":"):
        return "has an absolute path"
    if ".." in p.parts or ".." in PurePosixPath(m.name.replace("\\", "/")).parts:
        return "has a '..' path component"
    if m.issym() or m.islnk():
        return f"is a {'symbolic' if m.issym() else 'hard'} link (to {m.linkname!r})"
    if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
        return "is a device or FIFO"
    if not (m.isfile() or m.isdir()):
        return "is not a regular file or directory"
    return None


def extract_members(archive: Path, wanted: dict[str, str], dest: Path) -> dict[str, Path]:
    """Safely extract the archive members ``wanted`` (member name -> output file name) into ``dest``.

    Every member of the archive is checked, wanted or not: an absolute path, a ``..`` component, a
    symbolic or hard link, a device or anything but a plain file or directory rejects the whole
    archive. Files are written by us to ``dest/<output name>`` (never to a path taken from the
    archive). ``dest`` should be a fresh private directory; on error the caller removes it.
    """
    out: dict[str, Path] = {}
    try:
        with tarfile.open(archive, "r:gz") as tf:
            for m in tf:
                problem = _member_problem(m)
                if problem:
                    raise DataError(
                        f"{archive}: refusing unsafe archive: member {m.name!r} {problem}"
                    )
                name = m.name[2:] if m.name.startswith("./") else m.name
                if name not in wanted or not m.isfile():
                    continue
                if m.size > MAX_MEMBER_BYTES:
                    raise DataError(f"{archive}: member {m.name!r} is {m.size} bytes; too large")
                target = dest / wanted[name]
                src = tf.extractfile(m)
                with open(target, "wb") as f:
                    shutil.copyfileobj(src, f, 1 << 20)
                out[name] = target
    except DataError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
        if isinstance(e, OSError) and not isinstance(e, gzip.BadGzipFile) and e.errno is not None:
            raise DataError(f"{archive}: could not extract into {dest}: {e}") from None
        raise DataError(
            f"{archive}: not a valid, complete .tar.gz archive ({type(e).__name__}: {e}); "
            "delete it and fetch it again"
        ) from None
    missing = [n for n in wanted if n not in out]
    if missing:
        raise DataError(f"{archive}: archive lacks member(s) {', '.join(missing)}; not the official archive")
    return out


def read_file_limited(path: Path, limit: int | None = None) -> bytes:
    limit = MAX_MEMBER_BYTES if limit is None else limit
    size = os.path.getsize(path)
    if size > limit:
        raise DataError(f"{path}: {size} bytes; too large for this dataset file")
    return Path(path).read_bytes()
