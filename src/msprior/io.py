"""Files: atomic writes, safe HDF5 reads, tensor-only checkpoints, run provenance."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import h5py

__all__ = [
    "atomic_path",
    "open_h5_read",
    "provenance",
    "save_torch",
    "load_torch",
    "write_json",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` on success.

    An interrupted writer leaves at most a ``.tmp`` file, never a file at ``path``
    that looks finished. The temporary name keeps the suffix, so libraries that
    look at it (h5py, matplotlib) still recognise the format.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def open_h5_read(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file read-only without file locking.

    Several jobs read the same file at once; HDF5's locks fail on many network file
    systems and are pointless for readers of a file that nobody writes.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such HDF5 file: {path}")
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as err:  # h5py's message does not name the file
        raise OSError(
            f"{path} cannot be read as HDF5 ({err}); it may be truncated: delete it "
            "and rerun the rule that writes it"
        ) from None


def save_torch(obj, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_path`; ``obj`` holds tensors, plain data."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | os.PathLike, map_location="cpu"):
    """Load tensors and plain data only; never unpickles arbitrary objects."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        IndexError,
        KeyError,
    ) as err:
        if not Path(path).is_file():
            raise
        why = (
            "it holds objects other than tensors and plain data, or is no torch file"
            if isinstance(err, pickle.UnpicklingError)
            else f"{type(err).__name__}: {err}"
        )
        raise ValueError(
            f"{path} is not a readable torch file ({why}); it may be truncated or "
            "another file under that name"
        ) from None


def write_json(obj, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _installed(distribution: str, fallback: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return fallback


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance(config: dict | None = None, seed: int | None = None) -> dict:
    """What produced an output: config, seed, versions, commit, machine."""
    import numpy
    import pywt
    import torch

    import msprior

    return {
        "config": config,
        "seed": seed,
        "versions": {
            "msprior": msprior.__version__,
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            # the 1.9.0 wheel's pywt.__version__ says 1.8.0; the metadata is right
            "pywavelets": _installed("PyWavelets", pywt.__version__),
            "h5py": h5py.__version__,
        },
        "commit": _git_commit(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
        },
    }
