"""Typed configuration: one frozen dataclass per concern, built once from the workflow
config (a nested dict, as in ``config/config.yaml``). Unknown keys are rejected with
their dotted name, so a typo never silently falls back to a default.

The JSON schema in ``workflow/schemas/config.schema.yaml`` checks the same keys and
types before any job runs; ``tests/test_config.py`` keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Config",
    "schema_error",
    "DataConfig",
    "EvaluateConfig",
    "NetworksConfig",
    "SampleConfig",
    "TrainConfig",
    "WaveletConfig",
    "from_dict",
]


@dataclass(frozen=True)
class DataConfig:
    """Where the faces come from and how they are cut to size."""

    source: str = "embedded"  # embedded | celeba | folder
    celeba_zip: str | None = None  # img_align_celeba.zip, or its extracted folder
    celeba_partition: str | None = None  # list_eval_partition.txt or Kaggle's CSV
    download: bool = False  # fetch the official files (md5-checked) when absent
    download_dir: str = "data/celeba"
    folder: str | None = None  # any folder of JPEG/PNG images
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # folder, embedded
    size: int = 32  # side of the square output image, pixels
    crop: tuple[int, int, int, int] | None = (
        None  # rows top, bottom; columns left, right
    )
    max_images: dict = field(default_factory=dict)  # split -> count cap
    max_bad_fraction: float = 0.01
    max_pixels: int = 50_000_000  # larger images are refused (decompression bombs)

    def __post_init__(self):
        if self.source not in {"embedded", "celeba", "folder"}:
            raise ValueError(
                f"data.source: unknown source {self.source!r}; "
                "expected embedded, celeba or folder"
            )
        if self.size < 2:
            raise ValueError(f"data.size must be >= 2, got {self.size}")
        if len(self.split_fractions) != 3 or not math.isclose(
            sum(self.split_fractions), 1.0, abs_tol=1e-6
        ):
            raise ValueError(
                f"data.split_fractions must be three numbers summing to 1, "
                f"got {list(self.split_fractions)}"
            )
        unknown = set(self.max_images) - {"train", "valid", "test"}
        if unknown:
            raise ValueError(f"data.max_images: unknown split(s) {sorted(unknown)}")


@dataclass(frozen=True)
class WaveletConfig:
    name: str = "haar"
    levels: int = 2

    def __post_init__(self):
        if self.levels < 1:
            raise ValueError(f"wavelet.levels must be >= 1, got {self.levels}")
        try:
            self.filter_length  # noqa: B018  an unknown or non-orthogonal name fails
        except ValueError as err:
            raise ValueError(f"wavelet.name: {err}") from None

    @property
    def filter_length(self) -> int:
        from msprior.wavelets import filter_length

        return filter_length(self.name)


@dataclass(frozen=True)
class NetworksConfig:
    """Architecture of every network, or where to take published ones from."""

    source: str = "trained"  # trained | published
    # A folder laid out like the authors' release; files missing there are downloaded
    # into it from published_url (the pinned commit), each checked against its sha256.
    published_dir: str = "data/published-denoisers"
    published_url: str | None = None  # default: msprior.published.DEFAULT_BASE_URL
    published_setting: str = "celebA_160x160_gray"
    depth: int = 21
    width: int = 64
    lowpass_depth: int = 20
    lowpass_rf: int | None = None  # default: the largest field at lowpass_depth
    receptive_fields: tuple[int, ...] = (5, 9, 13, 23, 43)
    flat: bool = True  # also train the pixel-domain baselines

    def __post_init__(self):
        if self.source not in {"trained", "published"}:
            raise ValueError(
                f"networks.source: unknown source {self.source!r}; "
                "expected trained or published"
            )
        if not self.receptive_fields:
            raise ValueError("networks.receptive_fields must not be empty")
        from msprior.networks import kernel_layout

        fields = [
            ("networks.receptive_fields", self.depth, rf)
            for rf in self.receptive_fields
        ]
        fields.append(("networks.lowpass_rf", self.lowpass_depth, self.lowpass_field))
        for key, depth, rf in fields:
            try:
                kernel_layout(depth, rf)
            except ValueError as err:
                raise ValueError(f"{key}: {err}") from None

    @property
    def lowpass_field(self) -> int:
        return self.lowpass_rf or 2 * self.lowpass_depth + 1


@dataclass(frozen=True)
class TrainConfig:
    """The paper's recipe by default; ``max_steps`` caps small runs."""

    batch_size: int = 512
    lr: float = 1e-3
    epochs_base: int = 500  # epochs at scale j: epochs_base * 4**j (j = 0 finest)
    halve_every_base: int = 50  # learning rate halved every halve_every_base * 4**j
    max_steps: int | None = (
        None  # at the finest scale; x 4**(j-1) at level j, as epochs
    )
    patch_size: int | None = None  # random square crops of the training bands
    checkpoint_every: int = 500
    validate_every: int = 100
    valid_images: int = 64
    valid_sigmas_255: tuple[float, ...] = (20.0, 60.0, 100.0)
    amp: bool = False  # bf16 autocast on a GPU
    channels_last: bool = False
    threads: int | None = None  # torch threads on the CPU; default: what the job got
    progress: bool = True  # a progress bar on an interactive terminal

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"train.max_steps must be >= 1, got {self.max_steps}")
        if self.checkpoint_every < 1:
            raise ValueError("train.checkpoint_every must be >= 1")


@dataclass(frozen=True)
class EvaluateConfig:
    n_images: int = 100
    sigmas_255: tuple[float, ...] = tuple(10 ** (0.5 + 2.3 * i / 9) for i in range(10))
    batch_size: int = 25
    examples_sigma_255: float | None = None  # default: the highest sigma
    flat_rfs: tuple[int, ...] | None = None  # in the table; default: all
    multiscale_rfs: tuple[int, ...] | None = None  # in the table; default: all
    # published networks only: sigmas of the comparison with reference_psnr.json
    reference_sigmas_255: tuple[float, ...] = (20.0, 100.0, 260.0)

    def __post_init__(self):
        if self.n_images < 1:
            raise ValueError(f"evaluate.n_images must be >= 1, got {self.n_images}")
        if any(s < 0 for s in self.sigmas_255):
            raise ValueError("evaluate.sigmas_255 must be non-negative")


@dataclass(frozen=True)
class SampleConfig:
    """Stochastic coarse-to-fine ascent (see :mod:`msprior.sampling`)."""

    rf: int | None = None  # conditional networks used to sample; default: the smallest
    n_samples: int = 16
    h0: float = 0.01
    beta: float = 0.1  # the paper's 65-160 steps per scale; clear faces (README)
    sigma_0: float = 1.0
    sigma_min: float = 0.01
    max_steps: int = 1000
    batch_size: int = 16
    superres_images: int = 4
    superres_per_image: int = 3
    inpaint_images: int = 4

    def __post_init__(self):
        if not 0 < self.beta <= 1:
            raise ValueError(f"sample.beta must be in (0, 1], got {self.beta}")
        if not 0 < self.h0 <= 1:
            raise ValueError(f"sample.h0 must be in (0, 1], got {self.h0}")
        if self.sigma_min <= 0:
            raise ValueError("sample.sigma_min must be positive")
        if self.sigma_min >= self.sigma_0:
            raise ValueError(
                f"sample.sigma_min ({self.sigma_min}) must be below sample.sigma_0 "
                f"({self.sigma_0}): the ascent stops once the noise is under sigma_min"
            )


@dataclass(frozen=True)
class Config:
    run: str = "default"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    results: str = "results"
    data: DataConfig = field(default_factory=DataConfig)
    wavelet: WaveletConfig = field(default_factory=WaveletConfig)
    networks: NetworksConfig = field(default_factory=NetworksConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    resources: dict = field(default_factory=dict)  # workflow-only: per-rule resources

    def __post_init__(self):
        if self.device not in {
            "auto",
            "cpu",
            "cuda",
            "mps",
        } and not self.device.startswith("cuda:"):
            raise ValueError(f"device: unknown device {self.device!r}")
        for key in ("flat_rfs", "multiscale_rfs"):
            chosen = getattr(self.evaluate, key) or ()
            extra = sorted(set(chosen) - set(self.networks.receptive_fields))
            if extra:
                raise ValueError(
                    f"evaluate.{key} {extra} not among networks.receptive_fields"
                )
        if (
            self.sample.rf is not None
            and self.sample.rf not in self.networks.receptive_fields
        ):
            raise ValueError(
                f"sample.rf {self.sample.rf} is not among networks.receptive_fields "
                f"{list(self.networks.receptive_fields)}"
            )
        size, levels = self.data.size, self.wavelet.levels
        if size % 2**levels:
            raise ValueError(
                f"data.size {size} is not divisible by 2**wavelet.levels = {2**levels}"
            )
        from msprior.wavelets import fits  # torch only once a config is checked

        coarsest = size // 2 ** (levels - 1)  # the image the last level analyses
        if not fits(self.wavelet.name, coarsest):
            taps = self.wavelet.filter_length
            raise ValueError(
                f"wavelet.name {self.wavelet.name!r}: its filters ({taps} taps) are "
                f"too long for the {coarsest} x {coarsest} image of level {levels}; "
                "use a shorter wavelet, fewer levels or a larger data.size"
            )

    @property
    def sample_rf(self) -> int:
        return self.sample.rf or min(self.networks.receptive_fields)

    @property
    def run_dir(self) -> Path:
        return Path(self.results) / self.run


_SECTIONS = {
    "data": DataConfig,
    "wavelet": WaveletConfig,
    "networks": NetworksConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "sample": SampleConfig,
}


def _coerce(value, annotation):
    """Turn YAML lists into the tuples the dataclasses declare."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return value if value is None else _coerce(value, args[0])
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if annotation is int and isinstance(value, float) and value.is_integer():
        return int(value)  # JSON Schema counts 32.0 as an integer; Python does not
    return value


def _build(cls, values: dict, prefix: str):
    if not isinstance(values, dict):
        raise ValueError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        names = ", ".join(f"{prefix}{k}" for k in unknown)
        raise ValueError(f"unknown config key(s): {names}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        if name in _SECTIONS and cls is Config:
            kwargs[name] = _build(_SECTIONS[name], value or {}, f"{name}.")
        else:
            kwargs[name] = _coerce(value, hints[name])
    return cls(**kwargs)


def from_dict(values: dict) -> Config:
    """Build the typed config from the workflow's nested dict; reject unknown keys.

    With ``networks.source: published``, also refuse any setting that contradicts
    what the published weights expect (:func:`msprior.published.check_conventions`).
    """
    cfg = _build(Config, dict(values), "")
    if cfg.networks.source == "published":
        _check_published(cfg)
    return cfg


def _check_published(cfg: Config) -> None:
    from msprior.published import CONVENTIONS, check_conventions

    nets = cfg.networks
    check_conventions(
        nets.published_setting,
        size=cfg.data.size,
        levels=cfg.wavelet.levels,
        wavelet=cfg.wavelet.name,
        crop=cfg.data.crop,
        depth=nets.depth,
        width=nets.width,
        lowpass_depth=nets.lowpass_depth,
    )
    released = CONVENTIONS[nets.published_setting]["receptive_fields"]
    missing = sorted(set(nets.receptive_fields) - set(released))
    if missing:
        raise ValueError(
            f"networks.receptive_fields {missing} were not published for "
            f"{nets.published_setting} (released: {list(released)})"
        )
    if nets.lowpass_field != 41:
        raise ValueError(
            "networks.lowpass_rf must be 41 (or null) for published networks"
        )
    if nets.flat and nets.published_setting != "celebA_160x160_gray":
        raise ValueError(
            f"no flat networks were published for {nets.published_setting}; "
            "set networks.flat: false"
        )


def to_dict(config: Config) -> dict:
    """The resolved config, plain data, for provenance files."""
    return dataclasses.asdict(config)


def schema_error(values: dict, schema: dict) -> str | None:
    """The most relevant JSON-schema violation of ``values``, in one line, or None.

    Names the offending key by its dotted path, e.g. ``train.btach_size``.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(values))
    if error is None:
        return None
    where = ".".join(map(str, error.absolute_path))
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        return (
            f"{error.message} in {where or 'the top level'}; known keys: "
            f"{', '.join(known)}"
        )
    return f"{where or 'config'}: {error.message}"
