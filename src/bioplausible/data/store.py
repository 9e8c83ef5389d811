"""Finding, downloading, extracting and verifying the dataset files (see the package docstring).

The one entry point used by the rest of the package is :func:`load_raw`, which returns uint8
arrays plus a report saying where each file came from and how it was verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, UserError
from . import readers
from .registry import DATASETS, DatasetSpec

#: System-wide dataset directories (Debian's ``dataset-*`` packages install here).
SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)
ENV_DATA = "BIOPLAUSIBLE_DATA"
ENV_CACHE = "BIOPLAUSIBLE_CACHE"


def cache_dir() -> Path:
    """The cache directory: ``$BIOPLAUSIBLE_CACHE`` or ``platformdirs.user_cache_dir("bioplausible")``."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("bioplausible"))


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise UserError(f"dataset: invalid value {name!r}; accepted: {', '.join(DATASETS)}")
    return DATASETS[name]


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------- lookup
@dataclass
class Located:
    """Where a dataset's files were found: ``origin`` is one of ``data_dir``, ``BIOPLAUSIBLE_DATA``,
    ``system``, ``cache`` (``downloaded`` when fetched just now)."""

    origin: str
    directory: Path
    paths: dict[str, Path]
    notes: list[str] = field(default_factory=list)


def search_places(spec: DatasetSpec, data_dir=None) -> list[tuple[str, Path]]:
    """Every directory searched for ``spec``'s files, in lookup order, with its origin label."""
    places: list[tuple[str, Path]] = []
    roots = []
    if data_dir is not None:
        roots.append(("data_dir", Path(os.path.abspath(Path(data_dir).expanduser()))))
    env = os.environ.get(ENV_DATA)
    if env:
        roots.append((ENV_DATA, Path(os.path.abspath(Path(env).expanduser()))))
    for label, root in roots:
        places += [(label, root / f) for f in spec.folders]
        places.append((label, root))
    for root in SYSTEM_DIRS:
        places += [("system", root / f) for f in spec.folders]
    places.append(("cache", cache_dir() / spec.folder))
    return places


def locate(spec: DatasetSpec, data_dir=None) -> Located | None:
    """The first searched directory holding all of ``spec.files``, or ``None``."""
    for origin, d in search_places(spec, data_dir):
        paths = {f: d / f for f in spec.files}
        if all(p.is_file() for p in paths.values()):
            return Located(origin, d, paths)
    return None


def not_found_message(spec: DatasetSpec, data_dir=None, download_note: str = "") -> str:
    parts = []
    for origin, d in search_places(spec, data_dir):
        present = [f for f in spec.files if (d / f).is_file()]
        note = ""
        if not d.is_dir():
            note = " (no such directory)"
        elif present:
            note = f" (incomplete: missing {', '.join(f for f in spec.files if f not in present)})"
        parts.append(f"{origin} {d}{note}")
    if data_dir is None:
        parts.insert(0, "--data-dir (not given)")
    if not os.environ.get(ENV_DATA):
        parts.insert(1 if data_dir is None else len(parts) - len(SYSTEM_DIRS) * len(spec.folders) - 1,
                     f"{ENV_DATA} (not set)")
    urls = "; ".join(f"{f} from {spec.urls[f][0]}" for f in spec.files)
    return (
        f"{spec.name}: dataset files not found ({', '.join(spec.files)}). Searched in order: "
        + "; ".join(parts)
        + f". {download_note}To provide them, put the official files in DIR/{spec.folder}/ "
        f"(or directly in DIR) and pass --data-dir DIR (data_dir=DIR in Python) or set {ENV_DATA}=DIR, "
        f"or let the library download them into the cache (`bioplausible data fetch {spec.name}`, "
        f"load_dataset(..., download=True)): {urls}"
    )


# --------------------------------------------------------------------------------------- download
def _retrieve(url: str, known_hash: str | None, fname: str, path: Path) -> str:
    import pooch

    return pooch.retrieve(url, known_hash=known_hash, fname=fname, path=path, progressbar=False)


def download(spec: DatasetSpec) -> Located:
    """Download ``spec.files`` from the official URLs (mirrors in order) into the cache."""
    dest = cache_dir() / spec.folder
    _makedirs(dest)
    paths = {}
    for f in spec.files:
        md5 = spec.download_md5.get(f)
        errors = []
        for url in spec.urls[f]:
            try:
                paths[f] = Path(_retrieve(url, f"md5:{md5}" if md5 else None, f, dest))
                break
            except Exception as e:  # network, HTTP or hash errors from pooch: try the next mirror
                errors.append(f"{url}: {type(e).__name__}: {e}".replace("\n", " "))
        else:
            raise DataError(
                f"{spec.name}: could not download {f} ({'; '.join(errors)}). "
                + not_found_message(spec, None, "")
            )
    return Located("downloaded", dest, paths)


def _makedirs(d: Path) -> None:
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"cannot create the cache directory {d} ({e}); set {ENV_CACHE} to a writable directory"
        ) from None


def resolve(spec: DatasetSpec, data_dir=None, download_ok: bool = True) -> Located:
    found = locate(spec, data_dir)
    if found is not None:
        return found
    if not download_ok:
        raise DataError(not_found_message(spec, data_dir, "No download was attempted (download=False, or `bioplausible data verify`, which never downloads). "))
    return download(spec)


# ------------------------------------------------------------------------------ bad-file handling
def _in_cache(path: Path) -> bool:
    try:
        Path(path).resolve().relative_to(cache_dir().resolve())
        return True
    except (ValueError, OSError):
        return False


def _bad_file(spec: DatasetSpec, path: Path, message: str, extra_delete=()) -> DataError:
    """Build the error for a corrupt file; a corrupt file in our cache is deleted (never reused)."""
    if _in_cache(path):
        for p in (path, *extra_delete):
            shutil.rmtree(p, ignore_errors=True) if Path(p).is_dir() else Path(p).unlink(missing_ok=True)
        how = (
            f"the corrupt cached copy {path} was deleted; run again (or `bioplausible data fetch "
            f"{spec.name}`) to download it afresh"
        )
    else:
        how = (
            f"replace {path} with an intact copy of the official file, or remove it and run "
            f"`bioplausible data fetch {spec.name}` to download one into the cache"
        )
    return DataError(f"{message}; {how}")


def _other_dataset(md5: str) -> str:
    for s in DATASETS.values():
        for f, m in s.content_md5.items():
            if m == md5:
                return f" (that is the {s.name} file {f})"
    return ""


def _check_md5(spec, content_name, data, path, report):
    expected = spec.content_md5.get(content_name)
    actual = md5_bytes(data)
    report["md5"][content_name] = {"expected": expected, "actual": actual}
    if expected is not None and actual != expected:
        raise DataError(
            f"{spec.name}: checksum mismatch for {content_name} in {path}: expected md5 {expected}, "
            f"got {actual}{_other_dataset(actual)}"
        )


# ------------------------------------------------------------------------------------------ load
def load_raw(name: str, data_dir=None, download: bool = True):
    """Find (or download), verify and parse a dataset.

    Returns ``(x_train, y_train, x_test, y_test, report)`` with uint8 images ``(N, D)`` and int64
    labels; ``report`` has ``origin``, ``directory``, ``files`` (official file -> path),
    ``md5`` (content file -> expected/actual), ``verified`` (True: every content MD5 matched;
    None: some content MD5 is not pinned, structure checked only) and ``notes``.
    """
    spec = get_spec(name)
    loc = resolve(spec, data_dir, download)
    report = {
        "origin": loc.origin,
        "directory": str(loc.directory),
        "files": {f: str(p) for f, p in loc.paths.items()},
        "md5": {},
        "notes": list(loc.notes),
    }
    # the decoded arrays of files whose exact bytes were verified before (see _decoded_path)
    file_md5 = {f: md5_file(p) for f, p in sorted(loc.paths.items())}
    cached = _read_decoded(spec, file_md5, report)
    if cached is not None:
        return (*cached, report)
    if spec.format == "idx":
        arrays = _load_idx(spec, loc, report)
    else:
        arrays = _load_cifar(spec, loc, report, amd5=file_md5[spec.files[0]])
    pinned = all(v["expected"] is not None for v in report["md5"].values())
    official = report.get("archive_md5", {})
    if pinned or (official and official["actual"] == official["official_download"]):
        report["verified"] = True
    else:
        report["verified"] = None  # structure checked, content MD5 not pinned
    _write_decoded(spec, file_md5, arrays, report, content_notes=report["notes"][len(loc.notes):])
    return (*arrays, report)


# -------------------------------------------------------------------------------- decoded cache
# Decompressing, checksumming and parsing the official files costs 0.3 s (MNIST) to ~1 s (CIFAR) per
# load, paid by every process (every sweep worker, every ``bioplausible train``). After a successful
# load the uint8 arrays and the verification report are kept in
# ``<cache>/<folder>/decoded/<hash of the dataset name and its source files' MD5s>.npz``; a later load
# whose source files have exactly those bytes (their MD5 is recomputed each time: ~25 ms for MNIST)
# reads them back instead. A file whose bytes changed in any way has another key, so it is verified afresh; a cache
# entry that is unreadable or of the wrong shape is ignored and rewritten. Nothing but this library's
# own verified output is ever written there.
_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
_PER_LOCATION = ("origin", "directory", "files", "notes")


def _decoded_path(spec, file_md5: dict) -> Path:
    # the dataset's name too: cifar100 and cifar100-coarse read the same files into different labels
    key = hashlib.sha256(repr((spec.name, sorted(file_md5.items()))).encode()).hexdigest()[:32]
    return cache_dir() / spec.folder / "decoded" / f"{key}.npz"


def _read_decoded(spec, file_md5: dict, report: dict):
    path = _decoded_path(spec, file_md5)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = [z[k] for k in _ARRAYS]
            saved = json.loads(str(z["report"]))
        x_train, y_train, x_test, y_test = arrays
        ok = (saved.get("file_md5") == file_md5 and saved.get("dataset") == spec.name
              and x_train.dtype == x_test.dtype == np.uint8
              and x_train.shape[1:] == x_test.shape[1:] == (int(np.prod(spec.shape)),)
              and len(x_train) == len(y_train) and len(x_test) == len(y_test))
    except Exception:  # noqa: BLE001 - a damaged cache entry is rebuilt, never trusted
        ok = False
    if not ok:
        return None
    for k, v in saved.items():
        if k not in _PER_LOCATION and k not in ("file_md5", "dataset", "content_notes"):
            report[k] = v
    report["notes"] += saved.get("content_notes", [])
    report["decoded_cache"] = str(path)
    return arrays


def _write_decoded(spec, file_md5: dict, arrays, report: dict, content_notes=()) -> None:
    path = _decoded_path(spec, file_md5)
    saved = {k: v for k, v in report.items() if k not in _PER_LOCATION}
    saved["file_md5"] = file_md5
    saved["dataset"] = spec.name
    saved["content_notes"] = list(content_notes)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=".npz", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **dict(zip(_ARRAYS, arrays)), report=np.array(json.dumps(saved)))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        return  # an unwritable cache only costs the next load its decoding time
    report["decoded_cache"] = str(path)


def _load_idx(spec, loc, report):
    out = []
    for split in ("train", "t10k"):
        img_f, lab_f = f"{split}-images-idx3-ubyte.gz", f"{split}-labels-idx1-ubyte.gz"
        parsed = {}
        for f, ndim in ((img_f, 3), (lab_f, 1)):
            path = loc.paths[f]
            try:
                data = readers.gunzip(path)
                _check_md5(spec, f[:-3], data, path, report)
                parsed[f] = readers.parse_idx(data, ndim, str(path))
            except DataError as e:
                raise _bad_file(spec, path, str(e)) from None
        out += readers.check_idx_pair(
            parsed[img_f], parsed[lab_f], loc.paths[img_f], loc.paths[lab_f], spec.shape[1:],
            spec.n_classes,
        )
    return out


def _extract_cifar(spec, archive: Path, amd5: str | None = None):
    """Extract the wanted members into ``cache/<folder>/extracted/<archive md5>/`` (reused if there)."""
    amd5 = amd5 or md5_file(archive)
    root = cache_dir() / spec.folder / "extracted" / amd5
    members = spec.train_members + spec.test_members
    if all((root / m).is_file() for m in members):
        return root, amd5, True
    _makedirs(root.parent)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=root.parent))
    try:
        readers.extract_members(archive, {f"{spec.archive_dir}/{m}": m for m in members}, tmp)
        shutil.rmtree(root, ignore_errors=True)  # an incomplete earlier extraction
        try:
            os.rename(tmp, root)
        except OSError:  # another process finished first
            if not all((root / m).is_file() for m in members):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root, amd5, False


def _read_members(spec, root: Path, archive: Path, report):
    splits = []
    for members in (spec.train_members, spec.test_members):
        xs, ys = [], []
        for m in members:
            path = root / m
            data = readers.read_file_limited(path)
            _check_md5(spec, m, data, f"{archive} (extracted to {path})", report)
            x, labels = readers.parse_cifar(
                data, spec.label_bytes, spec.label_classes, f"{archive} member {m}"
            )
            xs.append(x)
            ys.append(labels[:, spec.label_index].astype(np.int64))
        splits += [np.concatenate(xs), np.concatenate(ys)]
    return splits


def _load_cifar(spec, loc, report, amd5: str | None = None):
    archive = loc.paths[spec.files[0]]
    official = spec.download_md5.get(spec.files[0])
    for attempt in (0, 1):
        try:
            root, amd5, reused = _extract_cifar(spec, archive, amd5)
        except DataError as e:
            if "could not extract into" in str(e) or "cache directory" in str(e):
                raise  # our cache is the problem, not the archive
            raise _bad_file(spec, archive, str(e)) from None
        report["archive_md5"] = {"official_download": official, "actual": amd5}
        report["extracted"] = str(root)
        try:
            splits = _read_members(spec, root, archive, report)
            break
        except DataError as e:
            shutil.rmtree(root, ignore_errors=True)  # never reuse an extraction that failed
            if reused and attempt == 0:
                report["md5"].clear()
                continue  # the cached extraction may be what is corrupt: extract afresh once
            raise _bad_file(spec, archive, str(e)) from None
    unpinned = [k for k, v in report["md5"].items() if v["expected"] is None]
    if amd5 == official:
        report["notes"].append("archive MD5 matches the official download")
    if unpinned:
        report["notes"].append(
            f"content MD5 not pinned for {', '.join(unpinned)}; "
            + ("verified by the archive MD5" if amd5 == official else "record structure and label ranges checked only")
        )
    return splits
