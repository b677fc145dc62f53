"""prepare_faces(): every source on small real input, and every bad input."""

from __future__ import annotations

import http.server
import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from loopback import serving
from PIL import Image

from msprior import faces
from msprior.config import DataConfig
from msprior.download import ChecksumError, DownloadError
from msprior.faces import load_split, prepare_faces, read_partition

SUBSET = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba-subset"
CELEBA_CROP = (29, 29, 9, 9)

# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def celeba_subset() -> Path:
    if not (SUBSET / "img_align_celeba.zip").is_file():
        pytest.skip(f"shared data absent: {SUBSET} (the CelebA subset)")
    return SUBSET


def _celeba_pick(subset: Path, per_split: int = 3) -> dict[str, list[str]]:
    """The first ``per_split`` names of each official split of the subset."""
    listed = read_partition(subset / "list_eval_partition.txt")
    return {split: names[:per_split] for split, names in listed.items()}


def _jpeg(rng: np.random.Generator, height: int, width: int) -> bytes:
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` but whose data is 10 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 10))
        + chunk(b"IEND", b"")
    )


def _face_folder(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` small PNG/JPEG images of varied, non-square sizes, in two sub-folders."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        height, width = 20 + i % 7, 16 + i % 5
        if i % 3:
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            (sub / f"img{i:04d}.png").write_bytes(_png(pixels))
        else:
            (sub / f"img{i:04d}.JPG").write_bytes(_jpeg(rng, height, width))
    return root


def _folder_cfg(folder: Path, **kw) -> DataConfig:
    return DataConfig(**{"source": "folder", "folder": str(folder), "size": 8} | kw)


def _no_h5_left(folder: Path) -> bool:
    return not list(folder.glob("*.h5")) and not list(folder.glob(".*.h5"))


# --------------------------------------------------------------------------- embedded


def test_embedded_layout_and_attrs(tmp_path):
    out = tmp_path / "faces.h5"
    summary = prepare_faces(DataConfig(), out, seed=0)
    assert summary["counts"] == {"train": 80, "valid": 10, "test": 10}
    assert summary["bad"] == []
    with h5py.File(out, "r") as f:
        for split, n in summary["counts"].items():
            assert f[split].shape == (n, 32, 32)
            assert f[split].dtype == np.float32
            assert f[split].compression == "lzf"
            assert f[split].chunks[1:] == (32, 32)
            assert len(f[f"{split}_names"]) == n
            assert f.attrs[f"n_{split}"] == n
        assert f.attrs["source"] == "embedded"
        assert f.attrs["size"] == 32
        assert json.loads(f.attrs["created_by"])["seed"] == 0
        names = [n.decode() for split in faces.SPLITS for n in f[f"{split}_names"]]
    assert sorted(names) == [f"lfw_subset_{i:03d}" for i in range(100)]
    train = load_split(out, "train")
    assert train.min() >= 0 and train.max() <= 1
    assert load_split(out, "train", max_images=5).shape == (5, 32, 32)


def test_embedded_values_are_the_lfw_faces(tmp_path):
    from skimage.data import lfw_subset

    out = tmp_path / "faces.h5"
    prepare_faces(DataConfig(size=25), out, seed=3)
    with h5py.File(out, "r") as f:
        index = [int(n.decode()[-3:]) for n in f["test_names"]]
        stored = f["test"][:]
    expected = lfw_subset()[index].astype(np.float32)
    np.testing.assert_array_equal(stored, expected)
    assert max(index) < 100  # only the faces, never images 100-199


def test_embedded_split_depends_on_seed_only(tmp_path):
    def names(seed, name):
        prepare_faces(DataConfig(), tmp_path / name, seed=seed)
        with h5py.File(tmp_path / name, "r") as f:
            return list(f["valid_names"])

    assert names(1, "a.h5") == names(1, "b.h5")
    assert names(1, "a.h5") != names(2, "c.h5")

    def digest(name):
        with h5py.File(tmp_path / name, "r") as f:
            return f.attrs["content_sha256"]

    assert digest("a.h5") == digest("b.h5") != digest("c.h5")


def test_max_images_caps_each_split(tmp_path):
    cfg = DataConfig(max_images={"train": 7, "test": 2})
    summary = prepare_faces(cfg, tmp_path / "f.h5", seed=0)
    assert summary["counts"] == {"train": 7, "valid": 10, "test": 2}


def test_negative_max_images_is_refused(tmp_path):
    with pytest.raises(ValueError, match="data.max_images.valid"):
        prepare_faces(DataConfig(max_images={"valid": -1}), tmp_path / "f.h5", seed=0)
    assert _no_h5_left(tmp_path)


def test_load_split_rejects_unknown_split(tmp_path):
    prepare_faces(DataConfig(), tmp_path / "f.h5", seed=0)
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        load_split(tmp_path / "f.h5", "validation")


# --------------------------------------------------------------------------- celeba


def _celeba_zip(subset: Path, dest: Path, names: list[str]) -> Path:
    """A zip in the official layout holding ``names`` from the subset."""
    with (
        zipfile.ZipFile(subset / "img_align_celeba.zip") as src,
        zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as out,
    ):
        out.writestr("img_align_celeba/", b"")
        for name in names:
            out.writestr(
                f"img_align_celeba/{name}", src.read(f"img_align_celeba/{name}")
            )
    return dest


def _reference_face(subset: Path, name: str) -> np.ndarray:
    """Grey mean of RGB, cropped [29, 29, 9, 9], computed independently."""
    with zipfile.ZipFile(subset / "img_align_celeba.zip") as src:
        data = src.read(f"img_align_celeba/{name}")
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)
    return (rgb.mean(axis=-1) / 255)[29:-29, 9:-9]


@pytest.fixture
def celeba_files(celeba_subset, tmp_path):
    """A small zip, a .txt split that also lists 2 absent images, and the picks."""
    picked = _celeba_pick(celeba_subset)
    zip_path = _celeba_zip(
        celeba_subset, tmp_path / "img_align_celeba.zip", sum(picked.values(), [])
    )
    lines = [f"{n} {k}" for k, split in enumerate(faces.SPLITS) for n in picked[split]]
    lines += ["999998.jpg 0", "999999.jpg 2"]  # listed but not in the zip
    txt = tmp_path / "list_eval_partition.txt"
    txt.write_text("\n".join(lines) + "\n")
    return zip_path, txt, picked


@pytest.mark.shared_data
def test_celeba_zip_and_txt(celeba_files, celeba_subset, tmp_path):
    zip_path, txt, picked = celeba_files
    cfg = DataConfig(
        source="celeba",
        celeba_zip=str(zip_path),
        celeba_partition=str(txt),
        crop=CELEBA_CROP,
        size=160,
    )
    out = tmp_path / "faces.h5"
    summary = prepare_faces(cfg, out, seed=0)
    assert summary["counts"] == {"train": 3, "valid": 3, "test": 3}  # absent: skipped
    with h5py.File(out, "r") as f:
        assert [n.decode() for n in f["valid_names"]] == picked["valid"]
        checksums = json.loads(f.attrs["checksums"])
        assert json.loads(f.attrs["crop"]) == list(CELEBA_CROP)
    assert set(checksums) == {"img_align_celeba.zip", "list_eval_partition.txt"}
    valid = load_split(out, "valid")
    assert valid.shape == (3, 160, 160)
    for image, name in zip(valid, picked["valid"], strict=True):
        np.testing.assert_allclose(
            image, _reference_face(celeba_subset, name), atol=1e-6
        )


@pytest.mark.shared_data
def test_celeba_kaggle_csv_and_extracted_folder(celeba_files, tmp_path):
    zip_path, txt, picked = celeba_files
    base = dict(source="celeba", crop=CELEBA_CROP, size=32)
    prepare_faces(
        DataConfig(celeba_zip=str(zip_path), celeba_partition=str(txt), **base),
        tmp_path / "zip.h5",
        seed=0,
    )
    csv = tmp_path / "list_eval_partition.csv"
    rows = [f"{n},{k}" for k, s in enumerate(faces.SPLITS) for n in picked[s]]
    csv.write_text("image_id,partition\n" + "\n".join(rows) + "\n")
    extracted = tmp_path / "extracted"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(extracted)
    for images in (extracted, extracted / "img_align_celeba"):
        out = tmp_path / "folder.h5"
        cfg = DataConfig(celeba_zip=str(images), celeba_partition=str(csv), **base)
        assert prepare_faces(cfg, out, seed=0)["counts"]["train"] == 3
        for split in faces.SPLITS:
            np.testing.assert_array_equal(
                load_split(out, split), load_split(tmp_path / "zip.h5", split)
            )
    small = load_split(out, "train")
    assert small.shape == (3, 32, 32) and 0 <= small.min() and small.max() <= 1


def test_partition_file_errors(tmp_path):
    bad_value = tmp_path / "a.txt"
    bad_value.write_text("000001.jpg 0\n000002.jpg 7\n")
    with pytest.raises(ValueError, match=r"a.txt:2: expected"):
        read_partition(bad_value)
    escaping = tmp_path / "b.txt"
    escaping.write_text("../000001.jpg 0\n")
    with pytest.raises(ValueError, match="not a plain file name"):
        read_partition(escaping)
    twice = tmp_path / "c.txt"  # a test image also listed for training
    twice.write_text("000001.jpg 0\n000002.jpg 1\n000001.jpg 2\n")
    with pytest.raises(ValueError, match=r"c.txt:3: 000001.jpg is listed again .*1"):
        read_partition(twice)
    binary = tmp_path / "d.txt"
    binary.write_bytes(bytes(range(128, 256)))
    with pytest.raises(ValueError, match="d.txt is not a text split file"):
        read_partition(binary)


def test_a_required_split_left_empty_stops_before_decoding(tmp_path):
    folder = _face_folder(tmp_path / "images", 10)
    cfg = _folder_cfg(folder, split_fractions=(1.0, 0.0, 0.0))
    out = tmp_path / "out" / "faces.h5"
    with pytest.raises(ValueError, match=r"the test split would be empty .*1.0, 0.0"):
        prepare_faces(cfg, out, seed=0, require=("test",))
    assert not out.exists()
    capped = _folder_cfg(folder, max_images={"valid": 0})
    with pytest.raises(ValueError, match=r"valid split .*max_images \{'valid': 0\}"):
        prepare_faces(capped, out, seed=0, require=("train", "valid", "test"))
    # what is not required may be empty: published networks need test images only
    prepare_faces(cfg, out, seed=0, require=("train",))
    assert load_split(out, "test").shape[0] == 0


def test_celeba_absent_without_download_says_how_to_provide_it(tmp_path):
    cfg = DataConfig(
        source="celeba",
        celeba_zip=str(tmp_path / "nowhere.zip"),
        download_dir=str(tmp_path / "dl"),
    )
    with pytest.raises(FileNotFoundError) as err:
        prepare_faces(cfg, tmp_path / "f.h5", seed=0)
    for needed in ("data.celeba_zip", "data.celeba_partition", "nowhere.zip"):
        assert needed in str(err.value)
    assert _no_h5_left(tmp_path)


# --------------------------------------------------------------------------- folder


def test_folder_source(tmp_path):
    folder = _face_folder(tmp_path / "images", 20)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "faces.h5"
    summary = prepare_faces(_folder_cfg(folder), out, seed=0)
    assert summary["counts"] == {"train": 16, "valid": 2, "test": 2}
    with h5py.File(out, "r") as f:
        names = sorted(n.decode() for s in faces.SPLITS for n in f[f"{s}_names"])
    assert names[0] == "a/img0001.png" and names[-1] == "b/img0018.JPG"
    train = load_split(out, "train")
    assert train.shape == (16, 8, 8) and 0 <= train.min() and train.max() <= 1
    again = tmp_path / "again.h5"
    prepare_faces(_folder_cfg(folder), again, seed=0)
    np.testing.assert_array_equal(load_split(again, "train"), train)


def test_folder_centre_square_and_explicit_crop(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    pixels = np.zeros((12, 8), dtype=np.uint8)  # 8 wide, 12 high
    pixels[2:10] = 255  # the centred square is white, rows above and below black
    (folder / "x.png").write_bytes(_png(pixels))
    cfg = dict(split_fractions=(1.0, 0.0, 0.0))
    prepare_faces(_folder_cfg(folder, **cfg), tmp_path / "a.h5", seed=0)
    np.testing.assert_allclose(load_split(tmp_path / "a.h5", "train"), 1.0, atol=1e-6)
    cropped = _folder_cfg(folder, crop=(0, 4, 0, 0), **cfg)  # keeps rows 0..7
    prepare_faces(cropped, tmp_path / "b.h5", seed=0)
    image = load_split(tmp_path / "b.h5", "train")[0]
    assert image[0].max() < 0.05 and image[-1].min() > 0.95


# --------------------------------------------------------------------------- bad input


def test_corrupt_jpeg_below_limit_is_skipped_and_listed(tmp_path, caplog):
    folder = _face_folder(tmp_path / "images", 150)
    (folder / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no JPEG")
    out = tmp_path / "faces.h5"
    summary = prepare_faces(_folder_cfg(folder), out, seed=0)
    assert [b["name"] for b in summary["bad"]] == ["a/broken.jpg"]
    assert sum(summary["counts"].values()) == 150
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["bad_images"])[0]["name"] == "a/broken.jpg"
    assert "skipped 1 bad image(s) of 151" in caplog.text


def test_corrupt_jpeg_above_limit_stops_without_output(tmp_path):
    folder = _face_folder(tmp_path / "images", 100)
    data = _jpeg(np.random.default_rng(1), 30, 30)
    (folder / "a" / "cut1.jpg").write_bytes(data[: len(data) // 3])  # truncated
    (folder / "a" / "cut2.jpg").write_bytes(b"garbage")
    out_dir = tmp_path / "out"
    with pytest.raises(ValueError, match="2 of 102 images could not be used"):
        prepare_faces(_folder_cfg(folder), out_dir / "faces.h5", seed=0)
    assert _no_h5_left(out_dir)


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    folder = _face_folder(tmp_path / "images", 200)
    (folder / "a" / "huge.png").write_bytes(_png_claiming(100_000, 100_000))
    (folder / "a" / "big.png").write_bytes(_png_claiming(8_000, 8_000))
    summary = prepare_faces(
        _folder_cfg(folder, max_pixels=40_000_000), tmp_path / "f.h5", seed=0
    )
    reasons = {b["name"]: b["reason"] for b in summary["bad"]}
    assert set(reasons) == {"a/huge.png", "a/big.png"}
    assert "Pillow" in reasons["a/huge.png"]  # Pillow's own limit, at open
    assert "8000 x 8000" in reasons["a/big.png"]  # ours, from the header
    assert all("decompression bomb" in r for r in reasons.values())


def _zip_with(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return path


@pytest.mark.parametrize("evil", ["../evil.jpg", "/tmp/evil.jpg", "a/../../evil.jpg"])
def test_zip_slip_entry_is_refused(tmp_path, evil):
    image = _jpeg(np.random.default_rng(0), 218, 178)
    archive = _zip_with(
        tmp_path / "c.zip", {"img_align_celeba/000001.jpg": image, evil: image}
    )
    txt = tmp_path / "split.txt"
    txt.write_text("000001.jpg 0\n")
    cfg = DataConfig(
        source="celeba", celeba_zip=str(archive), celeba_partition=str(txt)
    )
    with pytest.raises(ValueError, match="zip slip") as err:
        prepare_faces(cfg, tmp_path / "out" / "f.h5", seed=0)
    assert repr(evil) in str(err.value)
    assert not (tmp_path / "out" / "f.h5").exists()


def test_interrupted_write_leaves_nothing_and_rerun_works(tmp_path, monkeypatch):
    folder = _face_folder(tmp_path / "images", 600)
    out_dir = tmp_path / "out"
    calls = []
    real_append = faces._append

    def failing_append(dataset, rows):
        calls.append(len(rows))
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated interruption")
        real_append(dataset, rows)

    monkeypatch.setattr(faces, "_append", failing_append)
    with pytest.raises(KeyboardInterrupt):
        prepare_faces(_folder_cfg(folder), out_dir / "faces.h5", seed=0)
    assert _no_h5_left(out_dir)
    monkeypatch.setattr(faces, "_append", real_append)
    summary = prepare_faces(_folder_cfg(folder), out_dir / "faces.h5", seed=0)
    assert summary["counts"]["train"] == 480
    assert load_split(out_dir / "faces.h5", "train").shape == (480, 8, 8)


# --------------------------------------------------------------------------- download


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        body, kind = self.server.files.get(name, (None, None))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def official_server(monkeypatch):
    """A local server standing in for Google Drive; ``files``: name -> (body, type)."""
    with serving(_Handler) as srv:
        srv.files = {}
        patched = {
            key: faces._Official(o.name, o.md5, f"{srv.url}/{o.name}")
            for key, o in faces.CELEBA_FILES.items()
        }
        monkeypatch.setattr(faces, "CELEBA_FILES", patched)
        yield srv


def _download_cfg(tmp_path) -> DataConfig:
    return DataConfig(
        source="celeba", download=True, download_dir=str(tmp_path / "dl"), size=16
    )


def test_download_with_wrong_md5_stops_and_leaves_nothing(tmp_path, official_server):
    wrong = b"not the CelebA zip" * 100
    official_server.files["img_align_celeba.zip"] = (wrong, "application/zip")
    with pytest.raises(ChecksumError) as err:
        prepare_faces(_download_cfg(tmp_path), tmp_path / "out" / "f.h5", seed=0)
    import hashlib

    assert faces.CELEBA_FILES["zip"].md5 in str(err.value)  # expected
    assert hashlib.md5(wrong).hexdigest() in str(err.value)  # actual
    assert not list((tmp_path / "dl").iterdir())  # no partial download
    assert not (tmp_path / "out" / "f.h5").exists()


def test_download_html_quota_page_says_how_to_provide_the_zip(
    tmp_path, official_server
):
    page = b"<!DOCTYPE html><html><body>Quota exceeded</body></html>"
    official_server.files["img_align_celeba.zip"] = (page, "text/html; charset=utf-8")
    with pytest.raises(DownloadError) as err:
        prepare_faces(_download_cfg(tmp_path), tmp_path / "f.h5", seed=0)
    message = str(err.value)
    for needed in ("HTML", "data.celeba_zip", "data.celeba_partition", "Kaggle"):
        assert needed in message
    assert faces.CELEBA_PAGE in message
    assert _no_h5_left(tmp_path)


def test_download_then_prepare(tmp_path, official_server, monkeypatch):
    import hashlib

    rng = np.random.default_rng(0)
    archive = _zip_with(
        tmp_path / "served.zip",
        {f"img_align_celeba/{i:06d}.jpg": _jpeg(rng, 218, 178) for i in (1, 2, 3)},
    )
    split = b"000001.jpg 0\n000002.jpg 1\n000003.jpg 2\n"
    served = {"zip": archive.read_bytes(), "partition": split}
    patched = {}
    for key, official in faces.CELEBA_FILES.items():
        md5 = hashlib.md5(served[key]).hexdigest()
        patched[key] = faces._Official(official.name, md5, official.url)
        official_server.files[official.name] = (served[key], "application/octet-stream")
    monkeypatch.setattr(faces, "CELEBA_FILES", patched)
    summary = prepare_faces(_download_cfg(tmp_path), tmp_path / "f.h5", seed=0)
    assert summary["counts"] == {"train": 1, "valid": 1, "test": 1}
    assert (tmp_path / "dl" / "img_align_celeba.zip").read_bytes() == served["zip"]
    with h5py.File(tmp_path / "f.h5", "r") as f:
        checksums = json.loads(f.attrs["checksums"])
    assert checksums["img_align_celeba.zip"] == patched["zip"].md5


def test_a_file_that_is_no_image_is_named_as_such():
    from msprior import faces

    with pytest.raises(faces._BadImage) as info:
        faces._decode_grey(b"a text file called x.jpg", 10**6)
    assert str(info.value) == "cannot decode: not an image format Pillow knows"


def test_images_smaller_than_the_size_are_upscaled_with_a_warning(tmp_path):
    folder = _face_folder(tmp_path / "images", 4)  # 16-24 pixels a side
    with pytest.warns(UserWarning, match="smaller than data.size and are upscaled"):
        prepare_faces(_folder_cfg(folder, size=32), tmp_path / "f.h5", seed=0)
