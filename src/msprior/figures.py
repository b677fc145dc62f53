"""The paper's figures, drawn with matplotlib and saved atomically (PNG and PDF)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from msprior.io import atomic_path  # noqa: E402

__all__ = [
    "denoising_curves",
    "denoising_examples",
    "image_grid",
    "save",
    "sigma_traces",
    "superres_panel",
    "training_curve",
]


def save(fig, *paths) -> None:
    """Write ``fig`` to every path (format from the suffix), then close it."""
    for path in paths:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, bbox_inches="tight")
    plt.close(fig)


def _show(ax, image, title=None, vmin=0.0, vmax=1.0):
    ax.imshow(
        np.asarray(image).squeeze(),
        cmap="gray",
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
    )
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def training_curve(metrics_path, *paths, title: str = "") -> None:
    """Loss and validation PSNR against the step, from a JSON-lines metrics file."""
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines()]
    df = pd.DataFrame(rows)
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    if len(df):
        a.plot(df["step"], df["loss"], color="k")
        a.set_yscale("log")
        valid = [c for c in df if c.startswith("valid_psnr_")]
        for col in sorted(valid, key=lambda c: float(c[len("valid_psnr_") :])):
            b.plot(df["step"], df[col], marker=".", label=f"sigma {col[11:]}/255")
        b.legend(fontsize=7)
    a.set(xlabel="step", ylabel="loss")
    b.set(xlabel="step", ylabel="validation PSNR (dB)")
    fig.suptitle(title, fontsize=9)
    save(fig, *paths)


def denoising_curves(table: pd.DataFrame, *paths, title: str = "") -> None:
    """PSNR out against PSNR in: flat networks left, multi-scale right, one curve per
    receptive field, low-pass only and the identity in both."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    lim = [
        table["psnr_in"].min() - 2,
        max(table["psnr_in"].max(), table["psnr_out"].max()) + 2,
    ]
    panels = [("flat", "Flat (pixel domain)"), ("multiscale", "Multi-scale")]
    for ax, (prefix, name) in zip(axes, panels, strict=True):
        part = table[table["model"].str.startswith(prefix)]
        for rf, rows in part.groupby("rf"):
            rows = rows.sort_values("psnr_in")
            ax.plot(
                rows["psnr_in"],
                rows["psnr_out"],
                marker="o",
                ms=3,
                label=f"RF {int(rf)}",
            )
        low = table[table["model"] == "lowpass_only"].sort_values("psnr_in")
        if len(low):
            ax.plot(low["psnr_in"], low["psnr_out"], "k--", lw=1, label="low-pass only")
        ax.plot(lim, lim, color="0.6", lw=0.8, label="identity")
        ax.set(xlabel="PSNR in (dB)", title=name, xlim=lim, ylim=lim)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("PSNR out (dB)")
    fig.suptitle(title, fontsize=9)
    save(fig, *paths)


def image_grid(images, *paths, ncols: int = 8, title: str = "", titles=None) -> None:
    """Images (N, 1, H, W) or (N, H, W) in a grid, grey, clipped to [0, 1]."""
    images = np.asarray(images)
    n = len(images)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(1.3 * ncols, 1.3 * nrows + 0.3), squeeze=False
    )
    for k, ax in enumerate(axes.flat):
        if k < n:
            _show(ax, images[k], None if titles is None else titles[k])
        else:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    save(fig, *paths)


def denoising_examples(
    columns: Mapping[str, np.ndarray], *paths, title: str = ""
) -> None:
    """One row per image, one column per entry of ``columns`` (e.g. noisy, flat,
    multi-scale, clean); arrays (N, 1, H, W)."""
    names = list(columns)
    n = len(next(iter(columns.values())))
    fig, axes = plt.subplots(
        n, len(names), figsize=(1.6 * len(names), 1.6 * n + 0.3), squeeze=False
    )
    for i in range(n):
        for k, name in enumerate(names):
            _show(axes[i, k], columns[name][i], name if i == 0 else None)
    fig.suptitle(title, fontsize=9)
    save(fig, *paths)


def superres_panel(original, upsampled, samples, *paths, title: str = "") -> None:
    """Per row: the original, a plain upsampling of its low-pass, then the samples.

    ``original`` and ``upsampled`` (N, 1, H, W); ``samples`` (N, K, 1, H, W).
    """
    n, k = samples.shape[:2]
    fig, axes = plt.subplots(
        n, k + 2, figsize=(1.6 * (k + 2), 1.6 * n + 0.3), squeeze=False
    )
    for i in range(n):
        _show(axes[i, 0], original[i], "original" if i == 0 else None)
        _show(axes[i, 1], upsampled[i], "low-pass, upsampled" if i == 0 else None)
        for s in range(k):
            _show(axes[i, s + 2], samples[i, s], f"sample {s + 1}" if i == 0 else None)
    fig.suptitle(title, fontsize=9)
    save(fig, *paths)


def sigma_traces(
    traces: Mapping[str, np.ndarray],
    *paths,
    sigma_min: float | None = None,
    title: str = "",
) -> None:
    """sigma_t against t, one panel per scale; each array (T, B), NaN once stopped."""
    names: Sequence[str] = list(traces)
    fig, axes = plt.subplots(
        1, len(names), figsize=(3.2 * len(names), 3), squeeze=False
    )
    for ax, name in zip(axes[0], names, strict=True):
        sig = np.asarray(traces[name])
        ax.semilogy(np.arange(1, len(sig) + 1), sig, lw=0.8, alpha=0.7)
        if sigma_min:
            ax.axhline(sigma_min, color="k", ls=":", lw=0.8)
        steps = np.isfinite(sig).sum(axis=0) if sig.size else np.zeros(1)
        ax.set(
            xlabel="step t",
            title=f"{name} (steps {int(steps.min())}-{int(steps.max())})",
        )
    axes[0, 0].set_ylabel("sigma_t")
    fig.suptitle(title, fontsize=9, y=1.03)
    save(fig, *paths)
