"""Datasets in their official formats: lookup, download, checksum, safe extraction, readers.

Datasets (see :data:`DATASETS`): ``mnist``, ``fashion-mnist`` (IDX ``.gz`` files), ``cifar10``
(``cifar-10-binary.tar.gz``), ``cifar100`` (fine labels, 100 classes) and ``cifar100-coarse``
(same archive ``cifar-100-binary.tar.gz``, coarse labels, 20 classes). No pickle, no torchvision.

Lookup order (the first directory holding *all* of a dataset's official files wins):

1. the explicit ``data_dir`` argument (CLI ``--data-dir DIR``): ``DIR/<folder>/`` for each folder
   name of the dataset (e.g. ``mnist``, ``fashion-mnist``, ``cifar-10`` or ``cifar10``,
   ``cifar-100`` or ``cifar100``), then ``DIR/`` itself;
2. the environment variable ``BIOPLAUSIBLE_DATA`` (a directory), searched the same way; the layout
   of ``../shared/datasets`` (``mnist/*.gz``, ``cifar-10/cifar-10-binary.tar.gz``) works as is;
3. the system directory ``/usr/share/datasets/<folder>/`` (Debian's ``dataset-fashion-mnist``
   installs ``/usr/share/datasets/fashion-mnist/*.gz``);
4. the user cache ``platformdirs.user_cache_dir("bioplausible")/<folder>/`` (override with the
   environment variable ``BIOPLAUSIBLE_CACHE``);
5. only then, if ``download=True``, a download with ``pooch`` from the official URLs into the cache
   (MNIST: ossci-datasets.s3.amazonaws.com, then yann.lecun.com; Fashion-MNIST: Zalando's S3 site;
   CIFAR: www.cs.toronto.edu/~kriz/). Downloads are checked against the official archive MD5s.

Verification: wherever the files were found, the *decompressed content* is checked against the
official MD5s (IDX files; CIFAR-10 ``.bin`` members), because redistributed copies may re-make the
gzip/tar wrapper. CIFAR-100's content MD5s are not pinned: a CIFAR-100 archive is "verified" only
when its archive MD5 equals the official download's; otherwise its record structure and label
ranges are checked and ``verified`` is ``None``. A file that fails is never used; a corrupt file
in the cache is deleted so the next call downloads it afresh. Files outside the cache are never
modified: CIFAR archives are extracted (member by member, after rejecting absolute paths, ``..``,
links and devices) into ``<cache>/<folder>/extracted/<archive md5>/`` and reused from there.

Decoded cache: after a load has verified and parsed the files, the uint8 arrays and the verification
report are written (atomically) to ``<cache>/<folder>/decoded/<key>.npz``, the key being a hash of the
dataset name and the MD5s of the source files' bytes (recomputed on every load, ~25 ms for MNIST). A
later load of byte-identical files reads them back instead of decompressing, checksumming and parsing
again; a changed file has another key and is verified afresh; an unreadable entry (the zip CRC catches
damage) is ignored and rewritten; an unwritable cache only costs the next load its decoding time.
"""

from __future__ import annotations

from ..errors import DataError
from .loader import Dataset, load_dataset
from .registry import DATASETS, DatasetSpec
from .store import cache_dir, get_spec, load_raw, locate

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetSpec",
    "load_dataset",
    "dataset_status",
    "fetch",
    "verify",
    "cache_dir",
]


def verify(name: str, data_dir=None, download: bool = False) -> dict:
    """Find (and, if ``download``, fetch) a dataset, verify and parse it; return the source report.

    Raises :class:`DataError` when the files are missing, corrupt or hostile. ``report["verified"]``
    is ``True`` when every content MD5 matched, ``None`` when some are not pinned (CIFAR-100).
    """
    *_, report = load_raw(name, data_dir, download)
    return report


def fetch(name: str, data_dir=None) -> dict:
    """Make a dataset available: find it or download it into the cache, then verify it.

    Returns ``{official file name: Path}`` of the files used.
    """
    from pathlib import Path

    report = verify(name, data_dir, download=True)
    return {f: Path(p) for f, p in report["files"].items()}


def dataset_status(data_dir=None, verify_content: bool = True) -> list[dict]:
    """One dict per dataset: ``name``, ``found``, ``origin``, ``path`` (directory), ``paths``
    (official file -> path), ``verified`` (True / False / None = not checked or not pinned) and
    ``message``. Never downloads; with ``verify_content`` the files are checked (this may extract a
    CIFAR archive into the cache once)."""
    out = []
    for name, spec in DATASETS.items():
        loc = locate(spec, data_dir)
        row = {
            "name": name,
            "found": loc is not None,
            "origin": loc.origin if loc else None,
            "path": str(loc.directory) if loc else None,
            "paths": {f: str(p) for f, p in loc.paths.items()} if loc else {},
            "verified": None,
            "message": "",
        }
        if loc is None:
            row["message"] = f"not found; `bioplausible data fetch {name}` downloads it"
        elif verify_content:
            try:
                report = verify(name, data_dir, download=False)
                row["verified"] = report["verified"]
                row["message"] = "; ".join(report["notes"]) or (
                    "content MD5s match" if report["verified"] else ""
                )
            except DataError as e:
                row["verified"] = False
                row["message"] = str(e)
        else:
            row["message"] = "not verified"
        out.append(row)
    return out
