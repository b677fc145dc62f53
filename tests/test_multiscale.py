import pytest
import torch

from msprior.evaluation import denoising_table, noisy_images
from msprior.multiscale import (
    MultiScaleModel,
    load_multiscale,
    super_resolve,
    synthesize,
)
from msprior.networks import BFCNN, NetworkSpec, save_model
from msprior.sampling import SamplerSettings, generators_for
from msprior.wavelets import wavedec, waverec


class Zero(torch.nn.Module):
    """A 'denoiser' that estimates no noise: denoised = input."""

    def forward(self, noisy, cond=None):
        return torch.zeros_like(noisy)


class Shrink(torch.nn.Module):
    def forward(self, noisy, cond=None):
        return 0.5 * noisy


def tiny(levels=2):
    nets = {j: BFCNN(NetworkSpec("conditional", 4, 8, 5)).eval() for j in range(1, 3)}
    return MultiScaleModel(BFCNN(NetworkSpec("lowpass", 4, 8, 9)).eval(), nets, "haar")


def test_identity_networks_give_the_identity():
    model = MultiScaleModel(Zero(), {1: Zero(), 2: Zero()}, "haar")
    x = torch.rand(3, 1, 16, 16)
    torch.testing.assert_close(model.denoise(x), x, atol=1e-6, rtol=0)


def test_lowpass_only_keeps_only_the_coarsest_lowpass():
    model = MultiScaleModel(Zero(), {1: Zero(), 2: Zero()}, "haar")
    x = torch.rand(2, 1, 16, 16)
    low, details = wavedec(x, 2)
    expected = waverec(low, [torch.zeros_like(d) for d in details])
    torch.testing.assert_close(model.denoise(x, lowpass_only=True), expected)


def test_levels_must_be_complete():
    with pytest.raises(ValueError, match="levels 1..J"):
        MultiScaleModel(Zero(), {2: Zero()})


def test_super_resolution_keeps_the_given_lowpass():
    model = tiny()
    low = torch.rand(2, 1, 4, 4)
    settings = SamplerSettings(h0=0.2, beta=0.5, sigma_min=0.05, max_steps=30)
    out, traces = super_resolve(model, low, generators_for([1, 2]), settings)
    assert out.shape == (2, 1, 16, 16)
    again, _ = wavedec(out, 2)
    torch.testing.assert_close(again, low, atol=1e-5, rtol=0)
    assert set(traces) == {1, 2}


def test_synthesis_is_deterministic_per_seed():
    model = MultiScaleModel(Shrink(), {1: Shrink(), 2: Shrink()}, "haar")
    settings = SamplerSettings(h0=0.1, beta=0.5, sigma_min=0.01, max_steps=200)
    a, traces = synthesize(model, (4, 4), generators_for([3, 4]), settings)
    b, _ = synthesize(model, (4, 4), generators_for([4]), settings)
    torch.testing.assert_close(a[1:], b)
    assert a.shape == (2, 1, 16, 16)
    assert set(traces) == {1, 2, 3}  # details j=1, j=2 and the low-pass (key J + 1)
    assert all(r == "sigma_min" for t in traces.values() for r in t.reason)


def test_denoising_table_shares_the_noise_between_models():
    clean = torch.rand(5, 1, 8, 8)
    same = noisy_images(clean, 0.1, seed=0, sigma_index=1)
    # an image's noise does not depend on the batch it is drawn in
    torch.testing.assert_close(noisy_images(clean[:2], 0.1, 0, 1), same[:2])
    assert not torch.allclose(noisy_images(clean, 0.1, 0, 2), same)
    table = denoising_table(
        {"id": (None, lambda y: y), "half": (3, lambda y: 0.5 * y)},
        clean,
        [10, 50],
        batch_size=2,
    )
    assert list(table["model"]) == ["id", "half", "id", "half"]
    ident = table[table.model == "id"]
    assert (ident.psnr_in - ident.psnr_out).abs().max() < 1e-9
    assert table.psnr_in.iloc[0] > table.psnr_in.iloc[2]


@pytest.fixture
def saved(tmp_path):
    """Tiny model files as training writes them: role, level and wavelet recorded."""
    specs = {
        "lowpass": (NetworkSpec("lowpass", 4, 8, 9), 2),
        "j1": (NetworkSpec("conditional", 4, 8, 5), 1),
        "j2": (NetworkSpec("conditional", 4, 8, 5), 2),
        "flat": (NetworkSpec("flat", 4, 8, 5), 0),
    }
    paths = {}
    for name, (spec, level) in specs.items():
        paths[name] = tmp_path / f"{name}.pt"
        extra = {"level": level, "wavelet": "haar"}
        save_model(paths[name], BFCNN(spec), step=0, extra=extra)
    return paths


def test_loaded_networks_are_checked_against_their_slots(saved):
    s = saved
    model = load_multiscale(s["lowpass"], {1: s["j1"], 2: s["j2"]}, "db1")  # = haar
    assert model.levels == 2
    wrong = [
        ((s["j1"], {1: s["j1"], 2: s["j2"]}, "haar"), "low-pass network is a cond"),
        ((s["flat"], {1: s["j1"], 2: s["j2"]}, "haar"), "low-pass network is a flat"),
        ((s["lowpass"], {1: s["j2"], 2: s["j1"]}, "haar"), "level 1 .* for level 2"),
        ((s["lowpass"], {1: s["j1"]}, "haar"), "2-level model, .* levels 1..1"),
        ((s["lowpass"], {1: s["j1"], 2: s["j2"]}, "db4"), "on 'haar' .*not 'db4'"),
    ]
    for args, message in wrong:
        with pytest.raises(ValueError, match=message):
            load_multiscale(*args)


def test_denoise_names_a_wrong_shape_or_dtype():
    model = tiny()
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\), got \(1, 16, 16\)"):
        model.denoise(torch.rand(1, 16, 16))
    with pytest.raises(TypeError, match="torch.float64 but the networks are"):
        model.denoise(torch.rand(1, 1, 16, 16, dtype=torch.float64))
