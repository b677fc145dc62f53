"""The denoisers published with the paper: registry, download, loading, conventions.

The authors released their trained networks in the repository
LabForComputationalVision/local-probability-models-of-images (folder ``denoisers/``).
This module knows every released file by its path relative to that folder
(``relpath``) and its sha256, maps it to one of our model identities
(:class:`PublishedModel`: setting, role, receptive field, level), fetches or locates
it, and loads it into :class:`msprior.networks.BFCNN`.

Scale index: the release names a conditional network by ``scale_s`` with ``s = 0`` the
finest; ours is ``j = s + 1`` (``j = 1`` the finest detail level, as in
:mod:`msprior.wavelets`). The low-pass network models ``x_J``, ``J`` = the setting's
number of levels.

The weights only make sense for inputs prepared the way the authors prepared theirs;
:data:`CONVENTIONS` records that, and :func:`check_conventions` refuses a configuration
that contradicts it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import torch

from msprior.download import ChecksumError, DownloadError, download, file_digest
from msprior.networks import BFCNN, NetworkSpec, save_model
from msprior.wavelets import same_wavelet

__all__ = [
    "CONVENTIONS",
    "DEFAULT_BASE_URL",
    "PUBLISHED_COMMIT",
    "PUBLISHED_REPOSITORY",
    "PublishedModel",
    "check_conventions",
    "fetch_published",
    "find_published",
    "import_published",
    "load_published",
    "locate_published",
    "published_models",
]

logger = logging.getLogger(__name__)

PUBLISHED_REPOSITORY = "LabForComputationalVision/local-probability-models-of-images"
PUBLISHED_COMMIT = "5e6a25ab679e340ec49a53ba93e57b5e96c2a714"
DEFAULT_BASE_URL = (
    f"https://raw.githubusercontent.com/{PUBLISHED_REPOSITORY}/"
    f"{PUBLISHED_COMMIT}/denoisers"
)

_DEPTH, _WIDTH = 21, 64
_LOWPASS_DEPTH, _LOWPASS_RF = 20, 41  # all 3 x 3: covers the 40 x 40 low-pass

# What the published weights expect of their inputs. Keys that a workflow config also
# sets are compared by check_conventions(); the others document the preparation.
# The networks are positively homogeneous (f(a y) = a f(y)), so the normalisation of
# the coefficients does not matter as long as the noise is scaled with them.
# "reference_lowpass_gain": the release's reference_psnr.json measured the low-pass
# network on PyWavelets' orthonormal low-pass, i.e. gain x our local mean, with noise
# sigma_255 / 255 added to it and PSNR at peak 1 (checked on CelebA test faces: within
# 0.1 dB at sigma 20, 100, 260). Its 320 x 320 entry repeats the 160 x 160 numbers.
# Its conditional entries match (within 0.2 dB) our normalised detail bands with noise
# sigma_255 / 255 added to them directly and PSNR at peak 1 minus 20 log10(2).
_COMMON = {
    "grey": "mean of R, G, B",
    "value_range": (0.0, 1.0),
    "wavelet": "haar",
    "normalisation": "level j coefficients = orthonormal / 2**j",
    "first_layer": "linear",  # no ReLU after the first convolution
    "reference_lowpass_gain": 4,
    "noise": "sigma on the [0, 1] scale; sigma_255 / 255",
    "lowpass_size": 40,
    "depth": _DEPTH,
    "width": _WIDTH,
    "lowpass_depth": _LOWPASS_DEPTH,
}
CONVENTIONS: Mapping[str, Mapping] = MappingProxyType(
    {
        "celebA_160x160_gray": MappingProxyType(
            {
                **_COMMON,
                "source": "CelebA img_align_celeba, 178 x 218 (columns x rows)",
                "crop": (29, 29, 9, 9),  # rows top, bottom; columns left, right
                "size": 160,
                "levels": 2,
                "receptive_fields": (5, 9, 13, 23, 43),
            }
        ),
        "celebA_320x320_gray": MappingProxyType(
            {
                **_COMMON,
                "source": "512 x 512 CelebA-HQ-style faces resized by 0.625",
                "crop": None,
                "size": 320,
                "levels": 3,
                "receptive_fields": (13,),
            }
        ),
    }
)

_CHECKED_KEYS = ("size", "levels", "wavelet", "crop", "depth", "width", "lowpass_depth")

_BY_HAND = (
    "Download the folder denoisers/ of "
    f"https://github.com/{PUBLISHED_REPOSITORY} at commit {PUBLISHED_COMMIT} by hand "
    "and point networks.published_dir at it (the files keep their relative paths)."
)

_NAME = re.compile(
    r"(?P<kind>flat|multi_scale)/(?P<setting>[^/]+)/noise_range_0to255_"
    r"RF_(?P<rf>\d+)x(?P=rf)(?:_scale_(?P<scale>\d+)|(?P<low>_low))?/model\.pt"
)


@dataclass(frozen=True)
class PublishedModel:
    """One released network file and the model identity it has here.

    Attributes
    ----------
    relpath : str
        Path below the release's ``denoisers/`` folder, ending in ``model.pt``.
    setting : str
        ``"celebA_160x160_gray"`` or ``"celebA_320x320_gray"``.
    role : str
        ``"flat"``, ``"conditional"`` or ``"lowpass"``.
    rf : int
        Receptive field of our :class:`NetworkSpec` (41 for the low-pass network,
        which the release calls ``RF_40x40``).
    level : int or None
        ``j`` of the conditional ``p(xbar_j | x_j)`` (1 = finest; the release's
        ``scale_s`` is ``j = s + 1``); ``J`` for the low-pass; None for flat.
    sha256 : str
        Checksum of the released file.
    """

    relpath: str
    setting: str
    role: str
    rf: int
    level: int | None
    sha256: str

    @property
    def spec(self) -> NetworkSpec:
        if self.role == "lowpass":
            return NetworkSpec(
                "lowpass", depth=_LOWPASS_DEPTH, width=_WIDTH, rf=self.rf
            )
        return NetworkSpec(self.role, depth=_DEPTH, width=_WIDTH, rf=self.rf)

    @property
    def folder(self) -> str:
        """The model's folder, the key used by the release's ``reference_psnr.json``."""
        return self.relpath.rsplit("/", 1)[0]


def _parse(relpath: str, sha256: str) -> PublishedModel:
    match = _NAME.fullmatch(relpath)
    if match is None or match["setting"] not in CONVENTIONS:
        raise ValueError(f"not a published model path: {relpath!r}")
    setting, rf = match["setting"], int(match["rf"])
    if match["kind"] == "flat":
        role, level = "flat", None
    elif match["low"]:
        role, rf, level = "lowpass", _LOWPASS_RF, CONVENTIONS[setting]["levels"]
    else:
        role, level = "conditional", int(match["scale"]) + 1
    return PublishedModel(relpath, setting, role, rf, level, sha256)


@cache
def _registry() -> dict[str, PublishedModel]:
    text = resources.files("msprior").joinpath("published_sha256.json").read_text()
    return {path: _parse(path, sha) for path, sha in json.loads(text).items()}


def _order(model: PublishedModel) -> tuple:
    return model.setting, model.role, model.rf, model.level or 0


def published_models(
    *,
    setting: str | None = None,
    role: str | None = None,
    rf: int | None = None,
    level: int | None = None,
) -> list[PublishedModel]:
    """The released networks matching every criterion given.

    Returns
    -------
    list of PublishedModel
        Empty when nothing matches.
    """
    wanted = {"setting": setting, "role": role, "rf": rf, "level": level}
    return [
        model
        for model in sorted(_registry().values(), key=_order)
        if all(v is None or getattr(model, k) == v for k, v in wanted.items())
    ]


def find_published(
    setting: str, role: str, *, rf: int | None = None, level: int | None = None
) -> PublishedModel:
    """The one released network for a model identity.

    Raises
    ------
    ValueError
        When none or several match; the message lists what the release holds.
    """
    if setting not in CONVENTIONS:
        raise ValueError(
            f"unknown published setting {setting!r}; expected one of "
            f"{sorted(CONVENTIONS)}"
        )
    found = published_models(setting=setting, role=role, rf=rf, level=level)
    if len(found) == 1:
        return found[0]
    have = [
        f"{m.role} rf={m.rf} level={m.level}" for m in published_models(setting=setting)
    ]
    what = f"setting={setting!r}, role={role!r}, rf={rf}, level={level}"
    count = len(found) or "no"
    raise ValueError(
        f"{count} published networks match {what}; the release holds: "
        + ", ".join(have)
    )


def _models(files: Iterable[str | PublishedModel]) -> list[PublishedModel]:
    registry = _registry()
    out = []
    for item in files:
        relpath = item.relpath if isinstance(item, PublishedModel) else str(item)
        if relpath not in registry:
            raise ValueError(
                f"{relpath!r} is not a published model file; known files: "
                f"{sorted(registry)}"
            )
        out.append(registry[relpath])
    return out


def fetch_published(
    dest_dir: str | os.PathLike,
    files: Iterable[str | PublishedModel],
    *,
    base_url: str = DEFAULT_BASE_URL,
    timeout: float = 60,
) -> dict[str, Path]:
    """Download released networks into ``dest_dir``, keeping their relative paths.

    Files already present with the right sha256 are not downloaded again.

    Parameters
    ----------
    dest_dir : path-like
        Local copy of the release's ``denoisers/`` folder.
    files : iterable of str or PublishedModel
        Relative paths (``flat/.../model.pt``) or registry entries.
    base_url : str
        URL of the ``denoisers/`` folder; the default is the pinned GitHub commit.
    timeout : float
        Seconds, per blocking network operation.

    Returns
    -------
    dict
        ``relpath -> local path`` of each verified file.

    Raises
    ------
    ValueError
        A requested file is not in the release.
    msprior.download.ChecksumError, msprior.download.DownloadError
        As :func:`msprior.download.download`.
    """
    dest_dir = Path(dest_dir)
    out = {}
    for model in _models(files):
        try:
            out[model.relpath] = download(
                f"{base_url.rstrip('/')}/{model.relpath}",
                dest_dir / model.relpath,
                sha256=model.sha256,
                html_hint="GitHub did not serve the file",
                timeout=timeout,
            )
        except DownloadError as err:  # a 404, an HTML page, no network: say what to do
            raise DownloadError(
                f"{err}; {dest_dir} holds no copy of {model.relpath}. {_BY_HAND}"
            ) from err
    return out


def locate_published(
    folder: str | os.PathLike, files: Iterable[str | PublishedModel]
) -> dict[str, Path]:
    """Find released networks in a local folder laid out like the release; verify them.

    ``folder`` is the ``denoisers/`` folder itself or a checkout of the repository
    that contains it.

    Returns
    -------
    dict
        ``relpath -> path`` of each file.

    Raises
    ------
    FileNotFoundError
        Some files are missing; all of them are named.
    msprior.download.ChecksumError
        A file's sha256 differs from the released one.
    """
    folder = Path(folder)
    if not (folder / "flat").is_dir() and (folder / "denoisers").is_dir():
        folder = folder / "denoisers"
    models = _models(files)
    missing = [m.relpath for m in models if not (folder / m.relpath).is_file()]
    if missing:
        raise FileNotFoundError(
            f"published network file(s) missing under {folder}: {missing}"
        )
    out = {}
    for model in models:
        path = folder / model.relpath
        actual = file_digest(path, "sha256")
        if actual != model.sha256:
            raise ChecksumError(
                f"{path} has sha256 {actual}, expected {model.sha256} (the released "
                f"file {model.relpath} at commit {PUBLISHED_COMMIT})"
            )
        out[model.relpath] = path
    return out


def _describe(state: Mapping[str, torch.Tensor]) -> str:
    """What a state dict's shapes say about its network, for error messages."""
    convs = sorted(
        (int(k.split(".")[1]), v.shape)
        for k, v in state.items()
        if re.fullmatch(r"conv_layers\.\d+\.weight", k) and v.dim() == 4
    )
    if not convs:
        return "no conv_layers.{i}.weight tensors"
    rf = 1 + sum(shape[-1] - 1 for _, shape in convs)
    return (
        f"{convs[0][1][1]} -> {convs[-1][1][0]} channels, {len(convs)} convolutions, "
        f"width {convs[0][1][0]}, receptive field {rf}"
    )


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in blob.values()
    ):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in blob.items()}


def _check_state(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], where: str
) -> None:
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k} has shape {tuple(state[k].shape)}, the spec needs "
        f"{tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if problems:
        shown = "; ".join(problems[:4])
        more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
        raise ValueError(
            f"{where}: {shown}{more}. The file holds {_describe(state)}; check the "
            "role, rf and depth of the spec"
        )


def load_published(path: str | os.PathLike, spec: NetworkSpec) -> BFCNN:
    """Load a released network file into a :class:`BFCNN` of ``spec``, in eval mode.

    Parameters
    ----------
    path : path-like
        A released ``model.pt`` (a state dict saved from a data-parallel wrapper).
    spec : NetworkSpec
        The architecture; every key and shape of the file must match it.

    Returns
    -------
    BFCNN
        On the CPU, in evaluation mode.

    Raises
    ------
    ValueError
        The file does not fit ``spec``; the message names the keys and what the file
        holds.
    """
    path = Path(path)
    state = _read_state(path)
    network = BFCNN(spec)
    _check_state(state, network.state_dict(), f"{path} does not fit {spec}")
    network.load_state_dict(state)
    return network.eval()


def import_published(
    src_path: str | os.PathLike,
    spec: NetworkSpec,
    out_path: str | os.PathLike,
    *,
    relpath: str | None = None,
) -> Path:
    """Convert a released network file into our model format (:func:`save_model`).

    Parameters
    ----------
    src_path : path-like
        The released ``model.pt``.
    spec : NetworkSpec
        Must be the registry's spec for that file.
    out_path : path-like
        Where to write the model file (atomically).
    relpath : str, optional
        The file's path in the release. By default it is found from the file's sha256
        (and, for a file released twice, from the end of ``src_path``).

    Returns
    -------
    Path
        ``out_path``. The file's ``extra`` records ``source="published"``,
        ``relpath``, ``sha256`` and the release commit.

    Raises
    ------
    ValueError
        The file is not a released one, or ``spec`` is not its registry spec.
    """
    src_path = Path(src_path)
    sha256 = file_digest(src_path, "sha256")
    model = _identify(src_path, sha256, relpath)
    if spec != model.spec:
        raise ValueError(
            f"{model.relpath} is a {model.spec}, not a {spec} "
            f"(role {model.role}, rf {model.rf}, level {model.level})"
        )
    network = load_published(src_path, spec)
    extra = {
        "source": "published",
        "relpath": model.relpath,
        "sha256": sha256,
        "setting": model.setting,
        "level": model.level,
        "wavelet": CONVENTIONS[model.setting]["wavelet"],
        "commit": PUBLISHED_COMMIT,
    }
    save_model(out_path, network, step=0, extra=extra)
    logger.info("imported %s -> %s", model.relpath, out_path)
    return Path(out_path)


def _identify(path: Path, sha256: str, relpath: str | None) -> PublishedModel:
    if relpath is not None:
        (model,) = _models([relpath])
        if model.sha256 != sha256:
            raise ChecksumError(
                f"{path} has sha256 {sha256}, expected {model.sha256} for {relpath}"
            )
        return model
    candidates = [m for m in _registry().values() if m.sha256 == sha256]
    if not candidates:
        raise ValueError(
            f"{path} (sha256 {sha256}) is not one of the published network files"
        )
    posix = path.as_posix()
    by_path = [m for m in candidates if posix.endswith(m.relpath)]
    return sorted(by_path or candidates, key=lambda m: m.relpath)[0]


def check_conventions(
    setting: str,
    *,
    size: int,
    levels: int,
    wavelet: str,
    crop: tuple[int, int, int, int] | None,
    depth: int,
    width: int,
    lowpass_depth: int,
) -> None:
    """Refuse a configuration that contradicts what the published weights expect.

    Parameters
    ----------
    setting : str
        A key of :data:`CONVENTIONS`.
    size, levels, wavelet, crop, depth, width, lowpass_depth
        The configuration's values (``data.size``, ``wavelet.levels``,
        ``wavelet.name``, ``data.crop`` as rows top, bottom, columns left, right,
        and the networks' depth, width and low-pass depth).

    Raises
    ------
    ValueError
        Naming every key that differs, with the value the weights expect.
    """
    if setting not in CONVENTIONS:
        raise ValueError(
            f"unknown published setting {setting!r}; expected one of "
            f"{sorted(CONVENTIONS)}"
        )
    expected = CONVENTIONS[setting]
    given = {
        "size": size,
        "levels": levels,
        "wavelet": str(wavelet),
        "crop": None if crop is None else tuple(crop),
        "depth": depth,
        "width": width,
        "lowpass_depth": lowpass_depth,
    }

    def agrees(key: str) -> bool:
        if key != "wavelet":
            return given[key] == expected[key]
        try:  # another name for the same filters (db1 for haar) is the same wavelet
            return same_wavelet(given[key], expected[key])
        except ValueError:  # unknown or not orthogonal: it cannot be the one expected
            return False

    bad = [
        f"{key}={given[key]!r} (the weights expect {expected[key]!r})"
        for key in _CHECKED_KEYS
        if not agrees(key)
    ]
    if bad:
        raise ValueError(
            f"configuration contradicts the published {setting} networks: "
            + "; ".join(bad)
        )
