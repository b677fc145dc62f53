"""precompute_coefficients(): layout, values, reconstruction, readers."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from msprior import coefficients
from msprior.coefficients import precompute_coefficients, read_level, read_lowpass
from msprior.config import DataConfig, WaveletConfig
from msprior.faces import SPLITS, load_split, prepare_faces
from msprior.wavelets import idwt, wavedec


@pytest.fixture(scope="module")
def faces_h5(tmp_path_factory):
    """The embedded faces at 32 x 32: 80 / 10 / 10 images."""
    path = tmp_path_factory.mktemp("faces") / "faces.h5"
    prepare_faces(DataConfig(), path, seed=0)
    return path


@pytest.fixture(scope="module")
def haar_h5(faces_h5):
    path = faces_h5.with_name("wavelets.h5")
    precompute_coefficients(faces_h5, path, WaveletConfig("haar", 3), batch_size=32)
    return path


def test_layout_and_attrs(faces_h5, haar_h5):
    with h5py.File(haar_h5, "r") as f:
        assert f.attrs["wavelet"] == "haar"
        assert f.attrs["levels"] == 3
        assert f.attrs["normalisation"] == coefficients.NORMALISATION
        assert "horizontal" in f.attrs["band_order"]
        assert f.attrs["faces_path"] == str(faces_h5.resolve())
        with h5py.File(faces_h5, "r") as faces:
            assert f.attrs["faces_content_sha256"] == faces.attrs["content_sha256"]
        assert "faces_md5" not in f.attrs  # the digest says it: no second full read
        for split, n in zip(SPLITS, (80, 10, 10), strict=True):
            assert f.attrs[f"n_{split}"] == n
            for j in (1, 2, 3):
                side = 32 // 2**j
                low, details = f[split][f"low_{j}"], f[split][f"details_{j}"]
                assert low.shape == (n, side, side)
                assert details.shape == (n, 3, side, side)
                assert low.dtype == details.dtype == np.float32
                assert details.compression == "lzf"
            assert len(f[split]["names"]) == n


def test_an_older_faces_file_is_known_by_its_md5(faces_h5, tmp_path):
    import hashlib
    import shutil

    old = shutil.copy(faces_h5, tmp_path / "old_faces.h5")
    with h5py.File(old, "a") as f:
        del f.attrs["content_sha256"]  # as written before the digest existed
    out = tmp_path / "w.h5"
    precompute_coefficients(old, out, WaveletConfig("haar", 1))
    with h5py.File(out, "r") as f:
        assert f.attrs["faces_content_sha256"] == ""
        assert f.attrs["faces_md5"] == hashlib.md5(old.read_bytes()).hexdigest()


def test_values_equal_wavedec(faces_h5, haar_h5):
    images = torch.from_numpy(load_split(faces_h5, "train"))
    for j in (1, 2, 3):
        low, details = wavedec(images, j, "haar")
        stored_low, stored_details = read_level(haar_h5, "train", j)
        np.testing.assert_allclose(stored_low, low.numpy(), atol=1e-6)
        np.testing.assert_allclose(stored_details, details[-1].numpy(), atol=1e-6)


def test_haar_lowpass_is_block_mean(faces_h5, haar_h5):
    images = load_split(faces_h5, "valid").astype(np.float64)
    for j in (1, 2, 3):
        b = 2**j
        blocks = images.reshape(len(images), 32 // b, b, 32 // b, b)
        np.testing.assert_allclose(
            read_lowpass(haar_h5, "valid", j), blocks.mean(axis=(2, 4)), atol=1e-6
        )


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_perfect_reconstruction_from_stored_coefficients(faces_h5, tmp_path, wavelet):
    path = tmp_path / "w.h5"
    precompute_coefficients(faces_h5, path, WaveletConfig(wavelet, 2), batch_size=7)
    images = load_split(faces_h5, "test")
    x = torch.from_numpy(read_lowpass(path, "test", 2))
    for j in (2, 1):
        low, details = read_level(path, "test", j)
        np.testing.assert_allclose(low, x.numpy(), atol=1e-6)  # x_j as stored
        x = idwt(x, torch.from_numpy(details), wavelet)
    np.testing.assert_allclose(x.numpy(), images, atol=1e-6)


def test_batch_size_does_not_change_values(faces_h5, haar_h5, tmp_path):
    path = tmp_path / "w.h5"
    precompute_coefficients(faces_h5, path, WaveletConfig("haar", 3), batch_size=1000)
    for j in (1, 3):
        pairs = zip(
            read_level(path, "train", j), read_level(haar_h5, "train", j), strict=True
        )
        for ours, reference in pairs:
            np.testing.assert_array_equal(ours, reference)


def test_readers_max_images_and_errors(haar_h5):
    low, details = read_level(haar_h5, "train", 2, max_images=5)
    assert low.shape == (5, 8, 8) and details.shape == (5, 3, 8, 8)
    with pytest.raises(ValueError, match=r"level must be in 1..3"):
        read_level(haar_h5, "train", 4)
    with pytest.raises(ValueError, match="no split 'training'"):
        read_lowpass(haar_h5, "training", 1)


def test_a_truncated_file_is_named(haar_h5, tmp_path):
    cut = tmp_path / "cut.h5"
    cut.write_bytes(haar_h5.read_bytes()[:5000])
    with pytest.raises(OSError, match="cut.h5 cannot be read as HDF5 .*truncated"):
        read_level(cut, "train", 1)


def test_bad_config_is_refused_and_writes_nothing(faces_h5, tmp_path):
    with pytest.raises(ValueError, match="not divisible by 2\\*\\*wavelet.levels"):
        precompute_coefficients(faces_h5, tmp_path / "w.h5", WaveletConfig("haar", 6))
    with pytest.raises(ValueError, match="not orthogonal"):
        precompute_coefficients(faces_h5, tmp_path / "w.h5", WaveletConfig("bior2.2"))
    assert not list(tmp_path.iterdir())


def test_interrupted_write_leaves_nothing(faces_h5, tmp_path, monkeypatch):
    calls = []
    real = coefficients.dwt

    def failing_dwt(x, wavelet):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("simulated failure")
        return real(x, wavelet)

    monkeypatch.setattr(coefficients, "dwt", failing_dwt)
    with pytest.raises(RuntimeError, match="simulated"):
        precompute_coefficients(faces_h5, tmp_path / "w.h5", WaveletConfig("haar", 2))
    assert not list(tmp_path.iterdir())
    monkeypatch.setattr(coefficients, "dwt", real)
    precompute_coefficients(faces_h5, tmp_path / "w.h5", WaveletConfig("haar", 2))
    assert read_lowpass(tmp_path / "w.h5", "train", 2).shape == (80, 8, 8)
