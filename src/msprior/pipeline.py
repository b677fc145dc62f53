"""What each workflow job does, as functions of the typed config and file paths.

The Snakemake scripts under ``workflow/scripts/`` only read their inputs and outputs and
call one function here, so every stage can also be run and tested without Snakemake.

Model names, used for folders under ``<run>/models/`` and in tables:
``lowpass``; ``conditional_j{j}_rf{rf}`` (``j = 1`` finest); ``flat_rf{rf}``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
import torch

from msprior import figures
from msprior.config import Config
from msprior.evaluation import denoising_table, noisy_images, write_tables
from msprior.io import atomic_path, open_h5_read, provenance, write_json
from msprior.multiscale import MultiScaleModel, super_resolve, synthesize
from msprior.networks import NetworkSpec, denoise, load_model
from msprior.sampling import (
    Constraint,
    SamplerSettings,
    constrained_initial_state,
    generators_for,
    initial_state,
    sample,
)
from msprior.training import Task, select_device, train
from msprior.wavelets import idwt, wavedec

__all__ = [
    "model_names",
    "task_for",
    "run_training",
    "run_evaluation",
    "run_synthesis",
    "run_flat_synthesis",
    "run_superres",
    "run_inpainting",
    "run_reference_comparison",
    "import_network",
    "setup_logging",
]

log = logging.getLogger(__name__)


def setup_logging(path=None, level=logging.INFO) -> None:
    """Log to ``path`` (a rule's ``log:``) or to stderr; library code only logs.

    With a ``path``, an exception that ends the process is logged there too (with its
    traceback): Snakemake points at the rule's log, and on a cluster the console that
    shows the traceback is another file.
    """
    handler = logging.FileHandler(path, mode="w") if path else logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    if path:
        sys.excepthook = _log_then(sys.__excepthook__)


def _log_then(hook):
    def log_uncaught(kind, value, tb):
        if not issubclass(kind, KeyboardInterrupt):
            log.error("%s: %s", kind.__name__, value, exc_info=(kind, value, tb))
        hook(kind, value, tb)

    return log_uncaught


# --------------------------------------------------------------------------- models


def model_names(cfg: Config) -> list[str]:
    """Every network the run needs, in a fixed order."""
    nets = cfg.networks
    names = ["lowpass"]
    names += [
        f"conditional_j{j}_rf{rf}"
        for rf in nets.receptive_fields
        for j in range(1, cfg.wavelet.levels + 1)
    ]
    if nets.flat:
        names += [f"flat_rf{rf}" for rf in nets.receptive_fields]
    return names


def task_for(cfg: Config, name: str) -> Task:
    """The :class:`~msprior.training.Task` behind a model name."""
    nets = cfg.networks
    if name == "lowpass":
        spec = NetworkSpec(
            "lowpass", nets.lowpass_depth, nets.width, nets.lowpass_field
        )
        return Task(spec, cfg.wavelet.levels)
    role, *parts = name.split("_")
    fields = {p[0]: int(p[1:] if p[0] == "j" else p[2:]) for p in parts}
    if role not in {"conditional", "flat"} or "r" not in fields:
        raise ValueError(f"unknown model name {name!r}")
    spec = NetworkSpec(role, nets.depth, nets.width, fields["r"])
    return Task(spec, fields.get("j", 0))


def run_training(
    cfg: Config,
    name: str,
    *,
    faces,
    wavelets,
    model,
    metrics,
    curve,
    work_dir,
    threads: int | None = None,
) -> None:
    """Train one network; ``work_dir`` keeps its checkpoint and running metrics between
    attempts (Snakemake removes a failed job's declared outputs, never this folder)."""
    task = task_for(cfg, name)
    tcfg = cfg.train
    if threads and not tcfg.threads:
        torch.set_num_threads(threads)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        provenance(_plain(cfg), cfg.seed) | {"model": name}, work_dir / "run.json"
    )
    data = faces if task.spec.role == "flat" else wavelets
    running = work_dir / "metrics.jsonl"
    train(
        task,
        tcfg,
        train_path=data,
        valid_path=data,
        out_model=model,
        checkpoint=work_dir / "checkpoint.pt",
        metrics=running,
        seed=cfg.seed,
        device=cfg.device,
        extra={"name": name, "run": cfg.run, "wavelet": cfg.wavelet.name},
    )
    with atomic_path(metrics) as tmp:
        tmp.write_bytes(running.read_bytes())
    figures.training_curve(metrics, curve, title=f"{name} ({cfg.run})")


def _plain(cfg: Config) -> dict:
    from msprior.config import to_dict

    return to_dict(cfg)


def _load_models(paths: Mapping[str, str], device) -> dict:
    """Each network with its batch norm folded, ready for inference on ``device``.

    On a CPU the flat networks, which always see whole images, get channels-last
    weights: oneDNN's convolutions then run 1.3-2x faster at 160 x 160 (measured on
    the published networks). The multi-scale networks see 4-16x fewer pixels, where
    channels-last measured slower, so they keep the default layout.
    """
    nets = {}
    for name, p in paths.items():
        net = load_model(p, map_location=device, fold=True).to(device)
        if name.startswith("flat_") and torch.device(device).type == "cpu":
            net = net.to(memory_format=torch.channels_last)
        nets[name] = net
    return nets


def _multiscale(cfg: Config, nets: dict, rf: int) -> MultiScaleModel:
    conds = {
        j: nets[f"conditional_j{j}_rf{rf}"] for j in range(1, cfg.wavelet.levels + 1)
    }
    return MultiScaleModel(nets["lowpass"], conds, cfg.wavelet.name)


def _test_images(cfg: Config, faces, n: int) -> torch.Tensor:
    with open_h5_read(faces) as f:
        if "test" not in f or len(f["test"]) == 0:
            raise ValueError(f"{faces}: the test split is empty")
        images = np.asarray(f["test"][:n], dtype=np.float32)
    if len(images) < n:
        log.warning("only %d test images (asked for %d)", len(images), n)
    return torch.from_numpy(images)[:, None]  # (N, 1, H, W)


# --------------------------------------------------------------------------- evaluate


def run_evaluation(
    cfg: Config,
    *,
    faces,
    models: Mapping[str, str],
    table_csv,
    table_md,
    table_tex,
    curves,
    examples,
) -> None:
    """Denoising table and figures. ``curves``, ``examples``: (png, pdf) paths."""
    device = select_device(cfg.device)
    nets = _load_models(models, device)
    clean = _test_images(cfg, faces, cfg.evaluate.n_images)
    denoisers = {}
    ev, rfs = cfg.evaluate, cfg.networks.receptive_fields
    for rf in ev.flat_rfs or rfs:
        if f"flat_rf{rf}" in nets:
            net = nets[f"flat_rf{rf}"]
            denoisers[f"flat_rf{rf}"] = (rf, lambda y, net=net: denoise(net, y))
    for rf in ev.multiscale_rfs or rfs:
        ms = _multiscale(cfg, nets, rf)
        denoisers[f"multiscale_rf{rf}"] = (rf, ms.denoise)
    ms = _multiscale(cfg, nets, cfg.sample_rf)
    denoisers["lowpass_only"] = (None, lambda y: ms.denoise(y, lowpass_only=True))
    table = denoising_table(
        denoisers,
        clean,
        cfg.evaluate.sigmas_255,
        seed=cfg.seed,
        batch_size=cfg.evaluate.batch_size,
        device=device,
    )
    write_tables(table, table_csv, table_md, table_tex)
    title = f"{cfg.run}: {len(clean)} test images, {cfg.data.source} {cfg.data.size}px"
    figures.denoising_curves(table, *curves, title=title)

    sigmas = cfg.evaluate.sigmas_255
    s = cfg.evaluate.examples_sigma_255
    s = max(sigmas) if s is None else s
    shown = clean[:4]
    noisy = noisy_images(shown, s / 255, cfg.seed, 10_000).to(device)
    columns = {"noisy": noisy}
    flat = [rf for rf in ev.flat_rfs or rfs if f"flat_rf{rf}" in nets]
    if flat:
        columns[f"flat RF {max(flat)}"] = denoise(nets[f"flat_rf{max(flat)}"], noisy)
    columns[f"multi-scale RF {cfg.sample_rf}"] = ms.denoise(noisy)
    columns["clean"] = shown
    with torch.no_grad():
        arrays = {k: v.detach().cpu().numpy() for k, v in columns.items()}
    figures.denoising_examples(
        arrays, *examples, title=f"sigma = {s:.0f}/255 ({cfg.run})"
    )


# --------------------------------------------------------------------------- sample


def _settings(cfg: Config) -> SamplerSettings:
    s = cfg.sample
    return SamplerSettings(
        h0=s.h0, beta=s.beta, sigma_min=s.sigma_min, max_steps=s.max_steps
    )


def _seeds(cfg: Config, stream: int, n: int) -> list[int]:
    return [(cfg.seed * 7919 + stream) * 1_000_003 + i for i in range(n)]


def _write_samples(
    path, images: torch.Tensor, traces: Mapping[str, dict], attrs
) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("images", data=images.cpu().numpy())
        for name, tr in traces.items():
            g = f.create_group(f"trace/{name}")
            for key in ("sigma", "h", "gamma"):
                g.create_dataset(key, data=torch.cat(tr[key], dim=1).numpy())
            g.create_dataset("steps", data=torch.cat(tr["steps"]).numpy())
            g.create_dataset("reason", data=np.array(sum(tr["reason"], []), dtype="S"))
        for k, v in attrs.items():
            f.attrs[k] = json.dumps(v) if isinstance(v, dict | list) else v


def _pad_cat(traces: list) -> torch.Tensor:
    """Concatenate (T_k, B_k) traces along the batch, NaN-padding the steps."""
    t = max(tr.shape[0] for tr in traces)
    return torch.cat(
        [
            torch.nn.functional.pad(tr, (0, 0, 0, t - tr.shape[0]), value=float("nan"))
            for tr in traces
        ],
        dim=1,
    )


def _collect(store: dict, name: str, trace) -> None:
    entry = store.setdefault(
        name, {"sigma": [], "h": [], "gamma": [], "steps": [], "reason": []}
    )
    for key in ("sigma", "h", "gamma", "steps"):
        entry[key].append(getattr(trace, key))
    entry["reason"].append(trace.reason)


def _finish(store: dict) -> dict:
    for entry in store.values():
        for key in ("sigma", "h", "gamma"):
            entry[key] = [_pad_cat(entry[key])]
    return store


def _scale_name(cfg: Config, level: int) -> str:
    return "lowpass" if level > cfg.wavelet.levels else f"details j={level}"


def run_synthesis(
    cfg: Config, *, models: Mapping[str, str], samples_h5, grid, traces
) -> None:
    """Unconditional samples coarse to fine and their sigma_t traces.

    ``grid``, ``traces``: (png, pdf) paths.
    """
    device = select_device(cfg.device)
    nets = _load_models(models, device)
    model = _multiscale(cfg, nets, cfg.sample_rf)
    settings, s = _settings(cfg), cfg.sample
    side = cfg.data.size // 2**cfg.wavelet.levels
    seeds = _seeds(cfg, 1, s.n_samples)
    images, store = [], {}
    for start in range(0, s.n_samples, s.batch_size):
        gens = generators_for(seeds[start : start + s.batch_size])
        out, trs = synthesize(
            model, (side, side), gens, settings, sigma_0=s.sigma_0, device=device
        )
        images.append(out.cpu())
        for level, tr in trs.items():
            _collect(store, _scale_name(cfg, level), tr)
    images = torch.cat(images)
    store = _finish(store)
    _write_samples(samples_h5, images, store, {"seeds": seeds, "rf": cfg.sample_rf})
    steps = {k: v["steps"][0].tolist() for k, v in store.items()}
    log.info("steps per scale: %s", {k: (min(v), max(v)) for k, v in steps.items()})
    figures.image_grid(
        images.numpy(),
        *grid,
        title=f"multi-scale samples, RF {cfg.sample_rf} ({cfg.run})",
    )
    figures.sigma_traces(
        {k: v["sigma"][0].numpy() for k, v in store.items()},
        *traces,
        sigma_min=s.sigma_min,
        title=f"sigma_t per scale ({cfg.run})",
    )


def run_flat_synthesis(cfg: Config, *, model, grid) -> None:
    """Samples of one flat (pixel-domain) network, started from N(0.5, sigma_0^2 I):
    what a local model gives without the multi-scale split. ``grid``: (png, pdf)."""
    device = select_device(cfg.device)
    net = _load_models({"flat_sampled": model}, device)["flat_sampled"]
    if net.spec.role != "flat":
        raise ValueError(f"{model} is a {net.spec.role} network, not a flat one")
    rf = net.spec.rf
    s = cfg.sample
    gens = generators_for(_seeds(cfg, 2, min(s.n_samples, s.batch_size)))
    y = initial_state(
        (1, cfg.data.size, cfg.data.size),
        gens,
        mean=0.5,
        sigma_0=s.sigma_0,
        device=device,
    )
    flat, trace = sample(net, y, gens, _settings(cfg))
    log.info("flat RF %d samples: %s steps", rf, trace.steps.tolist())
    figures.image_grid(
        flat.cpu().numpy(),
        *grid,
        title=f"flat RF {rf} samples, no multi-scale ({cfg.run})",
    )


def run_superres(
    cfg: Config, *, faces, models: Mapping[str, str], out_h5, panel
) -> None:
    """Samples of every finer level given the coarsest low-pass of test images."""
    device = select_device(cfg.device)
    model = _multiscale(cfg, _load_models(models, device), cfg.sample_rf)
    s = cfg.sample
    clean = _test_images(cfg, faces, s.superres_images).to(device)
    low, _ = wavedec(clean, cfg.wavelet.levels, cfg.wavelet.name)  # (N, 1, h, w)
    k = s.superres_per_image
    lows = low.repeat_interleave(k, dim=0)  # (N k, 1, h, w)
    gens = generators_for(_seeds(cfg, 3, len(lows)))
    out, trs = super_resolve(model, lows, gens, _settings(cfg), sigma_0=s.sigma_0)
    store = {}
    for level, tr in trs.items():
        _collect(store, _scale_name(cfg, level), tr)
    _write_samples(out_h5, out.cpu(), _finish(store), {"rf": cfg.sample_rf})
    up = low
    for _ in range(cfg.wavelet.levels):  # plain upsampling: zero details
        up = idwt(
            up,
            torch.zeros(*up.shape[:-2], 3, *up.shape[-2:], device=device),
            cfg.wavelet.name,
        )
    samples = out.cpu().reshape(len(clean), k, *out.shape[1:])
    side = cfg.data.size // 2**cfg.wavelet.levels
    figures.superres_panel(
        clean.cpu().numpy(),
        up.cpu().numpy(),
        samples.numpy(),
        *panel,
        title=f"super-resolution {side} -> {cfg.data.size} ({cfg.run})",
    )


def run_inpainting(cfg: Config, *, faces, models: Mapping[str, str], panel) -> None:
    """Fill a missing central square of test images, the rest held to the measurement,
    with the multi-scale model used as a blind pixel-domain denoiser."""
    device = select_device(cfg.device)
    model = _multiscale(cfg, _load_models(models, device), cfg.sample_rf)
    s = cfg.sample
    clean = _test_images(cfg, faces, s.inpaint_images).to(device)
    n = cfg.data.size
    mask = torch.ones(1, 1, n, n, device=device)
    mask[..., n // 4 : 3 * n // 4, n // 4 : 3 * n // 4] = 0
    gens = generators_for(_seeds(cfg, 4, len(clean)))
    measured = Constraint(mask, clean)
    y = constrained_initial_state(measured, gens, mean=0.5, sigma_0=s.sigma_0)
    out, trace = sample(model, y, gens, _settings(cfg), constraint=measured)
    log.info("inpainting steps: %s", trace.steps.tolist())
    columns = {"original": clean, "measured": clean * mask, "inpainted": out}
    figures.denoising_examples(
        {k: v.cpu().numpy() for k, v in columns.items()},
        *panel,
        title=f"inpainting, centre {n // 2}px missing ({cfg.run})",
    )


# --------------------------------------------------------------------------- published


def import_network(cfg: Config, name: str, out_path) -> None:
    """Take network ``name`` from the authors' release instead of training it.

    The file is looked for in ``networks.published_dir``; when absent there, it is
    downloaded into it (from ``networks.published_url``, by default the pinned commit
    of the authors' repository). Either way its sha256 is checked.
    """
    from msprior import published

    task = task_for(cfg, name)
    nets = cfg.networks
    level = task.level if task.spec.role != "flat" else None
    release = published.find_published(
        nets.published_setting,
        task.spec.role,
        rf=None if name == "lowpass" else task.spec.rf,
        level=level,
    )
    if release.spec != task.spec:
        raise ValueError(
            f"{name}: the config builds {task.spec}, the release holds {release.spec}"
        )
    try:
        files = published.locate_published(nets.published_dir, [release])
    except FileNotFoundError:
        log.info("%s not in %s: downloading it", release.relpath, nets.published_dir)
        files = published.fetch_published(
            nets.published_dir,
            [release],
            base_url=nets.published_url or published.DEFAULT_BASE_URL,
        )
    source = files[release.relpath]
    log.info("%s: taking %s", name, source)
    published.import_published(source, task.spec, out_path, relpath=release.relpath)


def reference_psnr() -> dict:
    """The PSNRs that the published networks reach, per release folder and sigma."""
    from importlib.resources import files

    text = files("msprior").joinpath("published_reference_psnr.json").read_text()
    return json.loads(text)


def run_reference_comparison(
    cfg: Config, *, faces, models: Mapping[str, str], table_csv, table_md
) -> None:
    """Our PSNR of each published flat and low-pass network against the reference.

    Flat networks: PSNR of the whole denoised image. Low-pass network: the release
    measured it on PyWavelets' unnormalised coarsest low-pass (``2**J`` times our local
    mean) with white noise of std ``sigma`` added to it directly, peak 1; so do we.
    """
    import pandas as pd

    from msprior.published import CONVENTIONS

    device = select_device(cfg.device)
    reference = reference_psnr()
    clean = _test_images(cfg, faces, cfg.evaluate.n_images)
    low, _ = wavedec(clean, cfg.wavelet.levels, cfg.wavelet.name)
    low = low * CONVENTIONS[cfg.networks.published_setting]["reference_lowpass_gain"]
    rows = []
    for name, path in models.items():
        if not (name.startswith("flat_") or name == "lowpass"):
            continue
        folder = _release_folder(path)
        net = _load_models({name: path}, device)[name]
        target = clean if name != "lowpass" else low
        table = denoising_table(
            {name: (task_for(cfg, name).spec.rf, lambda y, net=net: denoise(net, y))},
            target,
            cfg.evaluate.reference_sigmas_255,
            seed=cfg.seed,
            batch_size=cfg.evaluate.batch_size,
            device=device,
        )
        for row in table.itertuples():
            ref = reference.get(folder, {}).get(f"{row.sigma_255:g}")
            rows.append(
                {
                    "model": name,
                    "release": folder,
                    "sigma_255": row.sigma_255,
                    "psnr_in": row.psnr_in,
                    "psnr_ours": row.psnr_out,
                    "psnr_reference": ref,
                    "difference_db": None if ref is None else row.psnr_out - ref,
                    "n_images": row.n_images,
                }
            )
    out = pd.DataFrame(rows)
    with atomic_path(table_csv) as tmp:
        out.to_csv(tmp, index=False)
    with atomic_path(table_md) as tmp:
        tmp.write_text(out.to_markdown(index=False, floatfmt=".2f") + "\n")


def _release_folder(path) -> str:
    from msprior.io import load_torch

    extra = load_torch(path).get("extra", {})
    if extra.get("source") != "published":
        raise ValueError(f"{path} is not a published network")
    return extra["relpath"].rsplit("/", 1)[0]
