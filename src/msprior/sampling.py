"""Stochastic coarse-to-fine gradient ascent with a blind denoiser.

The algorithm of Kadkhodaie & Simoncelli (NeurIPS 2021), used at every scale of the
multi-scale model. Code names and the paper's symbols:

======================  ===============================================================
code                    paper
======================  ===============================================================
``y``                   the current noisy state ``y_t``
``d``                   ``d_t = D(y_t) - y_t``, the denoiser residual (a scaled score)
``sigma``               ``sigma_t = ||d_t|| / sqrt(N)``, the noise left, estimated
``h``                   step size ``h_t = h_0 t / (1 + h_0 (t - 1))``
``beta``                fraction of the noise removed per step not re-injected (1: none)
``gamma``               ``gamma_t = sigma_t sqrt((1 - beta h_t)^2 - (1 - h_t)^2)``
``z``                   ``z ~ N(0, I)``, drawn from the sample's own generator
``sigma_min``           ``sigma_L``, the stopping level
======================  ===============================================================

Update: ``y <- y + h_t d_t + gamma_t z``; stop when ``sigma_t <= sigma_min`` and end
with one full denoising step ``x = y + d_t``. A sample also stops, recorded as such in
the trace, at ``max_steps`` or when it diverges.

The scale index ``j`` of the multi-scale model runs fine to coarse (``j = 1``
finest); sampling runs coarse to fine (see :mod:`msprior.multiscale`), but this module
knows nothing of scales.

Every sample of a batch has its own generator and stops on its own, so a sample does
not depend on the batch it was drawn in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "Constraint",
    "SamplerSettings",
    "Trace",
    "generators_for",
    "initial_state",
    "constrained_initial_state",
    "sample",
    "step_size",
    "injected_noise",
]


@dataclass(frozen=True)
class SamplerSettings:
    h0: float = 0.01
    beta: float = 0.1
    sigma_min: float = 0.01
    max_steps: int = 1000
    fixed_h: bool = False  # use h_t = h0 at every step
    divergence: float = 2.0  # stop a sample whose sigma_t exceeds this times sigma_1

    def __post_init__(self):
        if not 0 < self.beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {self.beta}")
        if not 0 < self.h0 <= 1:
            raise ValueError(f"h0 must be in (0, 1], got {self.h0}")
        if self.sigma_min <= 0:
            raise ValueError(f"sigma_min must be positive, got {self.sigma_min}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.divergence <= 1:
            raise ValueError(f"divergence must be > 1, got {self.divergence}")


@dataclass
class Trace:
    """What happened at each step, per sample.

    ``sigma``, ``h`` and ``gamma`` have shape (T, B), NaN where a sample had already
    stopped; ``steps`` (B,) counts each sample's updates; ``reason`` says why each
    stopped: ``"sigma_min"`` (the stopping rule), ``"max_steps"``, or ``"diverged"``
    (``sigma_t`` rose above ``divergence`` times its first value, or is not finite:
    the denoiser is not a contraction there, typically one trained too briefly to be
    accurate below that noise level; raise ``sigma_min``).
    """

    sigma: Tensor
    h: Tensor
    gamma: Tensor
    steps: Tensor
    reason: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Constraint:
    """A linear measurement held fixed: ``mask`` (1 where measured) and its values.

    Shapes broadcast against the state (B, C, H, W).
    """

    mask: Tensor
    values: Tensor


def step_size(t: int, h0: float, fixed: bool = False) -> float:
    """``h_t = h0 t / (1 + h0 (t - 1))``, rising from h0 towards 1; ``t >= 1``."""
    if fixed:
        return h0
    return h0 * t / (1 + h0 * (t - 1))


def injected_noise(sigma: Tensor, h: float, beta: float) -> Tensor:
    """``gamma_t``: std of fresh noise leaving ``(1 - beta h) sigma`` in total."""
    return sigma * math.sqrt(max((1 - beta * h) ** 2 - (1 - h) ** 2, 0.0))


def generators_for(seeds: Sequence[int], device="cpu") -> list[torch.Generator]:
    """One generator per sample, seeded with its own seed."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def _per_sample_normal(shape, generators, device, dtype) -> Tensor:
    # (B, ...) with row b drawn from generators[b] alone.
    return torch.stack(
        [
            torch.randn(shape, generator=g, device=g.device, dtype=dtype)
            for g in generators
        ]
    ).to(device)


def initial_state(
    shape,
    generators,
    *,
    mean: float | Tensor = 0.0,
    sigma_0: float = 1.0,
    device="cpu",
    dtype=torch.float32,
) -> Tensor:
    """``y_0 ~ N(mean, sigma_0^2 I)``; ``shape`` is one sample's, e.g. (C, H, W)."""
    return mean + sigma_0 * _per_sample_normal(tuple(shape), generators, device, dtype)


def constrained_initial_state(
    constraint: Constraint,
    generators,
    *,
    mean: float = 0.5,
    sigma_0: float = 1.0,
) -> Tensor:
    """``y_0 ~ N(M x_c + mean (I - M M^T) e, sigma_0^2 I)``: an inverse problem's start.

    The measured coefficients start at their values, the others at ``mean``, and the
    noise covers both (Kadkhodaie & Simoncelli 2021, algorithm 2): a blind denoiser
    estimates one noise level over the whole input, and noise-free measurements beside
    a noisy hole make it under-estimate that level and leave the hole as texture.
    ``constraint.values`` has shape (B, C, H, W), one row per generator.
    """
    values = constraint.values
    if len(values) != len(generators):
        raise ValueError(f"{len(generators)} generators for {len(values)} measurements")
    m = constraint.mask
    start = m * values + (1 - m) * mean
    return initial_state(
        values.shape[1:],
        generators,
        mean=start,
        sigma_0=sigma_0,
        device=values.device,
        dtype=values.dtype,
    )


def _residual(network, y: Tensor, cond: Tensor | None, constraint) -> Tensor:
    d = -network(y, cond=cond)  # D(y) - y = -(noise estimate)
    if constraint is not None:
        m = constraint.mask
        d = (1 - m) * d + m * (constraint.values - y)
    return d


@torch.no_grad()
def sample(
    network: Callable[..., Tensor],
    y: Tensor,
    generators: Sequence[torch.Generator],
    settings: SamplerSettings,
    *,
    cond: Tensor | None = None,
    constraint: Constraint | None = None,
    callback: Callable[[int, Tensor, Tensor], None] | None = None,
) -> tuple[Tensor, Trace]:
    """Run the ascent from ``y`` until every sample stops.

    Parameters
    ----------
    network : callable ``(noisy, cond=None) -> noise estimate``
        A blind denoiser's residual network, in evaluation mode.
    y : Tensor, shape (B, C, H, W)
        The initial state ``y_0`` (see :func:`initial_state`).
    generators : sequence of B torch.Generator
        Sample ``b`` draws its noise from ``generators[b]`` only.
    settings : SamplerSettings
    cond : Tensor, shape (B, 1, H, W), optional
        Conditioning passed to the network (a conditional network's low-pass).
    constraint : Constraint, optional
        Measured coefficients held to their values (inpainting and the like).
    callback : callable ``(t, y, active)``, optional
        Called after every step with the state and the mask of running samples.

    Returns
    -------
    x : Tensor, shape (B, C, H, W)
        The samples, after one last denoising step.
    trace : Trace
    """
    if len(generators) != len(y):
        raise ValueError(f"{len(generators)} generators for a batch of {len(y)}")
    b = len(y)
    n = y[0].numel()  # N: coefficients generated per sample
    y = y.clone()
    x = torch.empty_like(y)
    active = torch.ones(b, dtype=torch.bool, device=y.device)
    steps = torch.zeros(b, dtype=torch.long)
    reason = [""] * b
    sigma_start = torch.zeros(b, dtype=y.dtype, device=y.device)
    sigmas, hs, gammas = [], [], []
    for t in range(1, settings.max_steps + 2):
        idx = active.nonzero().flatten()
        sub_cond = None if cond is None else cond[idx]
        sub_constraint = None if constraint is None else _subset(constraint, idx, b)
        d = _residual(network, y[idx], sub_cond, sub_constraint)  # (A, C, H, W)
        sigma = d.flatten(1).norm(dim=1) / math.sqrt(n)  # (A,)
        if t == 1:
            sigma_start[idx] = sigma
        diverged = ~torch.isfinite(sigma) | (
            sigma > settings.divergence * sigma_start[idx]
        )
        stopped = sigma <= settings.sigma_min
        done = stopped | diverged | (t > settings.max_steps)
        for k, div, stop in zip(
            idx[done].tolist(), diverged[done], stopped[done], strict=True
        ):
            reason[k] = "diverged" if div else "sigma_min" if stop else "max_steps"
        x[idx[done]] = y[idx[done]] + d[done]  # one last denoising step
        active[idx[done]] = False
        if not active.any():
            break
        go = ~done
        idx, d, sigma = idx[go], d[go], sigma[go]
        h = step_size(t, settings.h0, settings.fixed_h)
        gamma = injected_noise(sigma, h, settings.beta)  # (A,)
        z = _per_sample_normal(
            y.shape[1:], [generators[k] for k in idx.tolist()], y.device, y.dtype
        )
        y[idx] = y[idx] + h * d + gamma.view(-1, 1, 1, 1) * z
        steps[idx.cpu()] += 1
        sigmas.append(_scatter(sigma, idx, b))
        gammas.append(_scatter(gamma, idx, b))
        hs.append(_scatter(torch.full_like(sigma, h), idx, b))
        if callback is not None:
            callback(t, y, active.clone())
    empty = torch.empty(0, b)
    trace = Trace(
        sigma=torch.stack(sigmas) if sigmas else empty,
        h=torch.stack(hs) if hs else empty,
        gamma=torch.stack(gammas) if gammas else empty,
        steps=steps,
        reason=reason,
    )
    return x, trace


def _scatter(values: Tensor, idx: Tensor, b: int) -> Tensor:
    out = torch.full((b,), float("nan"), dtype=torch.float64)
    out[idx.cpu()] = values.detach().double().cpu()
    return out


def _subset(constraint: Constraint, idx: Tensor, b: int) -> Constraint:
    def pick(t):
        return t[idx] if t.dim() > 0 and t.shape[0] == b else t

    return Constraint(pick(constraint.mask), pick(constraint.values))
