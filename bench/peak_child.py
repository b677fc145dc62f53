"""One preprocessing step in a fresh process; prints its peak memory as JSON.

    python -m bench.peak_child prepare OUT.h5 --images N [--size S]
    python -m bench.peak_child precompute FACES.h5 OUT.h5

``prepare`` reads N images of the shared CelebA subset (``--embedded``: the embedded
faces) into a ``faces.h5``; ``precompute`` writes its wavelet coefficients (Haar,
J = 2). The last line of stdout is ``{"step", "images", "seconds", "maxrss_mib"}``,
the peak resident memory of this process, threads included: ``VmHWM`` of
/proc/self/status. (``getrusage``'s ``ru_maxrss`` would not do: Linux carries the
parent's peak across ``fork`` and ``exec``, so a child of a large process reports
at least the parent's size.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "precompute"])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--images", type=int, default=0)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--embedded", action="store_true")
    args = parser.parse_args(argv)

    from msprior.io import open_h5_read

    tick = time.perf_counter()
    if args.step == "prepare":
        from bench.faces import celeba_config, split_counts
        from msprior.config import DataConfig
        from msprior.faces import prepare_faces

        if args.embedded:
            cfg = DataConfig(source="embedded", size=args.size)
        else:
            cfg = celeba_config(args.size, split_counts(args.images))
        (out,) = args.paths
        counts = prepare_faces(cfg, out, seed=0)["counts"]
        images = sum(counts.values())
    else:
        from msprior.coefficients import precompute_coefficients
        from msprior.config import WaveletConfig

        faces, out = args.paths
        precompute_coefficients(faces, out, WaveletConfig("haar", 2))
        with open_h5_read(faces) as f:
            images = sum(f[s].shape[0] for s in ("train", "valid", "test") if s in f)
    seconds = time.perf_counter() - tick
    peak_kib = _peak_kib()
    record = {
        "step": args.step,
        "images": images,
        "seconds": round(seconds, 2),
        "maxrss_mib": round(peak_kib / 1024, 1),
    }
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
