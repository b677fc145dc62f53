"""Wavelet coefficients of every face, precomputed once, in HDF5.

Layout of the output (``wavelets.h5``), one group per split of the faces file::

    {split}/low_{j}       (N, S / 2**j, S / 2**j)      float32, j = 1 .. J
    {split}/details_{j}   (N, 3, S / 2**j, S / 2**j)   float32, j = 1 .. J
    {split}/names         (N,) str, the source file names
    attrs: wavelet, levels, size, normalisation, band_order, faces_path,
           faces_content_sha256 (that of the faces file), n_train, n_valid, n_test,
           created_by (JSON provenance); faces_md5 instead of the content digest
           for a faces file written before it recorded one

``low_j`` is the low-pass ``x_j`` and ``details_j`` the bands ``xbar_j`` of
:mod:`msprior.wavelets` (the same normalisation): a conditional network at level ``j``
reads ``low_j`` and models ``details_j``, and ``idwt(low_j, details_j)`` is
``low_{j-1}`` (the image for ``j = 1``). Every low-pass is stored, not only the
coarsest.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np
import torch

from msprior.config import WaveletConfig
from msprior.faces import SPLITS
from msprior.io import atomic_path, open_h5_read, provenance
from msprior.wavelets import dwt, filters

__all__ = [
    "BAND_ORDER",
    "NORMALISATION",
    "precompute_coefficients",
    "read_level",
    "read_lowpass",
]

logger = logging.getLogger(__name__)

NORMALISATION = (
    "orthonormal / 2**j; low-pass = local mean; white pixel noise sigma -> "
    "sigma / 2**j in every band of level j"
)
BAND_ORDER = (
    "details_j[:, k] for k = 0, 1, 2: horizontal (high-pass along rows), vertical "
    "(high-pass along columns), diagonal; as pywt.dwt2 (H, V, D)"
)
_CHUNK_BYTES = 1 << 20


def _create(group: h5py.Group, name: str, shape: tuple[int, ...]) -> h5py.Dataset:
    row_bytes = 4 * int(np.prod(shape[1:]))
    return group.create_dataset(
        name,
        shape=shape,
        maxshape=(None, *shape[1:]),
        dtype=np.float32,
        chunks=(max(1, _CHUNK_BYTES // row_bytes), *shape[1:]),
        compression="lzf",
    )


def _split_coefficients(
    faces: h5py.Dataset, group: h5py.Group, cfg: WaveletConfig, batch_size: int
) -> None:
    """Transform one split batch by batch; write ``low_j`` and ``details_j``."""
    n, size = faces.shape[0], faces.shape[-1]
    lows, details = {}, {}
    for j in range(1, cfg.levels + 1):
        side = size // 2**j
        lows[j] = _create(group, f"low_{j}", (n, side, side))
        details[j] = _create(group, f"details_{j}", (n, 3, side, side))
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        low = torch.from_numpy(faces[start:stop])  # (B, S, S)
        with torch.no_grad():
            for j in range(1, cfg.levels + 1):
                low, bands = dwt(low, cfg.name)  # (B, h, w), (B, 3, h, w)
                lows[j][start:stop] = low.numpy()
                details[j][start:stop] = bands.numpy()
    logger.info("%s: %d images transformed", group.name.strip("/"), n)


def _md5(path: Path) -> str:
    from msprior.download import file_digest

    return file_digest(path, "md5")


def precompute_coefficients(
    faces_path: str | os.PathLike,
    out_path: str | os.PathLike,
    cfg: WaveletConfig,
    *,
    batch_size: int = 256,
) -> None:
    """Wavelet-decompose every face of a ``faces.h5`` into ``wavelets.h5``.

    Parameters
    ----------
    faces_path : path-like
        A file written by :func:`msprior.faces.prepare_faces`.
    out_path : path-like
        The HDF5 file to write (layout in the module docstring); it appears only
        once complete.
    cfg : WaveletConfig
        Wavelet name (orthogonal) and number of levels ``J``.
    batch_size : int
        Images transformed at once; memory is constant in the number of images.

    Raises
    ------
    ValueError
        A wavelet that is unknown or not orthogonal, or an image side not divisible
        by ``2**J``.
    """
    faces_path, out_path = Path(faces_path), Path(out_path)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    filters(cfg.name)  # unknown or non-orthogonal wavelet: ValueError now
    with open_h5_read(faces_path) as faces:
        splits = [s for s in SPLITS if s in faces]
        if not splits:
            raise ValueError(f"{faces_path} holds none of the splits {SPLITS}")
        size = faces[splits[0]].shape[-1]
        if size % 2**cfg.levels:
            raise ValueError(
                f"{faces_path}: image side {size} is not divisible by "
                f"2**wavelet.levels = {2**cfg.levels}"
            )
        with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as out:
            for split in splits:
                group = out.create_group(split)
                _split_coefficients(faces[split], group, cfg, batch_size)
                names = faces.get(f"{split}_names")
                if names is not None:
                    group.create_dataset(
                        "names", data=names[:], dtype=h5py.string_dtype()
                    )
            out.attrs.update(
                {
                    "wavelet": cfg.name,
                    "levels": cfg.levels,
                    "size": size,
                    "normalisation": NORMALISATION,
                    "band_order": BAND_ORDER,
                    "faces_path": str(faces_path.resolve()),
                    # what the faces are, whichever commit or machine wrote the file
                    **_faces_identity(faces, faces_path),
                    **{f"n_{s}": faces[s].shape[0] for s in splits},
                    "created_by": json.dumps(
                        provenance(config={"name": cfg.name, "levels": cfg.levels}),
                        sort_keys=True,
                        default=str,
                    ),
                }
            )


def _faces_identity(faces: h5py.File, path: Path) -> dict:
    """The digest of the faces' names and pixels that the faces file records; the md5
    of the whole file (a second full read) only for an older file without one."""
    digest = faces.attrs.get("content_sha256", "")
    if digest:
        return {"faces_content_sha256": digest}
    return {"faces_content_sha256": "", "faces_md5": _md5(path)}


def _check_level(f: h5py.File, path, split: str, level: int) -> h5py.Group:
    if split not in f:
        raise ValueError(f"{path} has no split {split!r}; it holds {sorted(f.keys())}")
    levels = int(f.attrs["levels"])
    if not 1 <= level <= levels:
        raise ValueError(f"level must be in 1..{levels} for {path}, got {level}")
    return f[split]


def read_level(
    path: str | os.PathLike, split: str, level: int, *, max_images: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The low-pass ``x_j`` and detail bands ``xbar_j`` of one level.

    Parameters
    ----------
    path : path-like
        A file written by :func:`precompute_coefficients`.
    split : str
        ``train``, ``valid`` or ``test``.
    level : int
        ``j`` in ``1 .. J``.
    max_images : int, optional
        Read only the first ``max_images`` images.

    Returns
    -------
    low : np.ndarray, shape (N, S / 2**j, S / 2**j), float32
    details : np.ndarray, shape (N, 3, S / 2**j, S / 2**j), float32
        Bands horizontal, vertical, diagonal.
    """
    rows = slice(None, max_images)
    with open_h5_read(path) as f:
        group = _check_level(f, path, split, level)
        return group[f"low_{level}"][rows], group[f"details_{level}"][rows]


def read_lowpass(
    path: str | os.PathLike, split: str, level: int, *, max_images: int | None = None
) -> np.ndarray:
    """The low-pass ``x_j`` of one level, shape (N, S / 2**j, S / 2**j), float32.

    Parameters are those of :func:`read_level`; ``level = J`` gives the coarsest.
    """
    with open_h5_read(path) as f:
        group = _check_level(f, path, split, level)
        return group[f"low_{level}"][slice(None, max_images)]
