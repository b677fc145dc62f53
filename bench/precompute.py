"""Row ``wavelets``: wavelet precompute against a per-image PyWavelets loop.

Two figures, both images per second and both as a ratio to the reference measured
beside them:

* transform: images already in memory, the same output arrays filled (``low_j``,
  ``details_j`` for ``j = 1 .. J``, the layout of ``wavelets.h5``). Ours: batches
  through :func:`msprior.wavelets.dwt`. Reference: one image at a time through
  ``pywt.dwt2``, level after level (what ``pywt.wavedec2`` runs inside; ``wavedec2``
  itself returns only the coarsest low-pass, so it cannot fill ``low_1``; its rate is
  recorded too, writing the arrays it has).
* file to file: :func:`msprior.coefficients.precompute_coefficients` from ``faces.h5``
  against the same reading and writing (same datasets, chunks, compression) around
  the per-image PyWavelets loop. Where the time goes is measured by phase and by
  cProfile.
"""

from __future__ import annotations

import cProfile
import pstats
import time
from pathlib import Path

import h5py
import numpy as np
import pywt
import torch

from bench.common import interleaved_best
from msprior.coefficients import precompute_coefficients
from msprior.config import WaveletConfig
from msprior.io import open_h5_read
from msprior.wavelets import dwt

BLOCK = 256  # images read from faces.h5 at a time, as precompute_coefficients does


def _outputs(n: int, size: int, levels: int) -> dict[int, tuple[np.ndarray, ...]]:
    return {
        j: (
            np.empty((n, size >> j, size >> j), np.float32),
            np.empty((n, 3, size >> j, size >> j), np.float32),
        )
        for j in range(1, levels + 1)
    }


def ours_in_memory(images: np.ndarray, out: dict, wavelet: str, batch: int) -> None:
    """Fill ``out`` (see :func:`_outputs`) batch by batch with msprior's ``dwt``."""
    x = torch.from_numpy(images)
    with torch.no_grad():
        for start in range(0, len(images), batch):
            low = x[start : start + batch]  # (B, S, S)
            for lows, details in out.values():
                low, bands = dwt(low, wavelet)  # (B, s, s), (B, 3, s, s)
                lows[start : start + batch] = low.numpy()
                details[start : start + batch] = bands.numpy()


def reference_dwt2(images: np.ndarray, out: dict, wavelet: str) -> None:
    """Fill ``out`` one image at a time with ``pywt.dwt2``, level after level."""
    for i, image in enumerate(images):
        low = image
        for j, (lows, details) in out.items():
            low, bands = pywt.dwt2(low, wavelet, mode="periodization")
            lows[i] = low / 2**j
            details[i] = np.stack(bands) / 2**j


def reference_wavedec2(images: np.ndarray, out: dict, wavelet: str) -> None:
    """One ``pywt.wavedec2`` per image: the coarsest low-pass and every detail level."""
    levels = max(out)
    for i, image in enumerate(images):
        coeffs = pywt.wavedec2(image, wavelet, mode="periodization", level=levels)
        out[levels][0][i] = coeffs[0] / 2**levels
        for j in range(1, levels + 1):  # pywt lists the coarsest first
            out[j][1][i] = np.stack(coeffs[-j]) / 2**j


def transform_in_fresh_process(
    images: np.ndarray, tmp: Path, *, threads: int, repeats: int, env: dict
) -> dict:
    """:func:`transform_figures` in a new interpreter with ``env`` added."""
    import json
    import os
    import subprocess
    import sys

    path = tmp / "images.npy"
    np.save(path, images)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.precompute",
            str(path),
            str(threads),
            str(repeats),
        ],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _memory_floor(images: np.ndarray, buffer: np.ndarray, out: dict) -> None:
    """The memory traffic of any transform: read the images, write every array."""
    np.copyto(buffer, images)
    for arrays in out.values():
        for array in arrays:
            array.fill(0.0)


def transform_figures(
    images: np.ndarray,
    *,
    levels: int = 2,
    wavelet: str = "haar",
    batches: tuple[int, ...] = (256, 16),
    repeats: int = 5,
) -> dict:
    """Images/s of msprior's batched transform and of the per-image references.

    Returns
    -------
    dict
        ``reference_dwt2`` and ``reference_wavedec2`` (images/s), ``ours_b{B}`` per
        batch size, ``ratio_b{B}`` = ours / reference_dwt2, ``memory_floor`` (the
        rate of merely reading the images and writing the arrays), and
        ``max_abs_diff`` between our arrays and the reference's.
    """
    n, size = len(images), images.shape[-1]
    ref, ours = _outputs(n, size, levels), _outputs(n, size, levels)
    functions = {"reference_dwt2": lambda: reference_dwt2(images, ref, wavelet)}
    functions["reference_wavedec2"] = lambda: reference_wavedec2(
        images, _outputs(n, size, levels), wavelet
    )
    for b in batches:
        functions[f"ours_b{b}"] = lambda b=b: ours_in_memory(images, ours, wavelet, b)
    floor_buffer = np.empty_like(images)
    floor_out = _outputs(n, size, levels)
    functions["memory_floor"] = lambda: _memory_floor(images, floor_buffer, floor_out)
    best = interleaved_best(functions, repeats)
    diff = max(
        float(np.abs(a - b).max())
        for j in ref
        for a, b in zip(ref[j], ours[j], strict=True)
    )
    result = {name: round(n / t, 1) for name, t in best.items()}
    for b in batches:
        result[f"ratio_b{b}"] = round(best["reference_dwt2"] / best[f"ours_b{b}"], 2)
    result["max_abs_diff"] = diff
    result["images"] = n
    return result


# --------------------------------------------------------------------------- files


def _layout(path: Path) -> dict[str, dict]:
    """Shape, chunks and compression of every coefficient dataset of ``path``."""
    with open_h5_read(path) as f:
        return {
            f"{split}/{name}": {
                "shape": ds.shape,
                "chunks": ds.chunks,
                "compression": ds.compression,
            }
            for split in f
            for name, ds in f[split].items()
            if name != "names"
        }


def reference_precompute(
    faces_path: Path, out_path: Path, layout: dict, levels: int, wavelet: str
) -> None:
    """``faces.h5`` -> the datasets of ``layout``, per-image PyWavelets in between."""
    with open_h5_read(faces_path) as faces, h5py.File(out_path, "w") as out:
        for split in (s for s in ("train", "valid", "test") if s in faces):
            sets = {
                name.split("/")[1]: out.create_dataset(
                    name,
                    shape=spec["shape"],
                    maxshape=(None, *spec["shape"][1:]),
                    dtype=np.float32,
                    chunks=spec["chunks"],
                    compression=spec["compression"],
                )
                for name, spec in layout.items()
                if name.startswith(f"{split}/")
            }
            n, size = faces[split].shape[0], faces[split].shape[-1]
            for start in range(0, n, BLOCK):
                block = faces[split][start : start + BLOCK]  # (B, S, S)
                arrays = _outputs(len(block), size, levels)
                reference_dwt2(block, arrays, wavelet)
                for j, (lows, details) in arrays.items():
                    sets[f"low_{j}"][start : start + len(block)] = lows
                    sets[f"details_{j}"][start : start + len(block)] = details


def _phases(faces_path: Path, layout: dict, tmp: Path, levels: int, wavelet: str):
    """Seconds spent reading faces, transforming, writing (as laid out, and plain)."""
    with open_h5_read(faces_path) as f:
        start = time.perf_counter()
        images = f["train"][:]
        read = time.perf_counter() - start
    n, size = images.shape[0], images.shape[-1]
    arrays = _outputs(n, size, levels)
    start = time.perf_counter()
    ours_in_memory(images, arrays, wavelet, BLOCK)
    transform = time.perf_counter() - start
    writes = {}
    for label, compression in (("as_laid_out", "keep"), ("uncompressed", None)):
        start = time.perf_counter()
        with h5py.File(tmp / f"phase_{label}.h5", "w") as out:
            for j, (lows, details) in arrays.items():
                for name, data in ((f"low_{j}", lows), (f"details_{j}", details)):
                    spec = layout[f"train/{name}"]
                    ds = out.create_dataset(
                        name,
                        shape=data.shape,
                        maxshape=(None, *data.shape[1:]),
                        dtype=np.float32,
                        chunks=spec["chunks"],
                        compression=spec["compression"]
                        if compression == "keep"
                        else compression,
                    )
                    for s in range(0, n, BLOCK):
                        ds[s : s + BLOCK] = data[s : s + BLOCK]
        writes[label] = time.perf_counter() - start
        writes[f"{label}_bytes"] = (tmp / f"phase_{label}.h5").stat().st_size
    return {
        "read_faces_s": round(read, 3),
        "transform_s": round(transform, 3),
        "write_s": round(writes["as_laid_out"], 3),
        "write_uncompressed_s": round(writes["uncompressed"], 3),
        "file_mb": round(writes["as_laid_out_bytes"] / 1e6, 1),
        "file_uncompressed_mb": round(writes["uncompressed_bytes"] / 1e6, 1),
    }


def _profile_top(fn, top: int = 5) -> list[dict]:
    """The ``top`` functions by own time under cProfile, with their share."""
    profiler = cProfile.Profile()
    profiler.runcall(fn)
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return [
        {
            "function": f"{Path(file).name}:{line}({name})",
            "share": round(tt / total, 3),
        }
        for (file, line, name), (_, _, tt, _, _) in rows
    ]


def file_figures(
    faces_path: Path,
    tmp: Path,
    *,
    levels: int = 2,
    wavelet: str = "haar",
    repeats: int = 2,
) -> dict:
    """``precompute_coefficients`` against the per-image reference, file to file."""
    cfg = WaveletConfig(wavelet, levels)
    ours_path, ref_path = tmp / "ours.h5", tmp / "reference.h5"
    precompute_coefficients(faces_path, ours_path, cfg)  # also gives the layout
    layout = _layout(ours_path)
    best = interleaved_best(
        {
            "ours": lambda: precompute_coefficients(faces_path, ours_path, cfg),
            "reference": lambda: reference_precompute(
                faces_path, ref_path, layout, levels, wavelet
            ),
        },
        repeats,
        warmup=0,
    )
    with open_h5_read(faces_path) as f:
        n = sum(f[s].shape[0] for s in ("train", "valid", "test") if s in f)
    phases = _phases(faces_path, layout, tmp, levels, wavelet)
    top = _profile_top(lambda: precompute_coefficients(faces_path, ours_path, cfg))
    return {
        "images": n,
        "ours": round(n / best["ours"], 1),
        "reference": round(n / best["reference"], 1),
        "ratio": round(best["reference"] / best["ours"], 2),
        "phases": phases,
        "profile_top": top,
        "compression": layout["train/details_1"]["compression"],
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.precompute IMAGES.npy THREADS REPEATS``: transform figures.

    Prints :func:`transform_figures` as JSON; used to measure the transform in a
    fresh process under another OpenMP environment.
    """
    import json
    import sys

    path, threads, repeats = (argv if argv is not None else sys.argv[1:])[:3]
    torch.set_num_threads(int(threads))
    images = np.load(path)
    print(json.dumps(transform_figures(images, repeats=int(repeats))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
