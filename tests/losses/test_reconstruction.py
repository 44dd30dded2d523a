"""DSN difference loss, scale-invariant MSE and the input decoders."""

from __future__ import annotations

import math

import pytest
import torch

from transferkit.errors import ConfigError, DataError
from transferkit.losses.reconstruction import (
    DifferenceLoss,
    ImageDecoder,
    ScaleInvariantMSE,
    VectorDecoder,
    difference_loss,
    make_decoder,
    scale_invariant_mse,
)

# Sylvester Hadamard matrix H_16: orthogonal columns, +-1 entries, columns 1..15 sum to 0.
_H2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
H16 = torch.kron(torch.kron(torch.kron(_H2, _H2), _H2), _H2)


def test_difference_loss_hand_computed_2x2_without_centering() -> None:
    """Rows normalised: S_hat = [[1, 0], [1/sqrt2, 1/sqrt2]], P_hat = P; S_hat^T P_hat =
    [[1/sqrt2, 1], [1/sqrt2, 0]] whose squared Frobenius norm is 1/2 + 1 + 1/2 = 2."""
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    p = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert float(difference_loss(s, p, center=False)) == pytest.approx(2.0, abs=1e-6)
    assert float(difference_loss(s, p, center=False, reduction="mean")) == pytest.approx(0.5)
    assert float(difference_loss(s, p, center=False, reduction="batch")) == pytest.approx(0.5)
    assert float(DifferenceLoss(center=False)(s, p)) == pytest.approx(2.0, abs=1e-6)


def test_difference_loss_two_examples_centered_is_four() -> None:
    """With B = 2, centring leaves rows +-d/2, normalised to +-u (shared) and +-v
    (private): S_hat^T P_hat = 2 u v^T, so the loss is 4 ||u||^2 ||v||^2 = 4."""
    s = torch.tensor([[3.0, 1.0], [1.0, 2.0]])
    p = torch.tensor([[0.0, 5.0], [2.0, -1.0]])
    assert float(difference_loss(s, p)) == pytest.approx(4.0, abs=1e-5)


def test_difference_loss_exactly_zero_for_orthogonal_codes() -> None:
    """Disjoint Hadamard columns: centred, equal row norms and S^T P = 0 over the batch.
    With row norms that make every normalised entry +-1/2 the arithmetic is exact and the
    loss is exactly 0.0; with arbitrary column scales it is 0 up to rounding."""
    s, p = H16[:, 1:5] * 3.0, H16[:, 5:9] * 0.25  # row norms 6 and 1/2
    assert float((s.T @ p).abs().max()) == 0.0
    assert float(difference_loss(s, p)) == 0.0
    assert float(difference_loss(s.float(), p.float(), center=False)) == 0.0
    scaled_s = H16[:, 1:4] * torch.tensor([2.0, 0.3, 3.0], dtype=torch.float64)
    scaled_p = H16[:, 4:9] * torch.tensor([1.0, 7.0, 0.25, 2.0, 0.1], dtype=torch.float64)
    assert float(difference_loss(scaled_s, scaled_p)) == pytest.approx(0.0, abs=1e-24)
    # constant offsets are removed by the centring
    offset = torch.tensor([5.0, -1.0, 2.0], dtype=torch.float64)
    shifted = difference_loss(scaled_s + offset, scaled_p - 3.0)
    assert float(shifted) == pytest.approx(0.0, abs=1e-24)


def test_difference_loss_positive_and_bounded_otherwise() -> None:
    g = torch.Generator().manual_seed(0)
    s, p = torch.randn(16, 5, generator=g), torch.randn(16, 7, generator=g)
    loss = float(difference_loss(s, p))
    assert 0.0 < loss <= 16**2
    # identical codes: trace(S_hat^T S_hat) = B, so ||S_hat^T S_hat||_F^2 >= B^2 / D
    assert float(difference_loss(s, s)) >= 16**2 / 5 - 1e-3
    # invariant to positive per-row scaling when not centring
    scale = torch.rand(16, 1, generator=g) + 0.1
    torch.testing.assert_close(
        difference_loss(s * scale, p, center=False), difference_loss(s, p, center=False)
    )


def test_difference_loss_gradient_finite_on_zero_rows_and_errors() -> None:
    s = torch.ones(1, 3, requires_grad=True)  # one example: centring gives a zero row
    loss = difference_loss(s, torch.randn(1, 4))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.isfinite(s.grad).all()
    with pytest.raises(DataError, match="same batch"):
        difference_loss(torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(DataError, match=r"\[B, D_s\]"):
        difference_loss(torch.zeros(4, 3, 2), torch.zeros(4, 3))
    with pytest.raises(ConfigError, match="reduction"):
        difference_loss(torch.zeros(4, 3), torch.zeros(4, 3), reduction="max")  # type: ignore[arg-type]


def test_scale_invariant_mse_hand_value_and_invariance() -> None:
    """d = target - pred = -[1, 2, 3, 4]: ||d||^2 / 4 - (sum d)^2 / 16 = 7.5 - 6.25 = 1.25."""
    pred, target = torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.zeros(1, 4)
    assert float(scale_invariant_mse(pred, target)) == pytest.approx(1.25)
    g = torch.Generator().manual_seed(1)
    x, xh = torch.randn(3, 2, 5, 5, generator=g), torch.randn(3, 2, 5, 5, generator=g)
    base = scale_invariant_mse(xh, x)
    shift = torch.tensor([3.0, -7.5, 0.25]).view(3, 1, 1, 1)  # one constant per example
    torch.testing.assert_close(scale_invariant_mse(xh + shift, x), base)
    torch.testing.assert_close(ScaleInvariantMSE()(xh + 2.0, x), base)
    # it is the mean over examples of the (population) variance of the error
    torch.testing.assert_close(base, (x - xh).flatten(1).var(dim=1, unbiased=False).mean())
    assert float(scale_invariant_mse(x + 4.0, x)) == pytest.approx(0.0, abs=1e-10)
    assert float(scale_invariant_mse(x * 2, x)) > 0.1  # not invariant to scaling
    with pytest.raises(DataError, match="one shape"):
        scale_invariant_mse(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(DataError, match="one shape"):
        scale_invariant_mse(torch.zeros(3), torch.zeros(3))


@pytest.mark.parametrize(
    "shape", [(1, 8, 8), (3, 32, 32), (1, 28, 28), (3, 13, 9), (2, 8, 33), (3, 224, 224)]
)
def test_image_decoder_reproduces_the_exact_shape(shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    dec = make_decoder(12, shape, width=16)
    assert isinstance(dec, ImageDecoder) and dec.output_shape == shape
    code = torch.randn(2, 12, requires_grad=True)
    out = dec(code)
    assert out.shape == (2, *shape)
    out.square().mean().backward()
    assert torch.isfinite(code.grad).all() and code.grad.abs().sum() > 0
    # the seed map is small: 4..7 pixels on the short side (224 -> 7x7)
    assert 4 <= min(dec.seed_shape[1:]) <= 7


@pytest.mark.parametrize("features", [1, 6, 300])
def test_vector_decoder_shape(features: int) -> None:
    dec = make_decoder(16, (features,))
    assert isinstance(dec, VectorDecoder)
    assert dec(torch.randn(4, 16)).shape == (4, features)
    assert make_decoder(8, [features], hidden=5).net[0].out_features == 5


def test_decoder_errors_name_the_problem() -> None:
    with pytest.raises(DataError, match="text") as err:
        make_decoder(8, (16, 128))  # e.g. token ids [L] per field: not reconstructible
    assert "tk:mlp" in str(err.value)
    for bad in ((), (1, 2, 3, 4)):
        with pytest.raises(DataError, match="decoder"):
            make_decoder(8, bad)
    with pytest.raises(ConfigError, match=r"input_shape\[1\]"):
        make_decoder(8, (3, 0, 8))
    with pytest.raises(ConfigError, match="code_dim"):
        make_decoder(0, (3, 8, 8))
    with pytest.raises(ConfigError, match="hidden"):
        make_decoder(4, (3,), hidden=-1)


def test_seed_map_sizes_follow_powers_of_two() -> None:
    dec = make_decoder(4, (1, 8, 8), width=32)
    n_up = sum(1 for m in dec.blocks if isinstance(m, torch.nn.Upsample))
    assert n_up == int(math.log2(8 / 4)) == 1
    assert dec.seed_shape == (32, 4, 4)
