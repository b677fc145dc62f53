"""Denoising evaluation: PSNR out against PSNR in over the paper's noise grid.

All models see the same noisy images: the noise of image ``i`` at noise level ``s`` is
drawn from a generator seeded with ``(seed, s index, i)``, whatever the batching.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from msprior.io import atomic_path
from msprior.metrics import psnr

__all__ = ["noisy_images", "denoising_table", "write_tables", "TABLE_COLUMNS"]

TABLE_COLUMNS = ["model", "rf", "sigma_255", "psnr_in", "psnr_out", "n_images"]


def noisy_images(clean: Tensor, sigma: float, seed: int, sigma_index: int) -> Tensor:
    """``clean + sigma * z`` with one generator per image; shape (B, 1, H, W)."""
    noise = torch.stack(
        [
            torch.randn(
                clean.shape[1:],
                generator=torch.Generator().manual_seed(
                    (seed * 1009 + sigma_index) * 100_003 + i
                ),
            )
            for i in range(len(clean))
        ]
    )
    return clean + sigma * noise


@torch.no_grad()
def denoising_table(
    denoisers: Mapping[str, tuple[int | None, Callable[[Tensor], Tensor]]],
    clean: Tensor,
    sigmas_255: Sequence[float],
    *,
    seed: int = 0,
    batch_size: int = 25,
    device="cpu",
) -> pd.DataFrame:
    """Mean per-image PSNR (peak 1) of every denoiser at every noise level.

    Parameters
    ----------
    denoisers : mapping name -> (rf, function noisy -> denoised)
        ``rf`` is the receptive field written in the table (None for none).
    clean : Tensor, shape (N, 1, H, W), values in [0, 1]

    Returns
    -------
    DataFrame with columns :data:`TABLE_COLUMNS`, one row per (model, sigma).
    """
    rows = []
    for k, s in enumerate(sigmas_255):
        noisy = noisy_images(clean, s / 255, seed, k)
        psnr_in = psnr(noisy, clean)
        outs = {name: [] for name in denoisers}
        for start in range(0, len(clean), batch_size):
            batch = noisy[start : start + batch_size].to(device)
            for name, (_, fn) in denoisers.items():
                outs[name].append(fn(batch).float().cpu())
        for name, (rf, _) in denoisers.items():
            out = psnr(torch.cat(outs[name]), clean)
            rows.append(
                {
                    "model": name,
                    "rf": rf,
                    "sigma_255": float(s),
                    "psnr_in": float(psnr_in.mean()),
                    "psnr_out": float(out.mean()),
                    "n_images": len(clean),
                }
            )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def write_tables(table: pd.DataFrame, csv_path, md_path=None, tex_path=None) -> None:
    """The table as CSV, plus Markdown and LaTeX renderings (2 decimals), atomically."""
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    shown = table.copy()
    shown["rf"] = shown["rf"].map(lambda v: "" if pd.isna(v) else str(int(v)))
    if md_path:
        with atomic_path(md_path) as tmp:
            Path(tmp).write_text(shown.to_markdown(index=False, floatfmt=".2f") + "\n")
    if tex_path:
        with atomic_path(tex_path) as tmp:
            Path(tmp).write_text(
                shown.to_latex(index=False, float_format="%.2f", escape=True)
            )
