"""The multi-scale model: one low-pass network and one conditional network per level.

``p(x_0) = p(x_J) prod_{j=1..J} p(xbar_j | x_j)``, with ``j = 1`` the finest level.
Denoising and sampling both go coarse to fine: first ``x_J`` with the low-pass network,
then, for ``j = J .. 1``, the details ``xbar_j`` with the conditional network given
``x_j``, and one inverse wavelet level gives ``x_{j-1}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from msprior.sampling import SamplerSettings, Trace, initial_state, sample
from msprior.wavelets import idwt, same_wavelet, wavedec

__all__ = ["MultiScaleModel", "load_multiscale", "synthesize", "super_resolve"]


@dataclass
class MultiScaleModel:
    """Networks of a multi-scale model.

    Parameters
    ----------
    lowpass : nn.Module
        Denoiser of the coarsest low-pass ``x_J``.
    conditionals : mapping level -> nn.Module
        Conditional denoiser of ``xbar_j`` given ``x_j``, for ``j = 1 .. J``.
    wavelet : str
    """

    lowpass: nn.Module
    conditionals: Mapping[int, nn.Module]
    wavelet: str = "haar"

    def __post_init__(self):
        levels = sorted(self.conditionals)
        if levels != list(range(1, len(levels) + 1)):
            raise ValueError(
                f"conditional networks must cover levels 1..J, got levels {levels}"
            )
        # Networks loaded from files (load_model) say what they are; check it.
        _check_network(self.lowpass, "lowpass", len(levels), self.wavelet)
        for j, net in self.conditionals.items():
            _check_network(net, "conditional", j, self.wavelet)

    @property
    def levels(self) -> int:
        return len(self.conditionals)

    @torch.no_grad()
    def denoise(self, noisy: Tensor, *, lowpass_only: bool = False) -> Tensor:
        """Denoise images coarse to fine; shape (B, 1, H, W) in and out.

        With ``lowpass_only``, the details are set to zero: the denoised low-pass alone.
        """
        if not isinstance(noisy, Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(noisy).__name__}")
        if noisy.dim() != 4 or noisy.shape[1] != 1:
            raise ValueError(
                f"expected grey images of shape (B, 1, H, W), got {tuple(noisy.shape)}"
            )
        weight = next(iter(self.lowpass.parameters()), None)
        if weight is not None and noisy.dtype != weight.dtype:
            raise TypeError(
                f"images are {noisy.dtype} but the networks are {weight.dtype}; "
                f"convert them with .to({weight.dtype})"
            )
        low, details = wavedec(noisy, self.levels, self.wavelet)
        x = low - self.lowpass(low)  # (B, 1, H/2^J, W/2^J)
        for j in range(self.levels, 0, -1):
            bands = details[j - 1]  # (B, 1, 3, h, w)
            bands = bands.squeeze(1)  # (B, 3, h, w)
            if lowpass_only:
                clean = torch.zeros_like(bands)
            else:
                clean = bands - self.conditionals[j](bands, cond=x)
            x = idwt(x, clean.unsqueeze(1), self.wavelet)  # (B, 1, 2h, 2w)
        return x

    def __call__(self, noisy: Tensor, cond: Tensor | None = None) -> Tensor:
        """The common denoiser interface: the noise estimate ``noisy - denoise(noisy)``.

        This makes the whole model a blind pixel-domain denoiser, so the sampler can
        run on images directly (inpainting and other linear inverse problems).
        """
        if cond is not None:
            raise ValueError("a multi-scale model takes no `cond`")
        return noisy - self.denoise(noisy)


def _check_network(net: nn.Module, role: str, level: int, wavelet: str) -> None:
    """Refuse a network whose recorded role, level or wavelet is not the slot's."""
    spec = getattr(net, "spec", None)
    if spec is None:  # any callable module: nothing recorded to check
        return
    slot = "low-pass" if role == "lowpass" else f"level {level} conditional"
    if spec.role != role:
        raise ValueError(f"the {slot} network is a {spec.role} network ({spec})")
    extra = getattr(net, "extra", {})
    trained_for = extra.get("level")
    if trained_for is not None and trained_for != level:
        if role == "lowpass":
            raise ValueError(
                f"the low-pass network is that of a {trained_for}-level model, but the "
                f"conditional networks given are for levels 1..{level}"
            )
        raise ValueError(
            f"the {slot} network was trained for level {trained_for}, not {level}"
        )
    trained_on = extra.get("wavelet")
    if trained_on is not None and not same_wavelet(trained_on, wavelet):
        raise ValueError(
            f"the {slot} network was trained on {trained_on!r} coefficients, "
            f"not {wavelet!r}"
        )


def _upsampled_details(
    model: MultiScaleModel,
    x: Tensor,
    generators: Sequence[torch.Generator],
    settings: SamplerSettings,
    *,
    start_level: int,
    sigma_0: float,
) -> tuple[Tensor, dict[int, Trace]]:
    """From ``x_j`` at ``start_level``, sample the details of every finer level."""
    traces = {}
    for j in range(start_level, 0, -1):
        shape = (3, *x.shape[-2:])
        y = initial_state(
            shape, generators, sigma_0=sigma_0, device=x.device, dtype=x.dtype
        )
        bands, traces[j] = sample(
            model.conditionals[j], y, generators, settings, cond=x
        )
        x = idwt(x, bands.unsqueeze(1), model.wavelet)  # (B, 1, 2h, 2w)
    return x, traces


def synthesize(
    model: MultiScaleModel,
    lowpass_shape: tuple[int, int],
    generators: Sequence[torch.Generator],
    settings: SamplerSettings,
    *,
    mean: float = 0.5,
    sigma_0: float = 1.0,
    device="cpu",
) -> tuple[Tensor, dict[int, Trace]]:
    """Unconditional samples: ``x_J`` first, then every finer level given the one above.

    Returns
    -------
    images : Tensor, shape (B, 1, H, W) with H = lowpass_shape[0] * 2**J
    traces : dict level -> Trace, the low-pass under key ``model.levels + 1``
    """
    shape = (1, *lowpass_shape)
    y = initial_state(shape, generators, mean=mean, sigma_0=sigma_0, device=device)
    low, low_trace = sample(model.lowpass, y, generators, settings)
    images, traces = _upsampled_details(
        model, low, generators, settings, start_level=model.levels, sigma_0=sigma_0
    )
    return images, {model.levels + 1: low_trace, **traces}


def super_resolve(
    model: MultiScaleModel,
    lowpass: Tensor,
    generators: Sequence[torch.Generator],
    settings: SamplerSettings,
    *,
    sigma_0: float = 1.0,
) -> tuple[Tensor, dict[int, Trace]]:
    """Sample the finer levels given the coarsest low-pass ``x_J`` of real images.

    Parameters
    ----------
    lowpass : Tensor, shape (B, 1, h, w)
        ``x_J``; the low-pass of the result, analysed ``J`` levels, equals it.
    """
    return _upsampled_details(
        model, lowpass, generators, settings, start_level=model.levels, sigma_0=sigma_0
    )


def load_multiscale(
    lowpass_path, conditional_paths: Mapping[int, str], wavelet: str, device="cpu"
) -> MultiScaleModel:
    """A :class:`MultiScaleModel` from model files written by ``save_model``."""
    from msprior.networks import load_model

    return MultiScaleModel(
        lowpass=load_model(lowpass_path, map_location=device, fold=True).to(device),
        conditionals={
            j: load_model(p, map_location=device, fold=True).to(device)
            for j, p in conditional_paths.items()
        },
        wavelet=wavelet,
    )
