"""Fused batch norm, as the benchmark measured it before it moved into the package.

:class:`msprior.networks.BiasFreeBatchNorm` computes ``x / sd * gammas`` with ``sd``
from ``Tensor.var``, then the network applies a ReLU; autograd records every one of
those passes over a (B, 64, h, w) tensor, and ``var`` itself is slow on a CPU. The
profile of a training step puts about half the time there (``bench/RESULTS.md``).

:class:`BiasFreeBatchNormReLU` computes the same function and gradients in a few
passes: the statistics from ``torch.batch_norm_update_stats`` (one pass), the scale
folded into one multiplication, the ReLU applied in place, and a hand-written
backward. It is now ``msprior.networks._BatchNormReLU``, the package's training path;
:func:`fused_forward` runs a :class:`~msprior.networks.BFCNN`'s own parameters through
it explicitly, so the benchmark's row keeps its meaning.
"""

from __future__ import annotations

import torch
from torch import Tensor

from msprior.networks import BFCNN, _BatchNormReLU

# Moved into the package after this benchmark measured it; one implementation.
BiasFreeBatchNormReLU = _BatchNormReLU


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
