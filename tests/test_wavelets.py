import numpy as np
import pytest
import pywt
import torch

from msprior.wavelets import band_noise_std, dwt, idwt, wavedec, waverec

WAVELETS = ["haar", "db2", "db4", "sym4", "coif1"]
TOL = {torch.float32: 1e-5, torch.float64: 1e-11}


@pytest.mark.parametrize("name", WAVELETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("shape", "levels"), [((16, 16), 1), ((32, 48), 2), ((2, 3, 64, 32), 3)]
)
def test_perfect_reconstruction(name, dtype, shape, levels):
    x = torch.rand(shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    low, details = wavedec(x, levels, name)
    assert low.shape == (*shape[:-2], shape[-2] >> levels, shape[-1] >> levels)
    assert [d.shape[-3] for d in details] == [3] * levels
    torch.testing.assert_close(waverec(low, details, name), x, atol=TOL[dtype], rtol=0)


@pytest.mark.parametrize("name", WAVELETS)
def test_energy_is_conserved_by_the_orthonormal_transform(name):
    x = torch.randn(4, 32, 32, dtype=torch.float64)
    low, details = wavedec(x, 3, name)
    # Level j divides by 2**j, so its orthonormal energy is 4**j times the stored one.
    energy = low.pow(2).sum((-2, -1)) * 4**3
    for j, d in enumerate(details, start=1):
        energy = energy + d.pow(2).sum((-3, -2, -1)) * 4**j
    torch.testing.assert_close(energy, x.pow(2).sum((-2, -1)), rtol=1e-10, atol=0)


@pytest.mark.parametrize("name", WAVELETS)
def test_agrees_with_pywavelets(name):
    x = np.random.default_rng(0).random((2, 32, 32))
    ref = pywt.wavedec2(x, name, mode="periodization", level=2, axes=(-2, -1))
    low, details = wavedec(torch.from_numpy(x), 2, name)
    np.testing.assert_allclose(low.numpy(), ref[0] / 4, atol=1e-12)
    for j in (1, 2):  # pywt lists coarsest first
        np.testing.assert_allclose(
            details[j - 1].numpy(), np.stack(ref[-j], axis=-3) / 2**j, atol=1e-12
        )


def test_haar_lowpass_is_a_local_mean_and_bands_are_ordered():
    x = torch.arange(16.0).reshape(4, 4)
    low, bands = dwt(x)
    assert low[0, 0].item() == pytest.approx(x[:2, :2].mean().item())
    # horizontal = high-pass along rows: top row minus bottom row
    assert bands[0, 0, 0].item() == pytest.approx((x[0, :2].sum() - x[1, :2].sum()) / 4)
    assert bands[1, 0, 0].item() == pytest.approx((x[:2, 0].sum() - x[:2, 1].sum()) / 4)


@pytest.mark.parametrize("level", [1, 2, 3])
def test_white_noise_std_per_band_matches_the_statement(level):
    sigma = 0.3
    noise = sigma * torch.randn(
        64, 64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    low, details = wavedec(noise, level)
    expected = band_noise_std(sigma, level)
    for band in [low, *details[level - 1].unbind(-3)]:
        assert band.std().item() == pytest.approx(expected, rel=0.02)


def test_differentiable_and_batched():
    x = torch.rand(3, 1, 8, 8, requires_grad=True)
    low, details = wavedec(x, 2)
    (low.sum() + details[0].pow(2).sum()).backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="not divisible"):
        wavedec(torch.rand(12, 12), 3)
    with pytest.raises(ValueError, match="must be even"):
        dwt(torch.rand(5, 6))
    with pytest.raises(ValueError, match="not orthogonal"):
        dwt(torch.rand(8, 8), "bior2.2")
    with pytest.raises(ValueError, match="unknown wavelet"):
        dwt(torch.rand(8, 8), "nonsense")
    with pytest.raises(ValueError, match="do not match"):
        idwt(torch.rand(4, 4), torch.rand(2, 4, 4))
