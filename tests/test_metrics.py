import math

import pytest
import torch

from msprior.metrics import mse, psnr


def test_known_answers():
    clean = torch.zeros(2, 1, 4, 4)
    noisy = clean.clone()
    noisy[0] += 0.1  # MSE 0.01 -> 20 dB at peak 1
    noisy[1, 0, 0, 0] = 1.0  # MSE 1/16 -> 10 log10(16) dB
    torch.testing.assert_close(
        mse(noisy, clean), torch.tensor([0.01, 1 / 16], dtype=torch.float64)
    )
    out = psnr(noisy, clean)
    assert out[0].item() == pytest.approx(20.0)
    assert out[1].item() == pytest.approx(10 * math.log10(16))
    assert psnr(noisy, clean, data_range=255.0)[0].item() == pytest.approx(
        20 + 20 * math.log10(255)
    )


def test_one_value_per_image_and_perfect_is_infinite():
    x = torch.rand(3, 2, 5, 5)
    assert psnr(x, x).shape == (3,) and torch.isinf(psnr(x, x)).all()


def test_bad_input():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.zeros(2, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="data_range"):
        psnr(torch.zeros(2, 4), torch.ones(2, 4), data_range=0)
