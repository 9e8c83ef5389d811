"""Shared test helpers."""

import pytest


def have_mnist() -> bool:
    """Whether the real MNIST files can be found offline (BIOPLAUSIBLE_DATA, /usr/share/datasets, cache)."""
    from bioplausible.data import dataset_status

    return any(r["name"] == "mnist" and r["found"] for r in dataset_status(verify_content=False))


needs_mnist = pytest.mark.skipif(not have_mnist(), reason="real MNIST not available (set BIOPLAUSIBLE_DATA)")
