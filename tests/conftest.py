"""Shared fixtures: the real data beside the checkout, seeds, tiny trained networks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(
    os.environ.get("MSPRIOR_SHARED_DATA", REPO.parent / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or $MSPRIOR_SHARED_DATA); skip where a clone has none."""
    if not (SHARED_DATA / "celeba-subset" / "img_align_celeba.zip").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (only developers have it)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seeded():
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)  # a test that trains with train.threads restores it


@pytest.fixture(scope="session")
def embedded_data(tmp_path_factory):
    """The embedded real faces at 16 x 16, with their 2-level Haar coefficients."""
    from msprior.coefficients import precompute_coefficients
    from msprior.config import DataConfig, WaveletConfig
    from msprior.faces import prepare_faces

    root = tmp_path_factory.mktemp("embedded")
    faces, wavelets = root / "faces.h5", root / "wavelets.h5"
    prepare_faces(DataConfig(source="embedded", size=16), faces, seed=0)
    precompute_coefficients(faces, wavelets, WaveletConfig("haar", 2))
    return {"faces": faces, "wavelets": wavelets}
