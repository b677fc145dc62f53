"""Image quality metrics, defined once: MSE and PSNR, one value per image."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mse", "psnr"]


def mse(estimate: Tensor, target: Tensor) -> Tensor:
    """Mean squared error per image.

    Parameters
    ----------
    estimate, target : Tensor, shape (B, ...)
        Same shape; everything after the batch dimension belongs to one image.

    Returns
    -------
    Tensor, shape (B,)
    """
    if estimate.shape != target.shape:
        raise ValueError(
            f"shapes differ: {tuple(estimate.shape)} vs {tuple(target.shape)}"
        )
    if estimate.dim() < 2:
        raise ValueError("expected a batch: shape (B, ...)")
    diff = (estimate - target).to(torch.float64)
    return diff.pow(2).flatten(1).mean(dim=1)


def psnr(estimate: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per image, ``10 log10(data_range^2 / MSE)``, in dB.

    ``data_range`` is the peak (1 for images in [0, 1]); it must be given explicitly
    by callers whose data are on another scale. A perfect estimate gives ``inf``.

    Returns
    -------
    Tensor, shape (B,), float64
    """
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    return 10 * torch.log10(data_range**2 / mse(estimate, target))
