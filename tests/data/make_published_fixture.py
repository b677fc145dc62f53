"""Write tests/data/published_outputs.npz: published networks' outputs on fixed inputs.

Run once, by hand, where the published networks are available:

    python tests/data/make_published_fixture.py [path/to/published-denoisers]

The outputs are computed straight from each file's state dict in float64, with plain
``torch.nn.functional`` calls, so the stored numbers do not depend on msprior's loader;
``tests/test_published.py`` checks that the loader reproduces them.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger("make_published_fixture")

HERE = Path(__file__).resolve().parent
DEFAULT_DIR = HERE.parents[2] / "shared" / "data" / "published-denoisers"
OUT = HERE / "published_outputs.npz"

# name in the .npz -> (released file, which input it takes)
NETWORKS = {
    "flat_rf5": (
        "flat/celebA_160x160_gray/noise_range_0to255_RF_5x5/model.pt",
        "pixels",
    ),
    "conditional_rf9_scale0": (
        "multi_scale/celebA_160x160_gray/noise_range_0to255_RF_9x9_scale_0/model.pt",
        "cond_and_details",
    ),
    "lowpass": (
        "multi_scale/celebA_160x160_gray/noise_range_0to255_RF_40x40_low/model.pt",
        "pixels",
    ),
}


def forward_float64(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The authors' architecture, evaluated from a raw state dict.

    A linear first convolution; for every middle layer convolution, division by
    ``running_sd``, multiplication by ``gammas``, ReLU; a linear last convolution.
    """
    state = {k.removeprefix("module."): v.double() for k, v in state.items()}
    n = sum(1 for k in state if k.startswith("conv_layers."))
    for i in range(n):
        w = state[f"conv_layers.{i}.weight"]
        x = F.conv2d(x, w, padding=w.shape[-1] // 2)
        if 0 < i < n - 1:
            x = x / state[f"BN_layers.{i - 1}.running_sd"]
            x = x * state[f"BN_layers.{i - 1}.gammas"]
            x = F.relu(x)
    return x


def main(published_dir: Path) -> None:
    rng = np.random.default_rng(20230228)
    inputs = {
        "pixels": rng.random((1, 1, 24, 24)).astype(np.float32),  # (B, 1, H, W)
        # (B, 4, h, w): clean low-pass (a local mean, in [0, 1]) then 3 noisy bands
        "cond_and_details": np.concatenate(
            [
                rng.random((1, 1, 12, 12)),
                0.1 * rng.standard_normal((1, 3, 12, 12)),
            ],
            axis=1,
        ).astype(np.float32),
    }
    arrays = {f"input_{k}": v for k, v in inputs.items()}
    for name, (relpath, which) in NETWORKS.items():
        path = published_dir / relpath
        state = torch.load(path, map_location="cpu", weights_only=True)
        x = torch.from_numpy(inputs[which]).double()
        with torch.no_grad():
            out = forward_float64(state, x)
        arrays[f"output_{name}"] = out.float().numpy()
        arrays[f"relpath_{name}"] = np.array(relpath)
        arrays[f"input_of_{name}"] = np.array(which)
        arrays[f"sha256_{name}"] = np.array(
            hashlib.sha256(path.read_bytes()).hexdigest()
        )
        logger.info("%s: output shape %s", name, tuple(out.shape))
    np.savez_compressed(OUT, **arrays)
    logger.info("wrote %s (%d bytes)", OUT, OUT.stat().st_size)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR)
