import math

import pytest
import torch

from msprior.sampling import (
    Constraint,
    SamplerSettings,
    constrained_initial_state,
    generators_for,
    initial_state,
    injected_noise,
    sample,
    step_size,
)


class Shrink:
    """A tiny exact denoiser: the noise estimate is a fixed fraction of (y - mu)."""

    def __init__(self, a=0.5, mu=0.25):
        self.a, self.mu = a, mu

    def __call__(self, y, cond=None):
        return self.a * (y - self.mu)


def test_step_size_schedule():
    assert step_size(1, 0.1) == pytest.approx(0.1)
    assert step_size(2, 0.1) == pytest.approx(0.2 / 1.1)
    assert step_size(10, 0.1, fixed=True) == 0.1
    assert all(step_size(t, 0.05) < step_size(t + 1, 0.05) < 1 for t in range(1, 200))


def test_first_update_matches_a_hand_computation():
    settings = SamplerSettings(h0=0.2, beta=0.5, sigma_min=1e-9, max_steps=1)
    y0 = torch.tensor([[[[1.0, -1.0], [0.5, 0.0]]]])  # (1, 1, 2, 2)
    gen = torch.Generator().manual_seed(7)
    z = torch.randn((1, 2, 2), generator=torch.Generator().manual_seed(7))
    x, trace = sample(Shrink(), y0, [gen], settings)
    d = -0.5 * (y0 - 0.25)
    sigma = d.flatten().norm() / 2
    h = 0.2
    gamma = sigma * math.sqrt((1 - 0.5 * h) ** 2 - (1 - h) ** 2)
    y1 = y0 + h * d + gamma * z
    assert trace.sigma[0, 0].item() == pytest.approx(sigma.item())
    assert trace.gamma[0, 0].item() == pytest.approx(gamma.item())
    assert trace.h[0, 0].item() == pytest.approx(h)
    # after max_steps, one last denoising step: x = y1 + d(y1)
    torch.testing.assert_close(x, y1 - 0.5 * (y1 - 0.25))
    assert trace.reason == ["max_steps"] and trace.steps.tolist() == [1]


def test_injected_noise_vanishes_for_beta_one():
    assert injected_noise(torch.tensor(2.0), 0.3, 1.0).item() == 0.0
    assert injected_noise(torch.tensor(2.0), 0.3, 0.5).item() > 0


def test_stops_by_the_rule_and_ends_denoised():
    settings = SamplerSettings(h0=0.1, beta=0.5, sigma_min=0.01, max_steps=500)
    gens = generators_for([1, 2, 3])
    y = initial_state((1, 8, 8), gens, sigma_0=1.0)
    x, trace = sample(Shrink(), y, gens, settings)
    assert trace.reason == ["sigma_min"] * 3
    last = trace.sigma[trace.steps - 1, torch.arange(3)]
    assert torch.all(last > 0.01)  # the last recorded step was still above the level
    assert (x - 0.25).abs().max() < 0.05  # the exact denoiser's fixed point
    assert torch.isnan(trace.sigma[trace.steps.max() :]).all()


def test_divergence_is_recorded_not_hidden():
    settings = SamplerSettings(h0=0.1, beta=1.0, sigma_min=1e-6, max_steps=200)

    def expanding(y, cond=None):  # a "denoiser" whose residual pushes away
        return -0.5 * y

    gens = generators_for([0])
    _, trace = sample(expanding, torch.ones(1, 1, 4, 4), gens, settings)
    assert trace.reason == ["diverged"]
    assert trace.steps.item() < 200


def test_same_seed_same_sample_and_independent_of_the_batch():
    settings = SamplerSettings(h0=0.05, beta=0.3, sigma_min=0.02, max_steps=300)
    den = Shrink(0.3)

    def run(seeds):
        gens = generators_for(seeds)
        y = initial_state((1, 6, 6), gens, mean=0.5)
        return sample(den, y, gens, settings)

    alone, tr_alone = run([11])
    batch, tr_batch = run([5, 11, 17])
    torch.testing.assert_close(batch[1:2], alone)
    assert tr_batch.steps[1] == tr_alone.steps[0]
    again, _ = run([5, 11, 17])
    torch.testing.assert_close(again, batch, rtol=0, atol=0)
    assert not torch.allclose(batch[0], batch[2])


def test_constraint_holds_the_measurement():
    settings = SamplerSettings(h0=0.2, beta=0.5, sigma_min=0.005, max_steps=400)
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., :3] = 1
    values = torch.rand(1, 1, 6, 6)
    gens = generators_for([3])
    measured = Constraint(mask, values)
    y = constrained_initial_state(measured, gens)
    x, _ = sample(Shrink(), y, gens, settings, constraint=measured)
    torch.testing.assert_close(x * mask, values * mask, atol=0.02, rtol=0)


def test_constrained_start_has_one_noise_level_everywhere():
    # The blind denoiser must first see the same noise over measured and missing
    # pixels; the measured ones are centred on their values, the missing on the mean.
    n = 128
    mask = torch.zeros(1, 1, n, n)
    mask[..., : n // 2, :] = 1
    values = torch.rand(2, 1, n, n)
    gens = generators_for([1, 2])
    y = constrained_initial_state(Constraint(mask, values), gens, mean=0.5, sigma_0=0.8)
    assert y.shape == values.shape
    measured = (y - values)[..., : n // 2, :]
    missing = y[..., n // 2 :, :]
    assert measured.std().item() == pytest.approx(0.8, rel=0.03)
    assert measured.mean().item() == pytest.approx(0.0, abs=0.02)
    assert missing.std().item() == pytest.approx(0.8, rel=0.03)
    assert missing.mean().item() == pytest.approx(0.5, abs=0.02)
    again = constrained_initial_state(Constraint(mask, values), generators_for([1, 2]))
    torch.testing.assert_close(
        again,
        constrained_initial_state(Constraint(mask, values), generators_for([1, 2])),
    )
    with pytest.raises(ValueError, match="generators"):
        constrained_initial_state(Constraint(mask, values), generators_for([1]))


def test_settings_are_checked():
    with pytest.raises(ValueError, match="beta"):
        SamplerSettings(beta=0)
    with pytest.raises(ValueError, match="generators"):
        sample(
            Shrink(), torch.zeros(2, 1, 2, 2), generators_for([1]), SamplerSettings()
        )
