"""Blind, bias-free convolutional denoisers (BF-CNN) in their three roles.

Every network maps a noisy input to an estimate of the noise it contains; the denoised
value is ``noisy - network(noisy)`` (:func:`denoise`). No layer adds a constant: the
convolutions have no bias and the batch norm only rescales, so for ``a > 0`` a network
in evaluation mode satisfies ``f(a y) = a f(y)``. The noise level is never an input.

Roles (``NetworkSpec.role``):

* ``"conditional"``: for scale ``j``, input = clean low-pass ``x_j`` (1 channel) then
  the noisy detail bands ``xbar_j`` (3 channels); output = noise in the 3 bands.
* ``"lowpass"``: the coarsest low-pass ``x_J``, 1 channel in and out.
* ``"flat"``: the pixel-domain baseline, 1 channel in and out.

One interface for all of them: ``network(noisy, cond=None) -> noise estimate``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "BiasFreeBatchNorm",
    "BFCNN",
    "NetworkSpec",
    "build_network",
    "denoise",
    "kernel_layout",
    "receptive_field",
    "load_model",
    "save_model",
]

ROLES = {"conditional": (4, 3), "lowpass": (1, 1), "flat": (1, 1)}

# Which of a 21-layer network's convolutions are 3 x 3, per receptive field, as in the
# published networks: every ``k``-th layer from the first, and always the last.
_PUBLISHED_STRIDE = {5: 20, 9: 8, 13: 4, 23: 2, 43: 1}


def kernel_layout(depth: int, rf: int) -> list[int]:
    """Kernel size (3 or 1) of each of ``depth`` convolutions, for field ``rf``.

    The first and last layers are always 3 x 3; ``(rf - 1) / 2 - 2`` middle layers are
    too. For ``depth == 21`` and the paper's fields the layout is the published one;
    otherwise the 3 x 3 middle layers are spread evenly.
    """
    if depth < 2:
        raise ValueError(f"depth must be >= 2, got {depth}")
    if rf % 2 == 0 or rf < 5:
        raise ValueError(f"receptive field must be odd and >= 5, got {rf}")
    n3 = (rf - 1) // 2
    if n3 > depth:
        raise ValueError(
            f"receptive field {rf} needs {n3} 3x3 layers but the network has only "
            f"{depth}; the largest field at this depth is {2 * depth + 1}"
        )
    if depth == 21 and rf in _PUBLISHED_STRIDE:
        k = _PUBLISHED_STRIDE[rf]
        big = {i for i in range(0, depth - 1, k)} | {depth - 1}
    else:
        middle = n3 - 2
        slots = range(1, depth - 1)
        chosen = {
            slots[round((i + 1) * len(slots) / (middle + 1)) - 1] for i in range(middle)
        }
        if len(chosen) != middle:  # collisions only when nearly every layer is 3 x 3
            chosen = set(slots[:middle])
        big = {0, depth - 1} | chosen
    return [3 if i in big else 1 for i in range(depth)]


def receptive_field(layout: list[int]) -> int:
    """Side of the square receptive field of a stack of stride-1 convolutions."""
    return 1 + sum(k - 1 for k in layout)


@dataclass(frozen=True)
class NetworkSpec:
    """Everything needed to rebuild a network; stored in every checkpoint."""

    role: str
    depth: int = 21
    width: int = 64
    rf: int = 43

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(
                f"unknown role {self.role!r}; expected one of {sorted(ROLES)}"
            )
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}")
        kernel_layout(self.depth, self.rf)  # validates depth and rf

    @property
    def in_channels(self) -> int:
        return ROLES[self.role][0]

    @property
    def out_channels(self) -> int:
        return ROLES[self.role][1]

    def to_dict(self) -> dict:
        return asdict(self)


class BiasFreeBatchNorm(nn.Module):
    """Batch norm without centring or shift: ``x / sd * gamma`` per channel.

    In training, ``sd`` is the batch's standard deviation per channel (about zero, as
    the mean is not subtracted in the output either) and a running estimate is kept;
    in evaluation the running estimate is used, so the layer is linear.
    """

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.gammas = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.register_buffer("running_sd", torch.ones(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            sd = torch.sqrt(
                x.var(dim=(0, 2, 3), keepdim=True, unbiased=False) + self.eps
            )
            with torch.no_grad():
                self.running_sd.lerp_(sd, self.momentum)
        else:
            sd = self.running_sd
        return x / sd * self.gammas


class _BatchNormReLU(torch.autograd.Function):
    """``relu(x / sd * gammas)`` with batch statistics, in few passes over memory.

    The training-mode path of :class:`BiasFreeBatchNorm` followed by the ReLU:
    statistics in one pass (``batch_norm_update_stats``), one multiplication, the
    ReLU in place, and a hand-written backward (1.5x faster training steps on a CPU,
    ``bench/RESULTS.md``). Returns the output and ``sd`` (for the running estimate).
    """

    @staticmethod
    def forward(ctx, x: Tensor, gammas: Tensor, eps: float):
        mean, var = torch.batch_norm_update_stats(x, None, None, 0.0)  # (C,) each
        sd = torch.sqrt(var + eps).view(1, -1, 1, 1)
        mean = mean.view(1, -1, 1, 1)
        scale = gammas / sd  # (1, C, 1, 1)
        y = torch.relu_(x * scale)
        ctx.save_for_backward(x, y, mean, sd, scale, gammas)
        return y, sd

    @staticmethod
    def backward(ctx, grad_y: Tensor, _grad_sd: Tensor):
        x, y, mean, sd, scale, gammas = ctx.saved_tensors
        grad_z = torch.ops.aten.threshold_backward(grad_y, y, 0.0)  # through the ReLU
        count = x.numel() // x.shape[1]
        gz_x = (grad_z * x).sum(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
        grad_gammas = gz_x / sd
        grad_sd = -gz_x * gammas / sd**2
        k = grad_sd / (count * sd)  # d sd / d x = (x - mean) / (count * sd)
        grad_x = x * k
        grad_x.addcmul_(grad_z, scale).sub_(mean * k)
        return grad_x, grad_gammas, None


class BFCNN(nn.Module):
    """A stack of bias-free convolutions; ReLU and batch norm between middle layers.

    Layer ``i`` is a ``k_i x k_i`` convolution, ``k_i`` from :func:`kernel_layout`.
    The first and last convolutions are linear (no ReLU after them); every middle one
    is followed by batch norm and a ReLU. Parameter names match the published networks
    (``conv_layers.{i}.weight``, ``BN_layers.{i}.gammas``,
    ``BN_layers.{i}.running_sd``).
    """

    def __init__(self, spec: NetworkSpec):
        super().__init__()
        self.spec = spec
        layout = kernel_layout(spec.depth, spec.rf)
        chans = (
            [spec.in_channels] + [spec.width] * (spec.depth - 1) + [spec.out_channels]
        )
        self.conv_layers = nn.ModuleList(
            nn.Conv2d(chans[i], chans[i + 1], k, padding=k // 2, bias=False)
            for i, k in enumerate(layout)
        )
        self.BN_layers = nn.ModuleList(
            BiasFreeBatchNorm(spec.width) for _ in layout[1:-1]
        )
        self.folded = False
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation suits ReLU; the last layer starts small so the first
        # estimate of the noise is near zero and early losses are tame.
        for conv in self.conv_layers:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        with torch.no_grad():
            self.conv_layers[-1].weight.mul_(0.1)

    def forward(self, noisy: Tensor, cond: Tensor | None = None) -> Tensor:
        """Noise estimate.

        Parameters
        ----------
        noisy : Tensor, shape (B, C_noisy, H, W)
            3 detail bands for a conditional network, 1 channel otherwise.
        cond : Tensor, shape (B, 1, H, W), optional
            The clean low-pass, required by (and only by) a conditional network.

        Returns
        -------
        Tensor, shape (B, C_out, H, W)
        """
        if (cond is None) != (self.spec.role != "conditional"):
            need = "needs" if self.spec.role == "conditional" else "takes no"
            raise ValueError(f"a {self.spec.role} network {need} `cond`")
        x = noisy if cond is None else torch.cat([cond, noisy], dim=1)  # (B, 4, H, W)
        if x.shape[1] != self.spec.in_channels:
            raise ValueError(
                f"{self.spec.role} network expects {self.spec.in_channels} input "
                f"channels, got {x.shape[1]}"
            )
        x = self.conv_layers[0](x)  # linear, as in the paper: no ReLU after it
        for conv, bn in zip(self.conv_layers[1:-1], self.BN_layers, strict=True):
            x = conv(x)
            if self.training and x.dtype in (torch.float32, torch.float64):
                x, sd = _BatchNormReLU.apply(x, bn.gammas, bn.eps)
                with torch.no_grad():
                    bn.running_sd.lerp_(sd, bn.momentum)
            else:  # evaluation, folded, or reduced precision (autocast)
                x = torch.relu(x if self.folded else bn(x))
        return self.conv_layers[-1](x)

    @torch.no_grad()
    def fold_batch_norm_(self) -> BFCNN:
        """Fold the evaluation-mode batch norm into the convolutions, in place.

        In evaluation a batch norm is a fixed per-channel scale, ``gammas /
        running_sd``, which the convolution before it can absorb. The network then
        computes the same function in fewer passes over memory (2-3 times faster on
        a CPU for the 1 x 1 layers). It can no longer be trained or saved.
        """
        if self.folded:
            return self
        for conv, bn in zip(self.conv_layers[1:-1], self.BN_layers, strict=True):
            conv.weight.mul_((bn.gammas / bn.running_sd).reshape(-1, 1, 1, 1))
        self.folded = True
        return self.eval()

    def train(self, mode: bool = True) -> BFCNN:
        if mode and getattr(self, "folded", False):
            raise RuntimeError("a network with folded batch norm cannot be trained")
        return super().train(mode)

    def state_dict(self, *args, **kwargs):
        if getattr(self, "folded", False):
            raise RuntimeError("a network with folded batch norm cannot be saved")
        return super().state_dict(*args, **kwargs)


def build_network(spec: NetworkSpec) -> BFCNN:
    return BFCNN(spec)


def denoise(network, noisy: Tensor, cond: Tensor | None = None) -> Tensor:
    """The denoised estimate ``noisy - network(noisy, cond)``."""
    return noisy - network(noisy, cond=cond)


def save_model(path, network: BFCNN, *, step: int, extra: dict | None = None) -> None:
    """Write a final model: state dict, the spec that rebuilds it, and the step.

    The file holds tensors and plain data only, so :func:`load_model` reads it with
    ``weights_only=True``.
    """
    from msprior.io import save_torch

    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    save_torch(
        {
            "spec": network.spec.to_dict(),
            "state_dict": state,
            "step": step,
            "extra": extra or {},
        },
        path,
    )


def load_model(path, map_location="cpu", *, fold: bool = False) -> BFCNN:
    """Rebuild a network written by :func:`save_model`, in evaluation mode.

    With ``fold``, the batch norm is folded into the convolutions for fast inference
    (:meth:`BFCNN.fold_batch_norm_`).
    """
    from msprior.io import load_torch

    blob = load_torch(path, map_location=map_location)
    if not isinstance(blob, dict) or "spec" not in blob or "state_dict" not in blob:
        raise ValueError(f"{path} is not a model file written by msprior (no spec)")
    network = BFCNN(NetworkSpec(**blob["spec"]))
    network.load_state_dict(blob["state_dict"])
    network.eval()
    network.extra = dict(blob.get("extra") or {})  # level, wavelet, origin
    return network.fold_batch_norm_() if fold else network
