"""The dataset registry: what each dataset is and where its official files come from.

Each entry of :data:`DATASETS` is plain data (a frozen :class:`DatasetSpec`). Two names may share the
same files (``cifar100`` and ``cifar100-coarse`` read the same archive and differ only in the label
byte used); they then share a ``folder``, so the files are found, cached and downloaded once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@dataclass(frozen=True)
class DatasetSpec:
    """Static description of one dataset.

    ``files`` are the official distribution files (what is looked up and downloaded);
    ``urls`` maps each of them to its download URLs, tried in order (primary, then mirrors);
    ``download_md5`` is the MD5 of the official *download* (``None`` where not pinned); it guards
    downloads only, because redistributed copies may re-make the gzip/tar wrapper;
    ``content_md5`` maps each decompressed content file (IDX file, or archive member ``.bin``) to its
    official MD5 (``None`` = not pinned: the record structure is still checked). The content is
    always verified, wherever the files were found.
    """

    name: str
    format: str  # "idx" or "cifar"
    n_classes: int
    shape: tuple[int, int, int]  # (C, H, W)
    folder: str  # folder name under a data directory, the system directory and the cache
    aliases: tuple[str, ...]  # other accepted folder names under a data directory
    files: tuple[str, ...]
    urls: Mapping[str, tuple[str, ...]]
    download_md5: Mapping[str, str | None]
    content_md5: Mapping[str, str | None]
    # CIFAR only: folder inside the archive, members per split, label bytes per record and the
    # index of the label byte used.
    archive_dir: str = ""
    train_members: tuple[str, ...] = ()
    test_members: tuple[str, ...] = ()
    label_bytes: int = 1
    label_index: int = 0
    label_classes: tuple[int, ...] = field(default=())  # range of each label byte, for checks
    description: str = ""

    @property
    def input_dim(self) -> int:
        c, h, w = self.shape
        return c * h * w

    @property
    def folders(self) -> tuple[str, ...]:
        return (self.folder, *self.aliases)


def _idx_spec(name, folder, aliases, bases, download_md5, content_md5, description):
    return DatasetSpec(
        name=name,
        format="idx",
        n_classes=10,
        shape=(1, 28, 28),
        folder=folder,
        aliases=aliases,
        files=_MNIST_FILES,
        urls=MappingProxyType({f: tuple(b + f for b in bases) for f in _MNIST_FILES}),
        download_md5=MappingProxyType(dict(zip(_MNIST_FILES, download_md5))),
        content_md5=MappingProxyType(dict(zip((f[:-3] for f in _MNIST_FILES), content_md5))),
        description=description,
    )


_MNIST = _idx_spec(
    "mnist",
    "mnist",
    ("MNIST",),
    ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "d53e105ee54ea40749a09fcbcd1e9432",
        "9fb629c4189551a2d022fa330f9573f3",
        "ec29112dd5afa0611ce80d1b7f02629c",
    ),
    (
        "6bbc9ace898e44ae57da46a324031adb",
        "a25bea736e30d166cdddb491f175f624",
        "2646ac647ad5339dbf082846283269ea",
        "27ae3e4e09519cfbb04c329615203637",
    ),
    "MNIST handwritten digits, 28x28 grey, 60000 train / 10000 test, 10 classes",
)

_FASHION = _idx_spec(
    "fashion-mnist",
    "fashion-mnist",
    ("fashion_mnist", "FashionMNIST"),
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79",
        "bb300cfdad3c16e7a12a480ee83cd310",
    ),
    (
        "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "9018921c3c673c538a1fc5bad174d6f9",
        "8181f5470baa50b63fa0f6fddb340f0a",
        "15d484375f8d13e6eb1aabb0c3f46965",
    ),
    "Fashion-MNIST (Zalando), 28x28 grey, 60000 train / 10000 test, 10 classes",
)

_C10_ARCHIVE = "cifar-10-binary.tar.gz"
_C10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR10 = DatasetSpec(
    name="cifar10",
    format="cifar",
    n_classes=10,
    shape=(3, 32, 32),
    folder="cifar-10",
    aliases=("cifar10",),
    files=(_C10_ARCHIVE,),
    urls=MappingProxyType({_C10_ARCHIVE: ("https://www.cs.toronto.edu/~kriz/" + _C10_ARCHIVE,)}),
    download_md5=MappingProxyType({_C10_ARCHIVE: "c32a1d4ab5d03f1284b67883e8d87530"}),
    content_md5=MappingProxyType(
        {
            "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
            "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
            "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
            "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
            "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
            "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
        }
    ),
    archive_dir="cifar-10-batches-bin",
    train_members=_C10_TRAIN,
    test_members=("test_batch.bin",),
    label_bytes=1,
    label_index=0,
    label_classes=(10,),
    description="CIFAR-10 binary version, 32x32 RGB, 50000 train / 10000 test, 10 classes",
)

_C100_ARCHIVE = "cifar-100-binary.tar.gz"


def _cifar100(name, n_classes, label_index, description):
    return DatasetSpec(
        name=name,
        format="cifar",
        n_classes=n_classes,
        shape=(3, 32, 32),
        folder="cifar-100",
        aliases=("cifar100",),
        files=(_C100_ARCHIVE,),
        urls=MappingProxyType({_C100_ARCHIVE: ("https://www.cs.toronto.edu/~kriz/" + _C100_ARCHIVE,)}),
        download_md5=MappingProxyType({_C100_ARCHIVE: "03b5dce01913d631647c71ecec9e9cb8"}),
        # Not pinned: the content MD5s of train.bin / test.bin are not in our reference table.
        # Only a download is checked (archive MD5); local copies get record-structure checks.
        content_md5=MappingProxyType({"train.bin": None, "test.bin": None}),
        archive_dir="cifar-100-binary",
        train_members=("train.bin",),
        test_members=("test.bin",),
        label_bytes=2,
        label_index=label_index,
        label_classes=(20, 100),
        description=description,
    )


_CIFAR100 = _cifar100(
    "cifar100", 100, 1, "CIFAR-100 binary version, fine labels, 50000 train / 10000 test, 100 classes"
)
_CIFAR100_COARSE = _cifar100(
    "cifar100-coarse",
    20,
    0,
    "CIFAR-100 binary version, coarse (superclass) labels, 50000 train / 10000 test, 20 classes",
)

DATASETS: dict[str, DatasetSpec] = {
    s.name: s for s in (_MNIST, _FASHION, _CIFAR10, _CIFAR100, _CIFAR100_COARSE)
}
