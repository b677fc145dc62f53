"""Faces for the benchmarks: real CelebA crops when the shared data are there.

Without ``../shared/data`` the embedded faces of scikit-image stand in (100 images,
upsampled): enough for timing, never for the PSNR figures, which need the real data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.common import CELEBA
from msprior.config import DataConfig
from msprior.faces import SPLITS, prepare_faces, read_partition

CROP_160 = (29, 29, 9, 9)  # the published networks' 178 x 218 -> 160 x 160 crop


def celeba_config(size: int, counts: dict[str, int]) -> DataConfig:
    """CelebA from the shared subset, ``counts[split]`` images of each split."""
    return DataConfig(
        source="celeba",
        celeba_zip=str(CELEBA / "img_align_celeba.zip"),
        celeba_partition=str(CELEBA / "list_eval_partition.txt"),
        crop=CROP_160 if size == 160 else None,
        size=size,
        max_images={split: int(counts.get(split, 0)) for split in SPLITS},
    )


def split_counts(total: int) -> dict[str, int]:
    """``total`` images spread over the splits in the subset's proportions."""
    listed = {
        k: len(v) for k, v in read_partition(CELEBA / "list_eval_partition.txt").items()
    }
    available = sum(listed.values())
    if not 0 < total <= available:
        raise ValueError(f"total must be in 1..{available}, got {total}")
    counts = {k: int(total * n / available) for k, n in listed.items()}
    counts["train"] += total - sum(counts.values())
    return counts


def bench_faces(out: Path, n_train: int, size: int, *, n_test: int = 0) -> Path:
    """A ``faces.h5`` with ``n_train`` training (and ``n_test`` test) images.

    Real CelebA from the shared subset when present, else the embedded faces (at most
    80 training and 10 test images, whatever is asked).
    """
    if (CELEBA / "img_align_celeba.zip").exists():
        cfg = celeba_config(size, {"train": n_train, "test": n_test})
    else:
        cfg = DataConfig(source="embedded", size=size)
    prepare_faces(cfg, out, seed=0)
    return out


def tiled(images: np.ndarray, n: int) -> np.ndarray:
    """``n`` images, repeating ``images`` as often as needed; shape (n, S, S)."""
    if len(images) == 0:
        raise ValueError("no images to tile")
    reps = -(-n // len(images))
    return np.ascontiguousarray(np.concatenate([images] * reps)[:n])
