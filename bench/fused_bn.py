"""A proposal measured by the benchmark, not used by the package: fused batch norm.

:class:`msprior.networks.BiasFreeBatchNorm` computes ``x / sd * gammas`` with ``sd``
from ``Tensor.var``, then the network applies a ReLU; autograd records every one of
those passes over a (B, 64, h, w) tensor, and ``var`` itself is slow on a CPU. The
profile of a training step puts about half the time there (``bench/RESULTS.md``).

:class:`BiasFreeBatchNormReLU` computes the same function and gradients in a few
passes: the statistics from ``torch.batch_norm_update_stats`` (one pass), the scale
folded into one multiplication, the ReLU applied in place, and a hand-written
backward. :func:`fused_forward` runs a :class:`~msprior.networks.BFCNN`'s own
parameters through it, so the two can be timed side by side.
"""

from __future__ import annotations

import torch
from torch import Tensor

from msprior.networks import BFCNN


class BiasFreeBatchNormReLU(torch.autograd.Function):
    """``relu(x / sd * gammas)`` with batch statistics, ``sd = sqrt(var + eps)``.

    ``var`` is the biased per-channel variance over (B, H, W), as in
    :class:`msprior.networks.BiasFreeBatchNorm`. Returns the output and ``sd`` (for
    the running estimate; it carries no gradient).
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
        # d sd / d x = (x - mean) / (count * sd)
        k = grad_sd / (count * sd)
        grad_x = x * k
        grad_x.addcmul_(grad_z, scale).sub_(mean * k)
        return grad_x, grad_gammas, None


def fused_forward(net: BFCNN, noisy: Tensor, cond: Tensor | None = None) -> Tensor:
    """``net(noisy, cond)`` in training mode, batch norm and ReLU fused.

    Updates the running estimates as the package's layer does.
    """
    x = noisy if cond is None else torch.cat([cond, noisy], dim=1)  # (B, C_in, H, W)
    x = net.conv_layers[0](x)  # linear, as in the package and the paper
    for conv, bn in zip(net.conv_layers[1:-1], net.BN_layers, strict=True):
        x, sd = BiasFreeBatchNormReLU.apply(conv(x), bn.gammas, bn.eps)
        with torch.no_grad():
            bn.running_sd.lerp_(sd, bn.momentum)
    return net.conv_layers[-1](x)
