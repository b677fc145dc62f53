"""Rows ``denoising`` and ``sampling``: the published 160 x 160 networks.

Denoising: the multi-scale model with the RF 9 conditional networks against the flat
RF 43 network, on the same noisy test images (noise drawn per image by
:func:`msprior.evaluation.noisy_images`), batches interleaved so that both see the
same load. Sampling: :func:`msprior.multiscale.synthesize`, steps per scale and
seconds per image.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from bench.common import PUBLISHED
from msprior.evaluation import noisy_images
from msprior.metrics import psnr
from msprior.multiscale import MultiScaleModel, synthesize
from msprior.networks import BFCNN, NetworkSpec, denoise
from msprior.published import find_published, load_published, locate_published
from msprior.sampling import SamplerSettings, generators_for, step_size

SETTING = "celebA_160x160_gray"

# Flat RF 43 on the first 100 test images of the subset, measured with the published
# code: sigma_255 -> mean PSNR in dB. A check that the networks run right.
FLAT43_REFERENCE = {20.0: 31.64, 100.0: 24.50}


def first_layer_is_linear() -> bool:
    """Whether :class:`BFCNN` leaves its first convolution linear, as released.

    A three-layer network of sign-flipping 1-pixel kernels: a positive input comes
    out non-zero only if the first layer's negative output is not cut by a ReLU.
    """
    net = BFCNN(NetworkSpec("flat", depth=3, width=1, rf=7)).eval()
    with torch.no_grad():
        for conv, sign in zip(net.conv_layers, (-1.0, -1.0, 1.0), strict=True):
            conv.weight.zero_()
            conv.weight[:, :, 1, 1] = sign
        out = net(torch.ones(1, 1, 5, 5))
    return bool(out.abs().sum() > 0)


def load_published_160(
    folder: Path = PUBLISHED, *, rf: int = 9, flat_rf: int = 43
) -> tuple[MultiScaleModel, BFCNN]:
    """The published multi-scale model (conditional RF ``rf``) and flat network.

    Every file is checked against its released sha256; batch norm is folded.
    """
    levels = 2
    models = {
        "lowpass": find_published(SETTING, "lowpass"),
        "flat": find_published(SETTING, "flat", rf=flat_rf),
        **{
            j: find_published(SETTING, "conditional", rf=rf, level=j)
            for j in range(1, levels + 1)
        },
    }
    paths = locate_published(folder, models.values())

    def load(key):
        model = models[key]
        return load_published(paths[model.relpath], model.spec).fold_batch_norm_()

    multiscale = MultiScaleModel(
        load("lowpass"), {j: load(j) for j in range(1, levels + 1)}, "haar"
    )
    return multiscale, load("flat")


def network_flops(net: BFCNN, h: int, w: int) -> float:
    """Forward multiply-adds x 2 of one h x w input."""
    return 2.0 * sum(c.weight.numel() for c in net.conv_layers) * h * w


def multiscale_flops(model: MultiScaleModel, size: int) -> float:
    """Forward FLOPs of one multi-scale denoising of a size x size image."""
    total = network_flops(model.lowpass, size >> model.levels, size >> model.levels)
    for j, net in model.conditionals.items():
        total += network_flops(net, size >> j, size >> j)
    return total


@torch.no_grad()
def denoising_figures(
    model: MultiScaleModel,
    flat: BFCNN,
    clean: torch.Tensor,
    sigmas_255: Sequence[float],
    *,
    batch_size: int = 10,
    seed: int = 0,
) -> dict:
    """Seconds and mean PSNR (peak 1) of both denoisers, per noise level.

    Parameters
    ----------
    clean : Tensor, shape (N, 1, H, W), in [0, 1]

    Returns
    -------
    dict
        ``multiscale_s``, ``flat_s`` (all levels), ``ratio`` = flat / multi-scale
        time, per-level PSNRs, and the FLOPs per image of each.
    """
    times = {"multiscale": 0.0, "flat": 0.0}
    psnrs = {}
    functions = {
        "multiscale": model.denoise,
        "flat": lambda y: denoise(flat, y),
    }
    for k, s in enumerate(sigmas_255):
        noisy = noisy_images(clean, s / 255, seed, k)
        outs = {name: [] for name in functions}
        for start in range(0, len(clean), batch_size):
            batch = noisy[start : start + batch_size]
            for name, fn in functions.items():
                tick = time.perf_counter()
                outs[name].append(fn(batch))
                times[name] += time.perf_counter() - tick
        psnrs[f"{s:g}"] = {
            "in": round(float(psnr(noisy, clean).mean()), 2),
            **{
                name: round(float(psnr(torch.cat(o), clean).mean()), 2)
                for name, o in outs.items()
            },
        }
    size = clean.shape[-1]
    return {
        "images": len(clean),
        "sigmas_255": list(sigmas_255),
        "multiscale_s": round(times["multiscale"], 2),
        "flat_s": round(times["flat"], 2),
        "ratio": round(times["flat"] / times["multiscale"], 2),
        "psnr": psnrs,
        "gflop_per_image": {
            "multiscale": round(multiscale_flops(model, size) / 1e9, 2),
            "flat": round(network_flops(flat, size, size) / 1e9, 2),
        },
    }


def schedule_steps(ratio: float, settings: SamplerSettings) -> int:
    """Updates the step schedule alone needs to divide sigma by ``ratio``.

    With an ideal denoiser the noise left after update ``t`` is ``(1 - beta h_t)``
    times the noise before it (:mod:`msprior.sampling`), so the count is the least
    ``T`` with ``prod_{t <= T} (1 - beta h_t) <= 1 / ratio``; ``max_steps`` if never.
    """
    if ratio <= 1:
        return 0
    left, target = 0.0, math.log(ratio)
    for t in range(1, settings.max_steps + 1):
        h = step_size(t, settings.h0, settings.fixed_h)
        left -= math.log1p(-settings.beta * h)
        if left >= target:
            return t
    return settings.max_steps


def sampling_figures(
    model: MultiScaleModel,
    lowpass_shape: tuple[int, int],
    settings: SamplerSettings,
    *,
    n_images: int = 1,
) -> dict:
    """Steps per scale (why each sample stopped) and seconds per image.

    Returns
    -------
    dict
        ``steps``: level -> steps of each sample (the coarsest low-pass under key
        ``levels + 1``), ``reasons`` likewise, ``seconds_per_image``,
        ``detail_steps_range`` over the detail levels ``1 .. J``, the first noise
        estimate ``sigma_1`` of each sample and the :func:`schedule_steps` from it to
        ``sigma_min``.
    """
    tick = time.perf_counter()
    images, traces = synthesize(
        model, lowpass_shape, generators_for(range(n_images)), settings
    )
    seconds = time.perf_counter() - tick
    steps = {str(j): t.steps.tolist() for j, t in sorted(traces.items())}
    sigma_1 = {str(j): t.sigma[0].tolist() for j, t in sorted(traces.items())}
    ideal = {
        j: [schedule_steps(s / settings.sigma_min, settings) for s in sigmas]
        for j, sigmas in sigma_1.items()
    }
    detail = [
        s for j, t in traces.items() if j <= model.levels for s in t.steps.tolist()
    ]
    return {
        "images": n_images,
        "size": list(images.shape[-2:]),
        "settings": {
            "h0": settings.h0,
            "beta": settings.beta,
            "sigma_min": settings.sigma_min,
            "max_steps": settings.max_steps,
        },
        "steps": steps,
        "reasons": {str(j): t.reason for j, t in sorted(traces.items())},
        "detail_steps_range": [min(detail), max(detail)],
        "sigma_1": {j: [round(v, 4) for v in s] for j, s in sigma_1.items()},
        "schedule_steps": ideal,
        "seconds_per_image": round(seconds / n_images, 1),
        "finite": bool(torch.isfinite(images).all()),
    }
