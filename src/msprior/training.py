"""Training one blind denoiser: the paper's recipe, made of small named steps.

A job trains one network (a :class:`Task`): the coarsest low-pass, the conditional
network of one level, or a flat pixel-domain baseline. Scale index ``j`` runs from fine
to coarse, ``j = 1`` being the finest detail level; the flat network works at ``j = 0``.

The paper's recipe: noise ``sigma = (k / 255) ** 2`` with ``k`` uniform in
``{0 .. 254}`` (images in [0, 1]); loss = summed squared error of the noise estimate
divided by the batch size; Adam at ``lr``, halved every ``halve_every_base * 4**e``
epochs, for ``epochs_base * 4**e`` epochs, ``e = max(j - 1, 0)`` (``e = 0`` for the
finest networks). The low-pass network also sees its clean images scaled by a random
factor in (0, 1).

Reproducibility: every random draw of step ``t`` comes from a generator seeded with
``(seed, t)``, and the data order of epoch ``e`` from ``(seed, e)``. A checkpoint holds
the model, optimiser and scheduler state and the step, so a resumed run on the CPU ends
bit-identical to an uninterrupted one. It also holds what fixed the weights' path (the
network, the seed, the recipe and the training data, :func:`fingerprint`): a checkpoint
written under anything else is set aside, never resumed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from msprior.config import TrainConfig
from msprior.io import atomic_path, load_torch, open_h5_read, save_torch
from msprior.metrics import psnr
from msprior.networks import BFCNN, NetworkSpec, save_model

__all__ = [
    "NonFiniteLossError",
    "Task",
    "TrainingInterrupted",
    "fingerprint",
    "load_arrays",
    "select_device",
    "train",
]

log = logging.getLogger(__name__)

IN_MEMORY_LIMIT = 4 * 2**30  # bytes; larger training sets are read from disk per batch


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM arrived; a checkpoint was written and a rerun resumes from it."""


@dataclass(frozen=True)
class Task:
    """Which network a job trains: role, level (0 for flat) and architecture."""

    spec: NetworkSpec
    level: int

    @property
    def name(self) -> str:
        if self.spec.role == "conditional":
            return f"conditional_j{self.level}_rf{self.spec.rf}"
        if self.spec.role == "flat":
            return f"flat_rf{self.spec.rf}"
        return "lowpass"

    @property
    def epoch_exponent(self) -> int:
        return max(self.level - 1, 0)


# --------------------------------------------------------------------------- data


class _Arrays:
    """Clean training targets (and conditioning), in memory or read per batch.

    ``target`` and ``cond`` are NumPy arrays or HDF5 datasets of shape (N, h, w) or
    (N, C, h, w); :meth:`batch` always returns (n, C, h, w) float32 tensors.
    """

    def __init__(self, target, cond=None):
        self.target, self.cond = target, cond

    def __len__(self) -> int:
        return len(self.target)

    def batch(self, idx: np.ndarray) -> tuple[Tensor, Tensor | None]:
        order = np.argsort(idx)  # h5py wants increasing indices; undo afterwards
        inverse = np.argsort(order)

        def take(a):
            out = np.asarray(a[idx[order]], dtype=np.float32)[inverse]
            return torch.from_numpy(out[:, None] if out.ndim == 3 else out)

        return take(self.target), None if self.cond is None else take(self.cond)


def load_arrays(task: Task, path, split: str, max_images: int | None = None) -> _Arrays:
    """The clean arrays a task trains on, from ``wavelets.h5`` or ``faces.h5``.

    Data that fit in memory (:data:`IN_MEMORY_LIMIT`) are read once; larger data stay
    on disk and each batch is read from it.

    Shapes: target (N, C, h, w) with C = 3 for a conditional task, 1 otherwise;
    cond (N, 1, h, w) for a conditional task, else None.
    """
    f = open_h5_read(path)
    role, j = task.spec.role, task.level
    if role == "flat":
        if split not in f:
            raise KeyError(f"{path}: no split {split!r}; is it a faces file?")
        target, cond = f[split], None
    else:
        group = f.get(split)
        if group is None or f"low_{j}" not in group:
            raise KeyError(f"{path}: no level {j} coefficients for split {split!r}")
        if role == "lowpass":
            target, cond = group[f"low_{j}"], None
        else:
            target, cond = group[f"details_{j}"], group[f"low_{j}"]
    n = len(target) if max_images is None else min(max_images, len(target))
    if n == 0:
        raise ValueError(f"{path}: split {split!r} has no images")
    nbytes = 4 * math.prod(target.shape[1:]) * n
    if nbytes > IN_MEMORY_LIMIT:
        log.info("%s: %.1f GB, read per batch from disk", path, nbytes / 2**30)
        return _Arrays(target, cond)
    arrays = _Arrays(
        np.asarray(target[:n], dtype=np.float32),
        None if cond is None else np.asarray(cond[:n], dtype=np.float32),
    )
    f.close()
    return arrays


# --------------------------------------------------------------------------- steps


def select_device(name: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then the CPU, unless ``name`` says which."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _generator(seed: int, stream: int, index: int) -> torch.Generator:
    # One reproducible generator per (seed, stream, index), cheap to rebuild on resume.
    return torch.Generator().manual_seed(
        (seed * 1_000_003 + stream) * 1_000_033 + index
    )


def training_sigmas(n: int, gen: torch.Generator) -> Tensor:
    """Noise levels ``(k / 255) ** 2``, ``k`` uniform in 0..254; shape (n,)."""
    k = torch.randint(0, 255, (n,), generator=gen)
    return (k.float() / 255) ** 2


def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return torch.randperm(n, generator=_generator(seed, 1, epoch)).numpy()


def _batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    per_epoch = math.ceil(n / batch_size)
    epoch, k = divmod(step, per_epoch)
    return _epoch_order(n, seed, epoch)[k * batch_size : (k + 1) * batch_size]


def _random_crop(x: Tensor, c: Tensor | None, size: int, gen: torch.Generator):
    h, w = x.shape[-2:]
    if size >= min(h, w):
        return x, c
    top = int(torch.randint(0, h - size + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - size + 1, (1,), generator=gen))
    crop = (..., slice(top, top + size), slice(left, left + size))
    return x[crop], None if c is None else c[crop]


def make_batch(task: Task, data: _Arrays, cfg: TrainConfig, seed: int, step: int):
    """Clean target, conditioning, noise for ``step``: all drawn from its generator.

    Returns
    -------
    clean : (B, C, h, w); cond : (B, 1, h, w) or None; noise : (B, C, h, w)
    """
    gen = _generator(seed, 2, step)
    clean, cond = data.batch(_batch_indices(len(data), cfg.batch_size, seed, step))
    if cfg.patch_size:
        clean, cond = _random_crop(clean, cond, cfg.patch_size, gen)
    if task.spec.role == "lowpass":  # random intensity scale, as in the paper
        clean = clean * torch.rand(len(clean), 1, 1, 1, generator=gen)
    sigma = training_sigmas(len(clean), gen).view(-1, 1, 1, 1)
    noise = sigma * torch.randn(clean.shape, generator=gen)
    return clean, cond, noise


def loss_fn(estimate: Tensor, noise: Tensor) -> Tensor:
    """Summed squared error of the noise estimate, divided by the batch size."""
    return (estimate - noise).pow(2).sum() / len(noise)


@torch.no_grad()
def validation_psnr(
    network: BFCNN, clean: Tensor, cond: Tensor | None, sigmas_255, device
) -> dict[str, float]:
    """Mean PSNR (peak 1) of the denoised bands at fixed noise levels; fixed noise."""
    network.eval()
    out = {}
    gen = torch.Generator().manual_seed(12345)
    for s in sigmas_255:
        noise = (s / 255) * torch.randn(clean.shape, generator=gen)
        noisy = (clean + noise).to(device)
        c = None if cond is None else cond.to(device)
        estimate = noisy - network(noisy, cond=c)
        out[f"{s:g}"] = float(psnr(estimate.cpu().float(), clean).mean())
    network.train()
    return out


# --------------------------------------------------------------------------- state


def _schedule(task: Task, cfg: TrainConfig, n: int) -> tuple[int, int]:
    """(total steps, steps between learning-rate halvings)."""
    per_epoch = math.ceil(n / cfg.batch_size)
    scale = 4**task.epoch_exponent
    total = cfg.epochs_base * scale * per_epoch
    if cfg.max_steps is not None:  # steps at the finest scale; 4x per coarser level,
        total = min(total, cfg.max_steps * scale)  # as the recipe's epochs, same cost
    return total, max(cfg.halve_every_base * scale * per_epoch, 1)


# Settings that change what is logged or how often, never the weights; the number of
# steps is checked on its own (a longer run continues a shorter one exactly).
_BOOKKEEPING = frozenset(
    {
        "max_steps",
        "epochs_base",
        "checkpoint_every",
        "validate_every",
        "valid_images",
        "valid_sigmas_255",
        "threads",
        "progress",
    }
)


# Attributes of faces.h5 / wavelets.h5 that say where a file came from or what wrote
# it (path, commit, machine, versions), not what it holds.
_PROVENANCE_ATTRS = frozenset({"created_by", "inputs", "faces_path"})


def _data_identity(path) -> dict:
    """What the training file holds, from its HDF5 attributes: the digest of the faces'
    names and pixels, their counts and preparation, the wavelet. Cheap for a file of
    many GB; the same whichever commit or machine wrote it. (A file written before
    the content digest existed is known by its recorded md5s instead.)"""
    with open_h5_read(path) as f:
        attrs = {k: _plain_attr(v) for k, v in f.attrs.items()}
    identity = {k: v for k, v in attrs.items() if k not in _PROVENANCE_ATTRS}
    if identity.get("faces_content_sha256"):
        identity.pop("faces_md5", None)  # changes with the commit that wrote the faces
    return identity


def _plain_attr(value):
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value


def fingerprint(
    task: Task, cfg: TrainConfig, seed: int, train_path, device_type: str = "cpu"
) -> dict:
    """What fixes the path of the weights: a checkpoint resumes only under the same.

    The network (spec, level), the seed, the recipe (every :class:`TrainConfig` field
    but the bookkeeping ones; ``amp`` and ``channels_last`` only where they act, on a
    GPU) and what the training data hold.
    """
    recipe = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _BOOKKEEPING}
    for key in ("amp", "channels_last"):
        recipe[key] = recipe[key] and device_type == "cuda"
    return {
        "spec": task.spec.to_dict(),
        "level": task.level,
        "seed": seed,
        "recipe": json.loads(json.dumps(recipe)),  # tuples as lists, as saved
        "data": _data_identity(train_path),
    }


def _differences(old: dict, new: dict) -> list[str]:
    """Dotted names of the entries that differ between two fingerprints."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [
                f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
            ]
        elif a != b:
            out.append(key)
    return out


def _checkpoint_state(network, optimizer, scheduler, step: int, identity: dict) -> dict:
    return {
        "fingerprint": identity,
        "step": step,
        "model": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }


def _set_aside(path: Path, why: str) -> None:
    """Keep a checkpoint that must not be resumed next to it, out of the way."""
    aside = path.with_name(f"{path.stem}.superseded{path.suffix}")
    os.replace(path, aside)
    log.warning("%s: %s; not resumed, kept as %s; training afresh", path, why, aside)


def _resume(
    path: Path, network, optimizer, scheduler, identity: dict, total: int, device
) -> int:
    """The step to start from: that of ``path`` if it was written by this very job."""
    if not path.exists():
        return 0
    try:
        state = load_torch(path, map_location=device)
    except ValueError as err:  # saved atomically: a damaged disk, a file put there
        _set_aside(path, f"unreadable ({err})")
        return 0
    saved = state.get("fingerprint")
    if saved is None:
        _set_aside(path, "written without a record of its configuration")
        return 0
    changed = _differences(saved, identity)
    if changed:
        _set_aside(path, f"written under another configuration ({', '.join(changed)})")
        return 0
    if state["step"] > total:
        _set_aside(path, f"at step {state['step']}, past this run's {total} steps")
        return 0
    network.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    log.info("resumed from step %d (%s)", state["step"], path)
    return int(state["step"])


class _Metrics:
    """JSON-lines metrics; on resume, rows after the checkpoint's step are dropped."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        rows = []
        if path.exists() and resume_step > 0:
            rows = [
                r
                for r in map(json.loads, path.read_text().splitlines())
                if r["step"] <= resume_step
            ]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def write(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


@contextlib.contextmanager
def _sigterm_flag():
    """A dict whose "set" turns True on SIGTERM, for the loop to stop cleanly."""
    flag = {"set": False}

    def handler(signum, frame):
        flag["set"] = True

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: no handler, nothing to restore
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- loop


def train(
    task: Task,
    cfg: TrainConfig,
    *,
    train_path,
    valid_path,
    out_model,
    checkpoint,
    metrics,
    seed: int = 0,
    device: str = "auto",
    extra: dict | None = None,
) -> BFCNN:
    """Train ``task`` to the end, resuming from ``checkpoint`` if it exists.

    Writes ``out_model`` (see :func:`msprior.networks.save_model`) at the end,
    ``checkpoint`` every ``cfg.checkpoint_every`` steps and at the end, and one JSON
    line per validation to ``metrics``. On SIGTERM, checkpoints and raises
    :class:`TrainingInterrupted`; on a non-finite loss raises
    :class:`NonFiniteLossError` and keeps the last good checkpoint.
    """
    dev = select_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)  # only the initial weights use the global generator
    network = BFCNN(task.spec).to(dev)
    if cfg.channels_last and dev.type == "cuda":
        network = network.to(memory_format=torch.channels_last)
    data = load_arrays(task, train_path, "train")
    valid = load_arrays(task, valid_path, "valid", max_images=cfg.valid_images)
    probe = data.batch(np.arange(min(cfg.valid_images, len(data))))
    total, halve_every = _schedule(task, cfg, len(data))
    optimizer = torch.optim.Adam(network.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=halve_every, gamma=0.5
    )
    checkpoint, out_model = Path(checkpoint), Path(out_model)
    identity = fingerprint(task, cfg, seed, train_path, dev.type)
    step = _resume(checkpoint, network, optimizer, scheduler, identity, total, dev)
    metrics_file = _Metrics(Path(metrics), step)
    valid_batch = valid.batch(np.arange(len(valid)))
    log.info(
        "%s: %d parameters, %d images, %d steps on %s",
        task.name,
        sum(p.numel() for p in network.parameters()),
        len(data),
        total,
        dev,
    )

    network.train()
    autocast = torch.autocast(
        dev.type, dtype=torch.bfloat16, enabled=cfg.amp and dev.type == "cuda"
    )
    bar = _progress(total, step, cfg.progress)
    tick, images = time.perf_counter(), 0
    with _sigterm_flag() as term:
        while step < total:
            clean, cond, noise = make_batch(task, data, cfg, seed, step)
            noisy = (clean + noise).to(dev)
            cond = None if cond is None else cond.to(dev)
            if cfg.channels_last and dev.type == "cuda":
                noisy = noisy.contiguous(memory_format=torch.channels_last)
            with autocast:
                estimate = network(noisy, cond=cond)
            loss = loss_fn(estimate.float(), noise.to(dev))
            loss_value = loss.detach().item()
            if not math.isfinite(loss_value):
                raise NonFiniteLossError(
                    f"{task.name}: non-finite loss ({loss_value}) at step {step}; the "
                    f"last good checkpoint ({checkpoint}) is kept"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            images += len(clean)
            bar.update(1)
            last = step == total
            if step % cfg.validate_every == 0 or last:
                rate = images / (time.perf_counter() - tick)
                row = {
                    "step": step,
                    "loss": loss_value,
                    "lr": scheduler.get_last_lr()[0],
                    "images_per_s": rate,
                }
                row |= {
                    f"train_psnr_{k}": v
                    for k, v in validation_psnr(
                        network, *probe, cfg.valid_sigmas_255, dev
                    ).items()
                }
                row |= {
                    f"valid_psnr_{k}": v
                    for k, v in validation_psnr(
                        network, *valid_batch, cfg.valid_sigmas_255, dev
                    ).items()
                }
                metrics_file.write(row)
                bar.set_postfix(loss=f"{loss_value:.3g}")
                if not bar.interactive:
                    log.info(
                        "step %d/%d loss %.4g valid %s",
                        step,
                        total,
                        loss_value,
                        {k: round(v, 2) for k, v in row.items() if "valid" in k},
                    )
                tick, images = time.perf_counter(), 0
            if step % cfg.checkpoint_every == 0 or last or term["set"]:
                save_torch(
                    _checkpoint_state(network, optimizer, scheduler, step, identity),
                    checkpoint,
                )
            if term["set"] and not last:
                bar.close()
                raise TrainingInterrupted(
                    f"{task.name}: SIGTERM at step {step}; checkpoint written to "
                    f"{checkpoint}, rerun to resume"
                )
    bar.close()
    network.eval()
    save_model(
        out_model, network, step=step, extra=(extra or {}) | {"level": task.level}
    )
    return network


class _Progress:
    """tqdm on an interactive terminal; otherwise nothing (the loop logs instead)."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.interactive = enabled and sys.stderr.isatty()
        self.bar = None
        if self.interactive:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=initial, unit="step", dynamic_ncols=True
            )

    def update(self, n: int) -> None:
        if self.bar:
            self.bar.update(n)

    def set_postfix(self, **kw) -> None:
        if self.bar:
            self.bar.set_postfix(**kw)

    def close(self) -> None:
        if self.bar:
            self.bar.close()


def _progress(total: int, initial: int, enabled: bool) -> _Progress:
    return _Progress(total, initial, enabled)
