"""L2-SP: zero at the start point, hand-computed values, gradient alpha*(w - w0), resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transferkit.errors import ConfigError
from transferkit.losses.l2sp import L2SP, l2sp_loss


def _model() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(2, 2)


def test_zero_at_start_point() -> None:
    model = _model()
    reg = L2SP(model, alpha=0.7, beta=0.3)
    assert reg(model).item() == 0.0
    assert list(reg.parameters()) == []  # the snapshot is buffers, not trainable


def test_hand_computed_value_after_known_perturbation() -> None:
    model = _model()
    reg = L2SP(model, alpha=0.3, beta=0.2)
    head = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight[0, 0] += 0.5
        model.bias[1] -= 0.25
        head.weight.copy_(torch.tensor([[1.0, 2.0]]))
    # alpha/2 * (0.5^2 + 0.25^2) + beta/2 * (1^2 + 2^2)
    expected = 0.15 * (0.25 + 0.0625) + 0.1 * 5.0
    assert reg(model, new=head).item() == pytest.approx(expected, rel=1e-6)


def test_gradient_is_alpha_times_drift_and_beta_times_new() -> None:
    model = _model()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    head = nn.Linear(2, 3)
    reg = L2SP(model, alpha=0.4, beta=0.05)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    reg(model, new=head).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 0.4 * (p.detach() - start[name]))
    for p in head.parameters():
        torch.testing.assert_close(p.grad, 0.05 * p.detach())


def test_pure_function_counts_unknown_names_as_new() -> None:
    w = torch.tensor([1.0, 2.0])
    w0 = torch.tensor([1.0, 1.0])
    extra = torch.tensor([3.0])
    loss = l2sp_loss({"a": w, "fc": extra}, {"a": w0}, alpha=2.0, beta=4.0)
    assert loss.item() == pytest.approx(1.0 * 1.0 + 2.0 * 9.0)
    loss2 = l2sp_loss({"a": w}, {"a": w0}, alpha=2.0, beta=4.0, new_params=[extra])
    assert loss2.item() == pytest.approx(loss.item())


def test_state_dict_restores_the_original_start_point() -> None:
    model = _model()
    reg = L2SP(model, alpha=1.0, beta=0.0)
    with torch.no_grad():
        model.weight.add_(1.0)  # "training" happened; now the run is resumed
    resumed = L2SP(model, alpha=1.0, beta=0.0)  # snapshot of the moved weights...
    assert resumed(model).item() == 0.0
    resumed.load_state_dict(reg.state_dict())  # ...replaced by the saved start point
    assert resumed(model).item() == pytest.approx(reg(model).item())
    assert resumed(model).item() == pytest.approx(0.5 * 4.0)  # 4 weights moved by 1


def test_bad_inputs_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="alpha"):
        L2SP(_model(), alpha=-1.0)
    with pytest.raises(ConfigError, match="shape"):
        l2sp_loss({"w": torch.zeros(3)}, {"w": torch.zeros(2)})
    with pytest.raises(ConfigError, match="no parameter") as err:
        l2sp_loss({"backbone.w": torch.zeros(2)}, {"w": torch.zeros(2)})
    assert err.value.fix
