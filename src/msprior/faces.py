"""Faces from every source into one preprocessed HDF5 file.

Sources (``DataConfig.source``):

* ``embedded``: the 100 faces of :func:`skimage.data.lfw_subset` (indices 0-99; the
  other 100 images of that set are not faces). No network.
* ``celeba``: CelebA's ``img_align_celeba.zip`` (read in place, never extracted) or its
  extracted ``img_align_celeba/`` folder, with the official split file
  ``list_eval_partition.txt`` or Kaggle's ``list_eval_partition.csv``. With
  ``download: true`` the official files are fetched, md5-checked, when absent.
* ``folder``: any folder of JPEG/PNG images, searched recursively.

Every image goes through the same steps: grey = mean of R, G, B, in [0, 1]; crop
``DataConfig.crop = [top, bottom, left, right]`` (rows / columns dropped); a centred
square crop if the result is not square; resize to ``size x size`` (Pillow, Lanczos,
antialiased when shrinking) if it is not that size already, clipped to [0, 1].

Splits: CelebA keeps its official split, in the split file's order. ``embedded`` and
``folder`` are split by a seeded permutation, in ``split_fractions``; the images of a
split stay in permutation order, so ``max_images`` keeps a random subset.

Layout of the output (``faces.h5``)::

    train, valid, test              (N, S, S) float32 in [0, 1], chunked along N, lzf
    train_names, valid_names, ...   (N,) str, the source file names
    attrs: source, crop (JSON), size, n_train, n_valid, n_test, seed, grey,
           resize, content_sha256 (of the names and pixels, split by split),
           checksums (JSON: file name -> md5), inputs (JSON), bad_images (JSON),
           created_by (JSON provenance)

An undecodable image, or one whose header claims more than ``max_pixels`` pixels, is
skipped and listed; more than ``max_bad_fraction`` of them stops the run. The file is
written under a temporary name and renamed only when complete. Memory does not grow with
the number of images: they are decoded by a small thread pool (Pillow releases the GIL)
and written block by block.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import h5py
import numpy as np
from PIL import Image

from msprior.config import DataConfig
from msprior.io import atomic_path, open_h5_read, provenance

__all__ = ["CELEBA_FILES", "SPLITS", "load_split", "prepare_faces", "read_partition"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
EMBEDDED_FACES = 100  # lfw_subset(): images 0-99 are faces, 100-199 are not
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
BLOCK = 256  # images decoded and written per step
_CHUNK_BYTES = 1 << 20  # target HDF5 chunk size
_DRIVE = "https://drive.google.com/uc?export=download&confirm=t&id={}"
CELEBA_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"


@dataclasses.dataclass(frozen=True)
class _Official:
    name: str
    md5: str
    url: str


CELEBA_FILES = {
    "zip": _Official(
        "img_align_celeba.zip",
        "00d2c5bc6d35e252742224ab0c1e8fcb",
        _DRIVE.format("0B7EVK8r0v71pZjFTYXZWM3FlRnM"),
    ),
    "partition": _Official(
        "list_eval_partition.txt",
        "d32c9cbf5e040fd4025c592c306e6668",
        _DRIVE.format("0B7EVK8r0v71pY0NSMzRuSXJEVkk"),
    ),
}


class _BadImage(Exception):
    """One input image cannot be used; the message says why."""


# --------------------------------------------------------------------------- pixels


def _decode_grey(data: bytes, max_pixels: int) -> np.ndarray:
    """JPEG/PNG bytes -> grey float32 (H, W) in [0, 1], the mean of R, G, B.

    The pixel count in the header is checked before any pixel is decoded.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise _BadImage(
                    f"decompression bomb guard: the header claims {width} x {height} "
                    f"= {width * height:,} pixels, more than data.max_pixels = "
                    f"{max_pixels:,}"
                )
            im.load()
            if im.mode.startswith("I;16"):
                grey = np.asarray(im, dtype=np.float32) / np.float32(65535)
                return grey
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB")
            pixels = np.asarray(im)  # (H, W) or (H, W, 3), uint8
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise _BadImage(f"decompression bomb guard (Pillow): {err}") from None
    except _BadImage:
        raise
    except Image.UnidentifiedImageError:  # its message holds a BytesIO's repr
        raise _BadImage("cannot decode: not an image format Pillow knows") from None
    except Exception as err:  # Pillow raises many types on broken files
        raise _BadImage(f"cannot decode: {type(err).__name__}: {err}") from None
    if pixels.ndim == 2:
        return pixels.astype(np.float32) / np.float32(255)
    total = pixels.sum(axis=-1, dtype=np.uint16)  # (H, W), R + G + B
    return total.astype(np.float32) / np.float32(3 * 255)


def _shape_image(
    grey: np.ndarray,
    crop: tuple[int, int, int, int] | None,
    size: int,
    warn_upscale: bool = True,
) -> np.ndarray:
    """Crop, centre a square, resize to (size, size); float32 in [0, 1].

    Upscaling blurs; it is warned about (once a run) unless asked for, as the
    embedded 25 x 25 faces are."""
    height, width = grey.shape
    if crop is not None:
        top, bottom, left, right = crop
        if top + bottom >= height or left + right >= width:
            raise _BadImage(
                f"data.crop {list(crop)} leaves nothing of a {width} x {height} image"
            )
        grey = grey[top : height - bottom, left : width - right]
        height, width = grey.shape
    side = min(height, width)
    if height != width:
        row, col = (height - side) // 2, (width - side) // 2
        grey = grey[row : row + side, col : col + side]
    if side < size and warn_upscale:  # once a run (the warning registry), logged
        warnings.warn(
            "some images are smaller than data.size and are upscaled, hence blurred",
            stacklevel=2,
        )
    if side != size:
        image = Image.fromarray(np.ascontiguousarray(grey, dtype=np.float32), mode="F")
        image = image.resize((size, size), Image.Resampling.LANCZOS)
        grey = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    return np.ascontiguousarray(grey, dtype=np.float32)


# --------------------------------------------------------------------------- sources


@dataclasses.dataclass
class _Plan:
    """What to read: names per split, how to fetch one, how to turn it into a face."""

    splits: dict[str, list[str]]
    load: Callable[[str], object]  # main thread: name -> raw bytes or array
    prepare: Callable[[object], np.ndarray]  # worker: raw -> (S, S) float32
    attrs: dict
    close: Callable[[], None] = lambda: None


def _random_split(
    names: list[str], fractions: tuple[float, float, float], seed: int
) -> dict[str, list[str]]:
    """Seeded permutation of ``names`` cut into train, valid, test by ``fractions``."""
    order = np.random.default_rng(seed).permutation(len(names))
    n_train = int(round(fractions[0] * len(names)))
    n_valid = min(int(round(fractions[1] * len(names))), len(names) - n_train)
    cuts = [0, n_train, n_train + n_valid, len(names)]
    return {
        split: [names[i] for i in order[cuts[k] : cuts[k + 1]]]
        for k, split in enumerate(SPLITS)
    }


def _embedded_plan(cfg: DataConfig, seed: int) -> _Plan:
    from skimage.data import lfw_subset

    faces = lfw_subset()[:EMBEDDED_FACES].astype(np.float32)  # (100, 25, 25)
    names = [f"lfw_subset_{i:03d}" for i in range(len(faces))]
    index = {name: i for i, name in enumerate(names)}
    return _Plan(
        splits=_random_split(names, cfg.split_fractions, seed),
        load=lambda name: faces[index[name]],
        prepare=lambda grey: _shape_image(grey, cfg.crop, cfg.size, warn_upscale=False),
        attrs={"inputs": {"skimage.data.lfw_subset": f"images 0-{EMBEDDED_FACES - 1}"}},
    )


def _list_folder(root: Path) -> list[str]:
    """Image files under ``root`` (recursive), as sorted relative POSIX paths."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            if name.lower().endswith(IMAGE_SUFFIXES):
                found.append((Path(folder) / name).relative_to(root).as_posix())
    return sorted(found)


def _bytes_prepare(cfg: DataConfig) -> Callable[[bytes], np.ndarray]:
    def prepare(data: bytes) -> np.ndarray:
        return _shape_image(_decode_grey(data, cfg.max_pixels), cfg.crop, cfg.size)

    return prepare


def _folder_plan(cfg: DataConfig, seed: int) -> _Plan:
    if cfg.folder is None:
        raise ValueError("data.source is 'folder' but data.folder is not set")
    root = Path(cfg.folder)
    if not root.is_dir():
        raise FileNotFoundError(f"data.folder {root} is not a folder")
    names = _list_folder(root)
    if not names:
        raise ValueError(
            f"data.folder {root} holds no image ({', '.join(IMAGE_SUFFIXES)})"
        )
    return _Plan(
        splits=_random_split(names, cfg.split_fractions, seed),
        load=lambda name: (root / name).read_bytes(),
        prepare=_bytes_prepare(cfg),
        attrs={"inputs": {"folder": str(root.resolve())}},
    )


def _check_member_name(name: str, archive: Path) -> None:
    """Refuse a zip entry whose path would leave the folder it is extracted into."""
    posix = name.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    if posix.startswith("/") or re.match(r"[A-Za-z]:", posix) or ".." in parts:
        raise ValueError(
            f"{archive}: refusing zip entry {name!r}: its path is absolute or "
            "contains '..', so it would leave the folder it belongs in (zip slip)"
        )


class _ZipImages:
    """Images of a zip archive, looked up by file name, read in place."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as err:
            raise ValueError(
                f"data.celeba_zip {path} is not a zip file: {err}"
            ) from None
        self.members: dict[str, zipfile.ZipInfo] = {}
        try:
            for info in self.archive.infolist():
                _check_member_name(info.filename, path)
                if info.is_dir() or not info.filename.lower().endswith(IMAGE_SUFFIXES):
                    continue
                name = PurePosixPath(info.filename).name
                if name in self.members:
                    raise ValueError(
                        f"{path}: two entries are named {name!r} "
                        f"({self.members[name].filename}, {info.filename})"
                    )
                self.members[name] = info
        except BaseException:
            self.archive.close()
            raise

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def read(self, name: str) -> bytes:
        return self.archive.read(self.members[name])

    def close(self) -> None:
        self.archive.close()


class _FolderImages:
    """The extracted ``img_align_celeba/`` folder, looked up by file name."""

    def __init__(self, path: Path):
        if (path / "img_align_celeba").is_dir():
            path = path / "img_align_celeba"
        self.path = path
        with os.scandir(path) as entries:
            self.names = {e.name for e in entries if e.is_file()}

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def close(self) -> None:
        pass


def read_partition(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read CelebA's split file, official ``.txt`` or Kaggle's ``.csv``.

    Parameters
    ----------
    path : path-like
        ``list_eval_partition.txt`` (lines ``NNNNNN.jpg S``) or
        ``list_eval_partition.csv`` (header ``image_id,partition``); S = 0 train,
        1 valid, 2 test.

    Returns
    -------
    dict
        ``{"train": [...], "valid": [...], "test": [...]}``, file names in file order.
    """
    path = Path(path)
    splits: dict[str, list[str]] = {split: [] for split in SPLITS}
    first_line: dict[str, int] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not a text split file (list_eval_partition.txt or .csv): {err}"
        ) from None
    is_csv = "," in text.split("\n", 1)[0]
    rows = (
        csv.reader(io.StringIO(text))
        if is_csv
        else (ln.split() for ln in text.splitlines())
    )
    for lineno, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip():
            continue
        if is_csv and lineno == 1 and row[-1].strip().lower() == "partition":
            continue  # Kaggle's header
        if len(row) != 2 or row[1].strip() not in ("0", "1", "2"):
            raise ValueError(
                f"{path}:{lineno}: expected 'NNNNNN.jpg S' with S in 0, 1, 2, "
                f"got {','.join(row) if is_csv else ' '.join(row)!r}"
            )
        name = row[0].strip()
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise ValueError(f"{path}:{lineno}: {name!r} is not a plain file name")
        if name in first_line:  # in two splits, a test image would be trained on
            raise ValueError(
                f"{path}:{lineno}: {name} is listed again (first at line "
                f"{first_line[name]}); each image belongs to one split"
            )
        first_line[name] = lineno
        splits[SPLITS[int(row[1])]].append(name)
    if not any(splits.values()):
        raise ValueError(f"{path}: the split file lists no image")
    return splits


def _by_hand(reason: str, cfg: DataConfig) -> str:
    """How to provide the CelebA files without the downloader."""
    zip_, part = CELEBA_FILES["zip"], CELEBA_FILES["partition"]
    return (
        f"{reason}. Provide CelebA by hand: get {zip_.name} (1,443,490,838 bytes, "
        f"md5 {zip_.md5}) and {part.name} (md5 {part.md5}) from the official page "
        f"{CELEBA_PAGE} (Google Drive: Img/{zip_.name}, Eval/{part.name}), or from "
        "Kaggle's 'jessicali9530/celeba-dataset' (the img_align_celeba folder and "
        "list_eval_partition.csv). Then set data.celeba_zip to the zip or to its "
        "extracted img_align_celeba/ folder, data.celeba_partition to the split file "
        f"(.txt or .csv) and data.download to false; or put both files into "
        f"data.download_dir ({cfg.download_dir})."
    )


def _fetch_official(key: str, cfg: DataConfig) -> tuple[Path, str]:
    """Download one official CelebA file into ``download_dir``; return path, md5."""
    from msprior.download import download

    official = CELEBA_FILES[key]
    dest = Path(cfg.download_dir) / official.name
    hint = _by_hand(f"The host refused {official.name} (often a quota page)", cfg)
    download(official.url, dest, md5=official.md5, html_hint=hint)
    return dest, official.md5


def _locate_celeba(cfg: DataConfig) -> tuple[Path, Path, dict[str, str]]:
    """Where the images and the split file are; md5s known from a download."""
    located: dict[str, Path] = {}
    known_md5: dict[str, str] = {}
    for key, given in (("zip", cfg.celeba_zip), ("partition", cfg.celeba_partition)):
        official = CELEBA_FILES[key]
        config_key = "data.celeba_zip" if key == "zip" else "data.celeba_partition"
        fallback = Path(cfg.download_dir) / official.name
        if given is not None and Path(given).exists():
            located[key] = Path(given)
        elif cfg.download:
            located[key], known_md5[official.name] = _fetch_official(key, cfg)
        elif given is None and fallback.exists():
            located[key] = fallback
        else:
            what = (
                f"{config_key} {given} does not exist"
                if given
                else (f"{config_key} is not set")
            )
            raise FileNotFoundError(_by_hand(f"{what} and data.download is false", cfg))
    return located["zip"], located["partition"], known_md5


def _celeba_plan(cfg: DataConfig) -> _Plan:
    from msprior.download import file_digest

    images_path, partition_path, md5s = _locate_celeba(cfg)
    listed = read_partition(partition_path)
    md5s.setdefault(partition_path.name, file_digest(partition_path, "md5"))
    if images_path.is_dir():
        images: _ZipImages | _FolderImages = _FolderImages(images_path)
    else:
        md5s.setdefault(images_path.name, file_digest(images_path, "md5"))
        images = _ZipImages(images_path)
    splits = {}
    for split, names in listed.items():
        splits[split] = [name for name in names if name in images]
        missing = len(names) - len(splits[split])
        if missing:
            logger.info("%s: %d images listed but absent, skipped", split, missing)
    if not any(splits.values()):
        images.close()
        raise ValueError(
            f"none of the images listed in {partition_path} is in {images_path}"
        )
    return _Plan(
        splits=splits,
        load=images.read,
        prepare=_bytes_prepare(cfg),
        attrs={
            "inputs": {
                "images": str(images_path.resolve()),
                "partition": str(partition_path.resolve()),
            },
            "checksums": md5s,
        },
        close=images.close,
    )


def _make_plan(cfg: DataConfig, seed: int) -> _Plan:
    if cfg.crop is not None and (
        len(cfg.crop) != 4 or any(int(c) != c or c < 0 for c in cfg.crop)
    ):
        raise ValueError(
            f"data.crop must be four non-negative integers [top, bottom, left, right],"
            f" got {cfg.crop!r}"
        )
    if cfg.source == "embedded":
        plan = _embedded_plan(cfg, seed)
    elif cfg.source == "folder":
        plan = _folder_plan(cfg, seed)
    else:
        plan = _celeba_plan(cfg)
    for split, cap in cfg.max_images.items():
        if cap is None:
            continue
        if int(cap) != cap or cap < 0:
            plan.close()
            raise ValueError(
                f"data.max_images.{split} must be a non-negative integer, got {cap!r}"
            )
        plan.splits[split] = plan.splits[split][: int(cap)]
    return plan


# --------------------------------------------------------------------------- writing


class _BadLedger:
    """Bad images so far; stops the run once they pass ``max_fraction`` of ``total``."""

    def __init__(self, total: int, max_fraction: float):
        self.total, self.max_fraction = total, max_fraction
        self.items: list[dict[str, str]] = []

    def add(self, split: str, name: str, reason: str) -> None:
        logger.warning("skipping %s image %s: %s", split, name, reason)
        self.items.append({"split": split, "name": name, "reason": reason})
        if len(self.items) > self.max_fraction * self.total:
            shown = "; ".join(f"{b['name']}: {b['reason']}" for b in self.items[:5])
            raise ValueError(
                f"{len(self.items)} of {self.total} images could not be used, more "
                f"than data.max_bad_fraction = {self.max_fraction:g}; no output "
                f"written. First ones: {shown}"
            )


def _chunk_rows(row_bytes: int) -> int:
    return max(1, _CHUNK_BYTES // row_bytes)


def _create_split(f: h5py.File, split: str, size: int) -> tuple[h5py.Dataset, ...]:
    images = f.create_dataset(
        split,
        shape=(0, size, size),
        maxshape=(None, size, size),
        dtype=np.float32,
        chunks=(_chunk_rows(4 * size * size), size, size),
        compression="lzf",
    )
    names = f.create_dataset(
        f"{split}_names",
        shape=(0,),
        maxshape=(None,),
        dtype=h5py.string_dtype(),
        chunks=(1024,),
    )
    return images, names


def _append(dataset: h5py.Dataset, rows) -> None:
    start = dataset.shape[0]
    dataset.resize(start + len(rows), axis=0)
    dataset[start:] = rows


def _submit_block(
    names: list[str], plan: _Plan, pool: cf.Executor
) -> list[tuple[str, cf.Future]]:
    """Read a block in this thread, decode it in the pool."""
    jobs = []
    for name in names:
        try:
            raw = plan.load(name)
        except (OSError, zipfile.BadZipFile, EOFError) as err:
            future: cf.Future = cf.Future()
            future.set_exception(_BadImage(f"cannot read: {err}"))
        else:
            future = pool.submit(plan.prepare, raw)
        jobs.append((name, future))
    return jobs


def _blocks(names: list[str], plan: _Plan, pool: cf.Executor) -> Iterator[list]:
    """Submitted blocks, one ahead of the one handed out (decode while writing)."""
    pending = None
    for start in range(0, len(names), BLOCK):
        submitted = _submit_block(names[start : start + BLOCK], plan, pool)
        if pending is not None:
            yield pending
        pending = submitted
    if pending is not None:
        yield pending


def _write_split(
    f: h5py.File,
    split: str,
    plan: _Plan,
    pool: cf.Executor,
    size: int,
    bad: _BadLedger,
    digest,
) -> int:
    """Write one split block by block; ``digest`` (hashlib) sees names and pixels."""
    images, names_ds = _create_split(f, split, size)
    names = plan.splits[split]
    digest.update(split.encode())
    for jobs in _blocks(names, plan, pool):
        good, good_names = [], []
        for name, future in jobs:
            try:
                good.append(future.result())
            except _BadImage as err:
                bad.add(split, name, str(err))
            else:
                good_names.append(name)
        if good:
            block = np.stack(good)  # (B, S, S) float32
            _append(images, block)
            _append(names_ds, good_names)
            digest.update("\n".join(good_names).encode())
            digest.update(block.tobytes())
        logger.debug("%s: %d / %d images", split, images.shape[0], len(names))
    logger.info("%s: %d images written", split, images.shape[0])
    return images.shape[0]


def _check_required(sizes: dict, require, cfg: DataConfig, what: str) -> None:
    empty = [split for split in require if not sizes[split]]
    if empty:
        caps = f", data.max_images {cfg.max_images}" if cfg.max_images else ""
        how = (
            "the split file lists none there"
            if cfg.source == "celeba"
            else f"data.split_fractions {list(cfg.split_fractions)}"
        )
        raise ValueError(
            f"the {' and '.join(empty)} split {what} ({how}{caps}); training needs "
            "train and valid images, evaluation test images; no output written"
        )


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def prepare_faces(
    cfg: DataConfig,
    out_path: str | os.PathLike,
    *,
    seed: int,
    workers: int | None = None,
    require: tuple[str, ...] = (),
) -> dict:
    """Read faces from ``cfg.source`` and write the preprocessed ``faces.h5``.

    Parameters
    ----------
    cfg : DataConfig
        Source, crop, size, caps and bad-input limits (see the module docstring).
    out_path : path-like
        The HDF5 file to write; it appears only once complete.
    seed : int
        Seeds the train/valid/test split of the ``embedded`` and ``folder`` sources.
    workers : int, optional
        Decoding threads; default: the CPUs this process may use, at most 4.
    require : tuple of str
        Splits that must not come out empty (training needs train and valid,
        evaluation test); an empty one stops the run, before anything is decoded if
        nothing is listed for it.

    Returns
    -------
    dict
        ``{"counts": {split: n}, "bad": [{"split", "name", "reason"}, ...],
        "path": str}``.

    Raises
    ------
    ValueError
        A bad config, a zip entry that escapes its folder, a split file that does
        not parse, or more than ``cfg.max_bad_fraction`` unusable images.
    FileNotFoundError
        CelebA files absent and ``cfg.download`` false; the message says how to
        provide them.
    msprior.download.DownloadError, msprior.download.ChecksumError
        A refused download (HTML page) or a wrong md5 (expected and actual named).
    """
    out_path = Path(out_path)
    if workers is None:
        available = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
        workers = min(4, available)
    plan = _make_plan(cfg, seed)
    try:
        _check_required(plan.splits, require, cfg, "would be empty")
        total = sum(len(names) for names in plan.splits.values())
        logger.info(
            "faces from %s: %s",
            cfg.source,
            ", ".join(f"{s} {len(plan.splits[s])}" for s in SPLITS),
        )
        bad = _BadLedger(total, cfg.max_bad_fraction)
        counts = {}
        with (
            atomic_path(out_path) as tmp,
            h5py.File(tmp, "w") as f,
            cf.ThreadPoolExecutor(workers, thread_name_prefix="faces") as pool,
        ):
            try:
                digest = hashlib.sha256()
                for split in SPLITS:
                    counts[split] = _write_split(
                        f, split, plan, pool, cfg.size, bad, digest
                    )
                _check_required(counts, require, cfg, "has no usable image")
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
            f.attrs.update(
                {
                    "source": cfg.source,
                    "crop": _json(cfg.crop),
                    "size": cfg.size,
                    "seed": seed,
                    **{f"n_{split}": n for split, n in counts.items()},
                    "grey": "mean of R, G, B, divided by 255, float32 in [0, 1]",
                    "resize": "Pillow LANCZOS (antialiased), clipped to [0, 1]",
                    "content_sha256": digest.hexdigest(),  # names and pixels
                    "checksums": _json(plan.attrs.get("checksums", {})),
                    "inputs": _json(plan.attrs.get("inputs", {})),
                    "bad_images": _json(bad.items),
                    "created_by": _json(
                        provenance(config=dataclasses.asdict(cfg), seed=seed)
                    ),
                }
            )
    finally:
        plan.close()
    if bad.items:
        logger.warning("skipped %d bad image(s) of %d", len(bad.items), total)
    return {"counts": counts, "bad": bad.items, "path": str(out_path)}


def load_split(
    path: str | os.PathLike, split: str, max_images: int | None = None
) -> np.ndarray:
    """Read one split of a ``faces.h5``.

    Parameters
    ----------
    path : path-like
        A file written by :func:`prepare_faces`.
    split : str
        ``train``, ``valid`` or ``test``.
    max_images : int, optional
        Read only the first ``max_images`` images.

    Returns
    -------
    np.ndarray, shape (N, S, S), float32 in [0, 1]
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    with open_h5_read(path) as f:
        if split not in f:
            raise ValueError(f"{path} has no split {split!r}")
        return np.asarray(f[split][slice(None, max_images)], dtype=np.float32)
