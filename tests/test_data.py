"""Tests of bioplausible.data: readers, lookup, verification, hostile files, splits, CLI.

Synthetic files are written here in the official formats (IDX .gz, CIFAR binary .tar.gz); their
content MD5s are put into the registry with monkeypatch (production code never skips a check).
Real data: BIOPLAUSIBLE_DATA or ../shared/datasets (MNIST, CIFAR-10), /usr/share/datasets
(Fashion-MNIST); those tests skip with a reason when the files are absent. No network: the
download function is replaced in every test.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import io
import os
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bioplausible.data import DATASETS, Dataset, dataset_status, fetch, load_dataset, verify
from bioplausible.data import readers, store
from bioplausible.data.cli import register
from bioplausible.errors import DataError, UserError

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("BIOPLAUSIBLE_DATA") or REPO.parent / "shared" / "datasets")
SYSTEM = Path("/usr/share/datasets")
MNIST_FILES = DATASETS["mnist"].files


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


# ------------------------------------------------------------------------------ file writers
def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.tobytes()


def gz(b: bytes) -> bytes:
    return gzip.compress(b, mtime=0)


def make_mnist(n_train=12, n_test=7, seed=0, hw=(28, 28)):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *hw), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, *hw), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    return arrays, {k: idx_bytes(v) for k, v in arrays.items()}


def write_mnist(directory: Path, contents: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for k, b in contents.items():
        (directory / f"{k}.gz").write_bytes(gz(b))
    return directory


def pin(monkeypatch, name, content_md5):
    """Put the MD5s of synthetic content into the registry for this test (all names sharing it)."""
    for n, spec in list(DATASETS.items()):
        if spec.folder == DATASETS[name].folder:
            monkeypatch.setitem(DATASETS, n, dataclasses.replace(spec, content_md5=dict(content_md5)))


def cifar_records(n, label_bytes, n_labels, seed):
    rng = np.random.default_rng(seed)
    labels = np.stack([rng.integers(0, k, n, dtype=np.uint8) for k in n_labels], axis=1)
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return labels, pixels, np.concatenate([labels, pixels], axis=1).tobytes()


def tar_gz(path: Path, members: dict[str, bytes], extra=()):
    """Write a .tar.gz with ``members`` (name -> bytes) and ``extra`` raw TarInfo entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra:
            tf.addfile(info)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def make_cifar10(directory: Path, n=4, seed=0, extra=(), tweak=None):
    spec = DATASETS["cifar10"]
    members, arrays = {}, {}
    for i, m in enumerate(spec.train_members + spec.test_members):
        labels, pixels, raw = cifar_records(n + i, 1, (10,), seed + i)
        if tweak and m in tweak:
            raw = tweak[m](raw)
        members[f"cifar-10-batches-bin/{m}"] = raw
        arrays[m] = (labels[:, 0], pixels)
    members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\n"
    tar_gz(directory / "cifar-10-binary.tar.gz", members, extra)
    md5s = {m: md5(members[f"cifar-10-batches-bin/{m}"]) for m in arrays}
    return arrays, md5s


def make_cifar100(directory: Path, n_train=9, n_test=5, seed=0, tweak=None):
    members, arrays = {}, {}
    for m, n in (("train.bin", n_train), ("test.bin", n_test)):
        labels, pixels, raw = cifar_records(n, 2, (20, 100), seed + n)
        if tweak and m in tweak:
            raw = tweak[m](raw)
        members[f"cifar-100-binary/{m}"] = raw
        arrays[m] = (labels, pixels)
    members["cifar-100-binary/fine_label_names.txt"] = b"apple\n"
    tar_gz(directory / "cifar-100-binary.tar.gz", members)
    return arrays


# ----------------------------------------------------------------------------------- fixtures
class NoNetwork(AssertionError):
    pass


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Empty cache and system dirs, no BIOPLAUSIBLE_DATA, and no network, for every test."""
    monkeypatch.setenv("BIOPLAUSIBLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BIOPLAUSIBLE_DATA", raising=False)
    monkeypatch.setattr(store, "SYSTEM_DIRS", (tmp_path / "system",))

    def no_network(url, known_hash, fname, path):
        raise NoNetwork(f"tests must not download ({url})")

    monkeypatch.setattr(store, "_retrieve", no_network)
    return tmp_path


@pytest.fixture
def mnist_dir(tmp_path, monkeypatch):
    arrays, contents = make_mnist()
    pin(monkeypatch, "mnist", {k: md5(v) for k, v in contents.items()})
    d = write_mnist(tmp_path / "data" / "mnist", contents)
    return d, arrays, contents


@pytest.fixture
def cifar10_dir(tmp_path, monkeypatch):
    arrays, md5s = make_cifar10(tmp_path / "data" / "cifar-10")
    pin(monkeypatch, "cifar10", md5s)
    return tmp_path / "data" / "cifar-10", arrays, md5s


# ----------------------------------------------------------------------------------- registry
def test_registry_describes_every_dataset():
    assert list(DATASETS) == ["mnist", "fashion-mnist", "cifar10", "cifar100", "cifar100-coarse"]
    expect = {
        "mnist": (10, 784, (1, 28, 28)),
        "fashion-mnist": (10, 784, (1, 28, 28)),
        "cifar10": (10, 3072, (3, 32, 32)),
        "cifar100": (100, 3072, (3, 32, 32)),
        "cifar100-coarse": (20, 3072, (3, 32, 32)),
    }
    for name, (k, d, shape) in expect.items():
        s = DATASETS[name]
        assert (s.n_classes, s.input_dim, s.shape) == (k, d, shape)
    assert DATASETS["mnist"].urls["train-images-idx3-ubyte.gz"] == (
        "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
        "http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz",
    )
    assert DATASETS["cifar10"].download_md5["cifar-10-binary.tar.gz"] == "c32a1d4ab5d03f1284b67883e8d87530"
    assert DATASETS["cifar100"].download_md5["cifar-100-binary.tar.gz"] == "03b5dce01913d631647c71ecec9e9cb8"
    assert DATASETS["mnist"].content_md5["train-images-idx3-ubyte"] == "6bbc9ace898e44ae57da46a324031adb"
    assert DATASETS["cifar10"].content_md5["test_batch.bin"] == "803d5f7f4d78ea53de84dbe85f74fb6d"
    assert DATASETS["cifar100"].folder == DATASETS["cifar100-coarse"].folder == "cifar-100"


# --------------------------------------------------------------------------------- IDX reading
def test_mnist_synthetic_exact_values(mnist_dir, tmp_path):
    d, arrays, _ = mnist_dir
    ds = load_dataset("mnist", data_dir=tmp_path / "data")
    assert isinstance(ds, Dataset)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.x_train.shape == (12, 784) and ds.x_test.shape == (7, 784)
    assert ds.x_val is None and ds.y_val is None
    assert (ds.n_classes, ds.input_dim, ds.shape) == (10, 784, (1, 28, 28))
    want = torch.from_numpy(arrays["train-images-idx3-ubyte"].reshape(12, -1).astype(np.float32)) / 255
    assert torch.equal(ds.x_train, want)
    assert ds.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert ds.x_train.min() >= 0 and ds.x_train.max() <= 1
    assert ds.source["origin"] == "data_dir"
    assert ds.source["directory"] == str(d)
    assert ds.source["files"]["t10k-labels-idx1-ubyte.gz"] == str(d / "t10k-labels-idx1-ubyte.gz")
    assert ds.source["verified"] is True


def test_flat_layout_and_env_var(mnist_dir, monkeypatch):
    d, arrays, _ = mnist_dir
    assert load_dataset("mnist", data_dir=d).source["directory"] == str(d)  # DIR/files
    monkeypatch.setenv("BIOPLAUSIBLE_DATA", str(d.parent))  # DIR/mnist/files
    ds = load_dataset("mnist")
    assert ds.source["origin"] == "BIOPLAUSIBLE_DATA" and ds.source["directory"] == str(d)


def test_lookup_order(tmp_path, monkeypatch):
    """data_dir, then BIOPLAUSIBLE_DATA, then the system dir, then the cache."""
    places = {
        "data_dir": tmp_path / "explicit" / "mnist",
        "BIOPLAUSIBLE_DATA": tmp_path / "env" / "mnist",
        "system": tmp_path / "system" / "mnist",
        "cache": tmp_path / "cache" / "mnist",
    }
    md5s = {}
    first_label = {}
    for i, (origin, d) in enumerate(places.items()):
        arrays, contents = make_mnist(seed=10 + i)
        write_mnist(d, contents)
        first_label[origin] = arrays["train-images-idx3-ubyte"][0, 0, :3].tolist()
        for k, v in contents.items():
            md5s.setdefault(k, set()).add(md5(v))
    # one table cannot hold four MD5s per file: accept exactly the synthetic set

    def check(spec, name, data, path, report):
        report["md5"][name] = {"expected": md5(data), "actual": md5(data)}
        assert md5(data) in md5s[name]

    monkeypatch.setattr(store, "_check_md5", check)
    monkeypatch.setenv("BIOPLAUSIBLE_DATA", str(tmp_path / "env"))
    order = list(places)
    for origin in order:
        data_dir = tmp_path / "explicit" if origin == "data_dir" else None
        ds = load_dataset("mnist", data_dir=data_dir)
        assert ds.source["origin"] == origin
        assert (ds.x_train[0, :3] * 255).round().to(torch.int64).tolist() == first_label[origin]
        if origin != "data_dir":  # remove this place: the next one in the order is used
            for f in places[origin].iterdir():
                if f.is_dir():  # the cache's decoded/ arrays: not an official file, not a place
                    continue
                f.unlink()


def test_missing_files_error_names_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOPLAUSIBLE_DATA", str(tmp_path / "envdata"))
    partial = tmp_path / "given" / "mnist"
    partial.mkdir(parents=True)
    (partial / "train-images-idx3-ubyte.gz").write_bytes(gz(b"x"))
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path / "given", download=False)
    msg = str(e.value)
    assert "\n" not in msg
    for place in (
        f"data_dir {tmp_path / 'given' / 'mnist'} (incomplete: missing train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)",
        f"data_dir {tmp_path / 'given' / 'MNIST'} (no such directory)",
        f"data_dir {tmp_path / 'given'}",
        f"BIOPLAUSIBLE_DATA {tmp_path / 'envdata' / 'mnist'} (no such directory)",
        f"BIOPLAUSIBLE_DATA {tmp_path / 'envdata'} (no such directory)",
        f"system {tmp_path / 'system' / 'mnist'} (no such directory)",
        f"cache {tmp_path / 'cache' / 'mnist'} (no such directory)",
        "--data-dir DIR",
        "BIOPLAUSIBLE_DATA=DIR",
        "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
        "No download was attempted (download=False",
    ):
        assert place in msg
    # without data_dir/env: says so
    monkeypatch.delenv("BIOPLAUSIBLE_DATA")
    with pytest.raises(DataError, match=r"--data-dir \(not given\); BIOPLAUSIBLE_DATA \(not set\); system"):
        load_dataset("cifar10", download=False)


def test_checksum_mismatch_names_file_and_md5s(mnist_dir, tmp_path):
    d, _, contents = mnist_dir
    flipped = bytearray(contents["train-images-idx3-ubyte"])
    flipped[100] ^= 0x01  # one bit in a pixel: structure intact, content wrong
    (d / "train-images-idx3-ubyte.gz").write_bytes(gz(bytes(flipped)))
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=d)
    msg = str(e.value)
    assert (
        f"mnist: checksum mismatch for train-images-idx3-ubyte in {d / 'train-images-idx3-ubyte.gz'}: "
        f"expected md5 {md5(contents['train-images-idx3-ubyte'])}, got {md5(bytes(flipped))}"
    ) in msg
    assert "replace" in msg and "bioplausible data fetch mnist" in msg
    assert (d / "train-images-idx3-ubyte.gz").exists()  # never delete the user's files


def test_corrupt_cached_file_is_deleted(tmp_path, monkeypatch):
    arrays, contents = make_mnist()
    pin(monkeypatch, "mnist", {k: md5(v) for k, v in contents.items()})
    cache = tmp_path / "cache" / "mnist"
    write_mnist(cache, contents)
    assert load_dataset("mnist").source["origin"] == "cache"
    bad = bytearray(contents["t10k-labels-idx1-ubyte"])
    bad[-1] = (bad[-1] + 1) % 10
    (cache / "t10k-labels-idx1-ubyte.gz").write_bytes(gz(bytes(bad)))
    with pytest.raises(DataError, match="checksum mismatch for t10k-labels-idx1-ubyte.*was deleted"):
        load_dataset("mnist", download=False)
    assert not (cache / "t10k-labels-idx1-ubyte.gz").exists()
    assert (cache / "train-images-idx3-ubyte.gz").exists()


def test_wrong_dataset_file_is_named(tmp_path):
    """Real MD5 tables: an MNIST file where Fashion-MNIST is expected is recognised as such."""
    d = tmp_path / "fm"
    d.mkdir()
    src = REAL_DATA / "mnist"
    if not (src / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found in {src}")
    for f in MNIST_FILES:
        (d / f).symlink_to(src / f)
    with pytest.raises(DataError, match=r"got 6bbc9ace898e44ae57da46a324031adb \(that is the mnist file"):
        load_dataset("fashion-mnist", data_dir=d)


# ----------------------------------------------------------------------------- hostile IDX files
def _idx_error(tmp_path, data: bytes, ndim=3, compress=True):
    p = tmp_path / "bad.gz"
    p.write_bytes(gz(data) if compress else data)
    with pytest.raises(DataError) as e:
        readers.parse_idx(readers.gunzip(p), ndim, str(p))
    assert str(p) in str(e.value)
    return str(e.value)


def test_idx_truncated_gzip(tmp_path):
    whole = gz(idx_bytes(np.zeros((3, 28, 28))))
    p = tmp_path / "t.gz"
    p.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=f"{p}: truncated gzip file"):
        readers.gunzip(p)


def test_idx_not_gzip(tmp_path):
    msg = _idx_error(tmp_path, idx_bytes(np.zeros((2, 28, 28))), compress=False)
    assert "not a gzip file" in msg


def test_idx_wrong_magic_type_and_ndim(tmp_path):
    good = idx_bytes(np.zeros((2, 28, 28)))
    assert "wrong IDX magic 01000803" in _idx_error(tmp_path, b"\x01" + good[1:])
    assert "type byte 0x0d is not 0x08" in _idx_error(tmp_path, good[:2] + b"\x0d" + good[3:])
    assert "IDX file has 3 dimensions, expected 1" in _idx_error(tmp_path, good, ndim=1)
    assert "too short for an IDX header (2 bytes)" in _idx_error(tmp_path, b"\x00\x00")


def test_idx_truncated_and_trailing_data(tmp_path):
    good = idx_bytes(np.zeros((2, 28, 28)))
    msg = _idx_error(tmp_path, good[:-5])
    assert "declares shape (2, 28, 28) = 1568 bytes of data but the file holds 1563" in msg
    msg = _idx_error(tmp_path, good + b"\x00")
    assert "1568 bytes of data but the file holds 1569" in msg


def test_idx_header_declaring_billions_is_rejected_before_allocating(tmp_path):
    data = bytes([0, 0, 8, 3]) + (0xFFFFFFFF).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 10
    t = time.perf_counter()
    msg = _idx_error(tmp_path, data)
    assert time.perf_counter() - t < 1.0
    assert f"declares shape (4294967295, 28, 28) = {4294967295 * 784} bytes of data but the file holds 10" in msg


def test_idx_decompression_bomb_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_IDX_BYTES", 1000)
    p = tmp_path / "bomb.gz"
    p.write_bytes(gz(b"\x00" * 5000))
    with pytest.raises(DataError, match=f"{p}: decompresses to more than 1000 bytes"):
        readers.gunzip(p)


def test_idx_wrong_image_size_count_mismatch_and_label_range(tmp_path, monkeypatch):
    arrays, contents = make_mnist(hw=(27, 28))
    pin(monkeypatch, "mnist", {k: md5(v) for k, v in contents.items()})
    d = write_mnist(tmp_path / "a", contents)
    with pytest.raises(DataError, match=f"{d / 'train-images-idx3-ubyte.gz'}: images are 27x28, expected 28x28"):
        load_dataset("mnist", data_dir=d)

    arrays, contents = make_mnist()
    contents["train-labels-idx1-ubyte"] = idx_bytes(arrays["train-labels-idx1-ubyte"][:-1])
    pin(monkeypatch, "mnist", {k: md5(v) for k, v in contents.items()})
    d = write_mnist(tmp_path / "b", contents)
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=d)
    assert str(e.value) == (
        f"{d / 'train-images-idx3-ubyte.gz'} has 12 images but {d / 'train-labels-idx1-ubyte.gz'} "
        "has 11 labels; the pair does not match"
    )

    labels = arrays["t10k-labels-idx1-ubyte"].copy()
    labels[3] = 10
    contents = dict(contents, **{"t10k-labels-idx1-ubyte": idx_bytes(labels)})
    contents["train-labels-idx1-ubyte"] = idx_bytes(arrays["train-labels-idx1-ubyte"])
    pin(monkeypatch, "mnist", {k: md5(v) for k, v in contents.items()})
    d = write_mnist(tmp_path / "c", contents)
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=d)
    assert str(e.value) == (
        f"{d / 't10k-labels-idx1-ubyte.gz'}: label 10 at record 3 is out of range (expected 0..9)"
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=64), ndim=st.integers(1, 3))
def test_idx_parser_fuzz_only_raises_data_error(data, ndim):
    """Arbitrary bytes (and valid headers with random sizes) either parse consistently or raise DataError."""
    for blob in (data, bytes([0, 0, 8, ndim]) + data):
        try:
            arr = readers.parse_idx(blob, ndim, "fuzz")
        except DataError as e:
            assert str(e).startswith("fuzz: ")
        else:
            assert arr.ndim == ndim and arr.size == len(blob) - 4 - 4 * ndim


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=7000), label_bytes=st.sampled_from([1, 2]))
def test_cifar_parser_fuzz_only_raises_data_error(data, label_bytes):
    try:
        x, y = readers.parse_cifar(data, label_bytes, (10,) if label_bytes == 1 else (20, 100), "fuzz")
    except DataError as e:
        assert str(e).startswith("fuzz")
    else:
        assert x.shape == (len(data) // (3072 + label_bytes), 3072) and int(y.max()) < 100


# ------------------------------------------------------------------------------------- CIFAR
def test_cifar10_synthetic_exact_values_and_cache(cifar10_dir, tmp_path):
    d, arrays, _ = cifar10_dir
    before = sorted(p.name for p in d.iterdir())
    ds = load_dataset("cifar10", data_dir=tmp_path / "data")
    assert sorted(p.name for p in d.iterdir()) == before  # nothing written beside the source
    spec = DATASETS["cifar10"]
    want_y = np.concatenate([arrays[m][0] for m in spec.train_members])
    want_x = np.concatenate([arrays[m][1] for m in spec.train_members])
    assert ds.y_train.tolist() == want_y.tolist() and len(ds.y_train) == 4 + 5 + 6 + 7 + 8
    assert torch.equal(ds.x_train, torch.from_numpy(want_x.astype(np.float32)) / 255)
    assert ds.y_test.tolist() == arrays["test_batch.bin"][0].tolist()
    assert ds.x_test.shape == (9, 3072) and ds.shape == (3, 32, 32)
    extracted = Path(ds.source["extracted"])
    assert extracted.parent == tmp_path / "cache" / "cifar-10" / "extracted"
    assert sorted(p.name for p in extracted.iterdir()) == sorted(spec.train_members + spec.test_members)
    assert ds.source["verified"] is True
    # the decoded arrays are cached beside the extraction; a second load reads them back
    decoded = Path(ds.source["decoded_cache"])
    assert decoded.parent == tmp_path / "cache" / "cifar-10" / "decoded"
    again = load_dataset("cifar10", data_dir=tmp_path / "data")
    assert again.source["decoded_cache"] == str(decoded) and again.source["verified"] is True
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)
    decoded.unlink()  # so that the next load reads the extraction again
    # a tampered extraction in the cache is detected and re-extracted from the archive
    raw = bytearray((extracted / "data_batch_3.bin").read_bytes())
    raw[10] ^= 0xFF
    (extracted / "data_batch_3.bin").write_bytes(bytes(raw))
    ds2 = load_dataset("cifar10", data_dir=tmp_path / "data")
    assert torch.equal(ds2.x_train, ds.x_train)
    assert (extracted / "data_batch_3.bin").read_bytes() != bytes(raw)


def test_cifar10_corrupt_member_checksum(tmp_path, monkeypatch):
    d = tmp_path / "c"
    _, md5s = make_cifar10(d)
    make_cifar10(d, tweak={"data_batch_2.bin": lambda r: r[:5] + bytes([r[5] ^ 1]) + r[6:]})
    pin(monkeypatch, "cifar10", md5s)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_dir=d)
    msg = str(e.value)
    assert f"checksum mismatch for data_batch_2.bin in {d / 'cifar-10-binary.tar.gz'}" in msg
    assert f"expected md5 {md5s['data_batch_2.bin']}, got " in msg
    assert (d / "cifar-10-binary.tar.gz").exists()
    assert not list((tmp_path / "cache" / "cifar-10" / "extracted").iterdir())  # failed extraction removed


def test_cifar10_corrupt_cached_archive_is_deleted(tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "cifar-10"
    _, md5s = make_cifar10(cache, tweak={"test_batch.bin": lambda r: r[:-1] + bytes([r[-1] ^ 1])})
    pin(monkeypatch, "cifar10", dict(md5s, **{"test_batch.bin": "0" * 32}))
    with pytest.raises(DataError, match="test_batch.bin.*expected md5 0{32}.*was deleted"):
        load_dataset("cifar10", download=False)
    assert not (cache / "cifar-10-binary.tar.gz").exists()


def test_cifar_bin_length_and_labels(tmp_path, monkeypatch):
    with pytest.raises(DataError) as e:
        readers.parse_cifar(b"\x00" * (3073 * 2 + 5), 1, (10,), "f.bin")
    assert str(e.value).startswith("f.bin: length 6151 is not a multiple of the record size 3073")
    with pytest.raises(DataError, match="f.bin: empty file"):
        readers.parse_cifar(b"", 1, (10,), "f.bin")
    rec = bytes([3]) + bytes(3072) + bytes([10]) + bytes(3072)
    with pytest.raises(DataError, match=r"f.bin: label 10 at record 1 is out of range \(expected 0..9\)"):
        readers.parse_cifar(rec, 1, (10,), "f.bin")
    # through load_dataset, unpinned content: the structure check names the archive member
    d = tmp_path / "c"
    _, md5s = make_cifar10(d, tweak={"data_batch_4.bin": lambda r: r[:-7]})
    pin(monkeypatch, "cifar10", {k: None for k in md5s})
    with pytest.raises(DataError, match=f"{d / 'cifar-10-binary.tar.gz'} member data_batch_4.bin: length"):
        load_dataset("cifar10", data_dir=d)


@pytest.mark.parametrize(
    "kind, expect",
    [
        ("absolute", "member '/etc/evil' has an absolute path"),
        ("dotdot", "member 'cifar-10-batches-bin/../../evil' has a '..' path component"),
        ("symlink", "member 'cifar-10-batches-bin/link' is a symbolic link (to '/etc/passwd')"),
        ("hardlink", "member 'cifar-10-batches-bin/hard' is a hard link (to '/etc/passwd')"),
        ("device", "member 'cifar-10-batches-bin/dev' is a device or FIFO"),
        ("fifo", "member 'cifar-10-batches-bin/fifo' is a device or FIFO"),
    ],
)
def test_hostile_archive_members_rejected(tmp_path, monkeypatch, kind, expect):
    info = {
        "absolute": lambda: tarfile.TarInfo("/etc/evil"),
        "dotdot": lambda: tarfile.TarInfo("cifar-10-batches-bin/../../evil"),
        "symlink": lambda: _link("cifar-10-batches-bin/link", tarfile.SYMTYPE),
        "hardlink": lambda: _link("cifar-10-batches-bin/hard", tarfile.LNKTYPE),
        "device": lambda: _typed("cifar-10-batches-bin/dev", tarfile.CHRTYPE),
        "fifo": lambda: _typed("cifar-10-batches-bin/fifo", tarfile.FIFOTYPE),
    }[kind]()
    d = tmp_path / "c"
    _, md5s = make_cifar10(d, extra=[info])
    pin(monkeypatch, "cifar10", md5s)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_dir=d)
    assert f"{d / 'cifar-10-binary.tar.gz'}: refusing unsafe archive: {expect}" in str(e.value)
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()
    extracted = tmp_path / "cache" / "cifar-10" / "extracted"
    assert not extracted.exists() or not list(extracted.iterdir())


def _link(name, type_):
    t = tarfile.TarInfo(name)
    t.type, t.linkname = type_, "/etc/passwd"
    return t


def _typed(name, type_):
    t = tarfile.TarInfo(name)
    t.type = type_
    return t


def test_bad_archives(tmp_path, monkeypatch):
    d = tmp_path / "c"
    _, md5s = make_cifar10(d)
    pin(monkeypatch, "cifar10", md5s)
    archive = d / "cifar-10-binary.tar.gz"
    whole = archive.read_bytes()
    archive.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=f"{archive}: not a valid, complete .tar.gz archive"):
        load_dataset("cifar10", data_dir=d)
    archive.write_bytes(b"plain text, not an archive" * 100)
    with pytest.raises(DataError, match=f"{archive}: not a valid, complete .tar.gz archive"):
        load_dataset("cifar10", data_dir=d)
    tar_gz(archive, {"cifar-10-batches-bin/data_batch_1.bin": bytes(3073)})
    with pytest.raises(DataError, match=f"{archive}: archive lacks member\\(s\\) cifar-10-batches-bin/data_batch_2.bin"):
        load_dataset("cifar10", data_dir=d)


def test_cifar100_fine_and_coarse(tmp_path):
    d = tmp_path / "data" / "cifar100"
    arrays = make_cifar100(d)
    fine = load_dataset("cifar100", data_dir=tmp_path / "data")
    coarse = load_dataset("cifar100-coarse", data_dir=tmp_path / "data")
    assert fine.n_classes == 100 and coarse.n_classes == 20
    assert fine.y_train.tolist() == arrays["train.bin"][0][:, 1].tolist()
    assert coarse.y_train.tolist() == arrays["train.bin"][0][:, 0].tolist()
    assert fine.y_test.tolist() == arrays["test.bin"][0][:, 1].tolist()
    assert torch.equal(fine.x_train, coarse.x_train)
    assert torch.equal(fine.x_test, torch.from_numpy(arrays["test.bin"][1].astype(np.float32)) / 255)
    assert fine.source["verified"] is None
    assert "content MD5 not pinned for train.bin, test.bin; record structure and label ranges checked only" in (
        fine.source["notes"]
    )
    assert fine.source["extracted"] == coarse.source["extracted"]  # shared extraction


def test_cifar100_label_out_of_range(tmp_path):
    def fine_101(raw):
        b = bytearray(raw)
        b[3074 * 2 + 1] = 101
        return bytes(b)

    make_cifar100(tmp_path / "c", tweak={"test.bin": fine_101})
    with pytest.raises(DataError, match=r"member test.bin \(label byte 1\): label 101 at record 2 is out of range \(expected 0..99\)"):
        load_dataset("cifar100", data_dir=tmp_path / "c")


# ------------------------------------------------------------------- standardisation and splits
def test_standardize_per_channel(cifar10_dir, tmp_path):
    plain = load_dataset("cifar10", data_dir=tmp_path / "data")
    ds = load_dataset("cifar10", data_dir=tmp_path / "data", standardize=True)
    per = ds.x_train.view(len(ds.x_train), 3, -1)
    assert torch.allclose(per.mean(dim=(0, 2)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(per.std(dim=(0, 2), correction=0), torch.ones(3), atol=1e-5)
    raw = plain.x_train.view(len(plain.x_train), 3, -1).double()
    mean, std = raw.mean(dim=(0, 2)), raw.std(dim=(0, 2), correction=0)
    assert ds.source["standardize"]["mean"] == pytest.approx(mean.tolist(), abs=1e-6)
    want_test = (plain.x_test.view(-1, 3, 1024).double() - mean[:, None]) / std[:, None]
    assert torch.allclose(ds.x_test.view(-1, 3, 1024).double(), want_test, atol=1e-5)  # train stats


def test_standardize_uses_training_part_only(mnist_dir, tmp_path):
    ds = load_dataset("mnist", data_dir=tmp_path / "data", standardize=True, validation=4, seed=1)
    assert abs(float(ds.x_train.mean())) < 1e-5 and abs(float(ds.x_train.std(correction=0)) - 1) < 1e-4
    assert abs(float(ds.x_val.mean())) > 1e-4


def test_validation_split(mnist_dir, tmp_path):
    full = load_dataset("mnist", data_dir=tmp_path / "data")
    a = load_dataset("mnist", data_dir=tmp_path / "data", validation=5, seed=3)
    b = load_dataset("mnist", data_dir=tmp_path / "data", validation=5, seed=3)
    c = load_dataset("mnist", data_dir=tmp_path / "data", validation=5, seed=4)
    assert (len(a.x_train), len(a.x_val), len(a.y_val)) == (7, 5, 5)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_val, c.x_val)
    val_idx = torch.randperm(12, generator=torch.Generator().manual_seed(3))[:5].sort().values
    assert torch.equal(a.x_val, full.x_train[val_idx])
    rows = {tuple(r.tolist()) for r in torch.cat([a.x_train, a.x_val])}
    assert rows == {tuple(r.tolist()) for r in full.x_train}
    assert torch.equal(a.x_test, full.x_test)
    f = load_dataset("mnist", data_dir=tmp_path / "data", validation=0.25)
    assert (len(f.x_train), len(f.x_val)) == (9, 3)


@pytest.mark.parametrize(
    "bad, match",
    [
        (-1, r"validation: invalid value -1; accepted: an int count in \[0, 11\]"),
        (12, r"validation: invalid value 12"),
        (1.0, r"validation: invalid value 1.0; accepted: a float fraction in \[0, 1\)"),
        (True, r"validation: invalid value True"),
        ("5", r"validation: invalid value '5'"),
        (0.01, r"validation: fraction 0.01 of 12 training examples is 0 examples"),
    ],
)
def test_validation_rejects_bad_values(mnist_dir, tmp_path, bad, match):
    with pytest.raises(UserError, match=match):
        load_dataset("mnist", data_dir=tmp_path / "data", validation=bad)


def test_bad_arguments():
    with pytest.raises(UserError, match="dataset: invalid value 'svhn'; accepted: mnist, fashion-mnist"):
        load_dataset("svhn")
    with pytest.raises(UserError, match="standardize: invalid value 'yes'"):
        load_dataset("mnist", standardize="yes")


# ------------------------------------------------------------------------------------ download
def test_download_falls_back_to_mirror_and_checks_archive_md5(tmp_path, monkeypatch):
    _, contents = make_mnist()
    pin(monkeypatch, "mnist", {k: md5(v) for k, v in contents.items()})
    calls = []

    def fake_retrieve(url, known_hash, fname, path):
        calls.append((url, known_hash))
        if "ossci" in url:
            raise ConnectionError("mirror down")
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / fname).write_bytes(gz(contents[fname[:-3]]))
        return str(Path(path) / fname)

    monkeypatch.setattr(store, "_retrieve", fake_retrieve)
    paths = fetch("mnist")
    assert paths["train-images-idx3-ubyte.gz"] == tmp_path / "cache" / "mnist" / "train-images-idx3-ubyte.gz"
    assert calls[:2] == [
        ("https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz", "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        ("http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz", "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    ]
    assert len(calls) == 8
    # now found in the cache: no more downloads
    monkeypatch.setattr(store, "_retrieve", lambda *a: pytest.fail("downloaded again"))
    assert load_dataset("mnist").source["origin"] == "cache"


def test_download_failure_lists_urls(monkeypatch):
    def down(url, known_hash, fname, path):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(store, "_retrieve", down)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10")
    msg = str(e.value)
    assert msg.startswith(
        "cifar10: could not download cifar-10-binary.tar.gz (https://www.cs.toronto.edu/~kriz/"
        "cifar-10-binary.tar.gz: ConnectionError: no route to host)"
    )
    assert "--data-dir DIR" in msg


# -------------------------------------------------------------------------------- status + CLI
def test_dataset_status(mnist_dir, tmp_path):
    rows = {r["name"]: r for r in dataset_status(tmp_path / "data")}
    assert list(rows) == list(DATASETS)
    assert rows["mnist"]["found"] is True and rows["mnist"]["verified"] is True
    assert rows["mnist"]["path"] == str(mnist_dir[0]) and rows["mnist"]["origin"] == "data_dir"
    assert rows["cifar10"]["found"] is False and rows["cifar10"]["verified"] is None
    (mnist_dir[0] / "t10k-images-idx3-ubyte.gz").write_bytes(gz(b"\x00\x00\x08\x03"))
    rows = {r["name"]: r for r in dataset_status(tmp_path / "data")}
    assert rows["mnist"]["verified"] is False and "checksum mismatch" in rows["mnist"]["message"]
    rows = {r["name"]: r for r in dataset_status(tmp_path / "data", verify_content=False)}
    assert rows["mnist"]["verified"] is None and rows["mnist"]["found"] is True


def _cli(*argv):
    ap = argparse.ArgumentParser(prog="bioplausible")
    register(ap.add_subparsers(dest="command"))
    args = ap.parse_args(list(argv))
    out = io.StringIO()
    return args.func(args, out=out), out.getvalue()


def test_cli_list_verify_fetch(mnist_dir, tmp_path, monkeypatch):
    d = str(tmp_path / "data")
    rc, out = _cli("data", "--data-dir", d)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"mnist            verified   data_dir: {mnist_dir[0]}")
    assert lines[2].startswith("cifar10          missing    -")
    rc, out = _cli("data", "verify", "mnist", "--data-dir", d)
    assert rc == 0 and out.splitlines()[0] == f"mnist: verified; from data_dir: {mnist_dir[0]}"
    with pytest.raises(DataError, match="cifar10: dataset files not found"):
        _cli("data", "verify", "cifar10", "--data-dir", d)
    with pytest.raises(DataError, match="could not download cifar-10-binary.tar.gz .*NoNetwork"):
        _cli("data", "fetch", "cifar10")
    with pytest.raises(UserError, match="dataset name: invalid value 'mnistt'; accepted: mnist, fashion"):
        _cli("data", "fetch", "mnistt")
    rc, out = _cli("data", "--data-dir", d, "verify", "mnist")  # option before the sub-command
    assert rc == 0 and out.splitlines()[0] == f"mnist: verified; from data_dir: {mnist_dir[0]}"
    rc, out = _cli("data", "fetch", "mnist", "--data-dir", d)
    assert rc == 0 and "verified" in out
    (mnist_dir[0] / "train-labels-idx1-ubyte.gz").write_bytes(b"junk")
    rc, out = _cli("data", "--data-dir", d)
    assert rc == 1 and "FAILED" in out.splitlines()[0]


# ------------------------------------------------------------------------------------ real data
def _need(path: Path):
    if not path.exists():
        pytest.skip(f"real dataset not present at {path}")


def test_real_mnist(monkeypatch):
    _need(REAL_DATA / "mnist" / "train-images-idx3-ubyte.gz")
    t = time.perf_counter()
    xtr, ytr, xte, yte, report = store.load_raw("mnist", REAL_DATA, download=False)
    assert time.perf_counter() - t < 2.0
    assert report["verified"] is True
    assert {k: v["actual"] for k, v in report["md5"].items()} == dict(DATASETS["mnist"].content_md5)
    assert xtr.shape == (60000, 784) and xte.shape == (10000, 784)
    assert ytr[:5].tolist() == [5, 0, 4, 1, 9]
    assert round(float(xtr.mean(dtype=np.float64)), 2) == 33.32
    assert np.bincount(yte).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_fashion_mnist_from_system_dir(monkeypatch):
    _need(SYSTEM / "fashion-mnist" / "train-images-idx3-ubyte.gz")
    monkeypatch.setattr(store, "SYSTEM_DIRS", (SYSTEM,))
    xtr, ytr, xte, yte, report = store.load_raw("fashion-mnist", None, download=False)
    assert report["origin"] == "system" and report["verified"] is True
    assert report["directory"] == str(SYSTEM / "fashion-mnist")
    assert xtr.shape == (60000, 784) and len(yte) == 10000
    assert ytr[:5].tolist() == [9, 0, 0, 3, 0]
    assert np.bincount(ytr).tolist() == [6000] * 10


def test_real_cifar10(tmp_path):
    archive = REAL_DATA / "cifar-10" / "cifar-10-binary.tar.gz"
    _need(archive)
    before = sorted(os.listdir(archive.parent))
    xtr, ytr, xte, yte, report = store.load_raw("cifar10", REAL_DATA, download=False)
    assert sorted(os.listdir(archive.parent)) == before
    assert report["verified"] is True
    assert {k: v["actual"] for k, v in report["md5"].items()} == dict(DATASETS["cifar10"].content_md5)
    assert xtr.shape == (50000, 3072) and xte.shape == (10000, 3072)
    assert ytr[:5].tolist() == [6, 9, 9, 4, 1]
    means = xtr.reshape(50000, 3, 1024).mean(axis=(0, 2), dtype=np.float64)
    assert np.round(means, 2).tolist() == [125.31, 122.95, 113.87]
    assert np.bincount(yte).tolist() == [1000] * 10


def test_decoded_cache_is_keyed_by_the_source_bytes_and_never_trusted_when_damaged(mnist_dir, tmp_path, monkeypatch):
    """The decoded-array cache: a second load is served from it with the same arrays and report; a source
    file whose bytes change is decoded and checked afresh (a failing checksum fails, cache or not); a
    damaged cache entry is ignored and rewritten."""
    d, _, contents = mnist_dir
    first = load_dataset("mnist", data_dir=tmp_path / "data")
    entry = Path(first.source["decoded_cache"])
    assert entry.parent == tmp_path / "cache" / "mnist" / "decoded" and entry.is_file()
    calls = []
    real_gunzip = store.readers.gunzip
    monkeypatch.setattr(store.readers, "gunzip", lambda *a, **k: calls.append(a) or real_gunzip(*a, **k))
    second = load_dataset("mnist", data_dir=tmp_path / "data")
    assert not calls  # nothing decompressed: read back from the cache
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(second, k), getattr(first, k))
    assert second.source["md5"] == first.source["md5"] and second.source["verified"] is True
    # a damaged entry is rebuilt, not trusted
    raw = bytearray(entry.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    entry.write_bytes(bytes(raw))
    third = load_dataset("mnist", data_dir=tmp_path / "data")
    assert calls and torch.equal(third.x_train, first.x_train)
    assert entry.read_bytes() != bytes(raw)  # rewritten
    # one source byte changed: another key, so the content checksum runs again, and fails
    bad = bytearray(contents["train-images-idx3-ubyte"])
    bad[-1] ^= 0x01
    write_mnist(d, {**contents, "train-images-idx3-ubyte": bytes(bad)})
    with pytest.raises(DataError, match="checksum mismatch for train-images-idx3-ubyte"):
        load_dataset("mnist", data_dir=tmp_path / "data")


def test_rows_hint_gives_the_same_values_as_slicing(mnist_dir, tmp_path):
    full = load_dataset("mnist", data_dir=tmp_path / "data")
    part = load_dataset("mnist", data_dir=tmp_path / "data", rows=(3, 2))
    assert torch.equal(part.x_train, full.x_train[:3]) and torch.equal(part.y_train, full.y_train[:3])
    assert torch.equal(part.x_test, full.x_test[:2]) and torch.equal(part.y_test, full.y_test[:2])
    assert part.source["rows"] == {"train": 3, "test": 2}
    # a validation split or standardization needs every training row: the hint then changes nothing
    for kw in ({"validation": 2}, {"standardize": True}):
        a = load_dataset("mnist", data_dir=tmp_path / "data", rows=(3, 2), **kw)
        b = load_dataset("mnist", data_dir=tmp_path / "data", **kw)
        assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test) and "rows" not in a.source
