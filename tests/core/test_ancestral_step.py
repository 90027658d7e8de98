"""The ancestral Euler step of LTX-2.5's distilled stage 1 (ltx-core 1.2.0 ``EulerAncestralDiffusionStep``, rectified
flow): eta 0 is the Euler step, the last step returns x0, and with eta 1 a sample x_sigma = (1 - sigma) x0 + sigma n
lands on the marginal at sigma_next (mean (1 - sigma_next) x0, std sigma_next), as a variance-preserving transition
must; the noise comes from the step's own generator."""

from __future__ import annotations

import pytest
import torch

from aiprod.aiprod_core.sampling import EulerAncestralStep, EulerStep


def _sample(sigma: float, shape=(1, 200_000, 2), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(shape, generator=gen)
    return (1 - sigma) * x0 + sigma * torch.randn(shape, generator=gen), x0


def test_eta_zero_is_euler_and_the_last_step_is_x0() -> None:
    sample, x0 = _sample(0.7, shape=(2, 64, 8))
    sigma, sigma_next = torch.tensor(0.7), torch.tensor(0.4)
    ours, _ = EulerAncestralStep(torch.Generator(), eta=0.0)(sample, x0, sigma, sigma_next)
    euler, _ = EulerStep()(sample, x0, sigma, sigma_next)
    torch.testing.assert_close(ours, euler, rtol=0, atol=1e-6)
    last, _ = EulerAncestralStep(torch.Generator())(sample, x0, sigma, torch.tensor(0.0))
    assert torch.equal(last, x0)


@pytest.mark.parametrize(("sigma", "sigma_next"), [(1.0, 0.99375), (0.975, 0.909375), (0.725, 0.421875)])
def test_full_ancestral_step_lands_on_the_next_marginal(sigma: float, sigma_next: float) -> None:
    sample, x0 = _sample(sigma)
    step = EulerAncestralStep(torch.Generator().manual_seed(3))
    out, _ = step(sample, x0, torch.tensor(sigma), torch.tensor(sigma_next))
    residual = out - (1 - sigma_next) * x0  # should be sigma_next * fresh noise
    assert abs(residual.mean().item()) < 0.01
    assert abs(residual.std().item() - sigma_next) < 0.01 * max(sigma_next, 0.1)
    again, _ = EulerAncestralStep(torch.Generator().manual_seed(3))(sample, x0, torch.tensor(sigma),
                                                                     torch.tensor(sigma_next))
    assert torch.equal(out, again)  # the step's generator, nothing global


def test_eta_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="eta=1.5, expected 0 <= eta <= 1"):
        EulerAncestralStep(torch.Generator(), eta=1.5)
