"""The EMA weights follow shadow <- decay * shadow + (1 - decay) * weights and copy buffers."""

import pytest
import torch
import torch.nn as nn

from semcolor.training.ema import ExponentialMovingAverage


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Conv2d(3, 1, 1))


def test_update_is_the_moving_average_of_every_parameter_and_copies_buffers():
    model = _model()
    ema = ExponentialMovingAverage(model, decay=0.75)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    expected = dict(start)
    for step in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model[1].running_mean.add_(1.0)
            model[1].num_batches_tracked.add_(1)
        ema.update(model)
        current = dict(model.named_parameters())
        expected = {name: 0.75 * expected[name] + 0.25 * current[name].detach() for name in expected}
    shadow = dict(ema.shadow.named_parameters())
    for name, value in expected.items():
        torch.testing.assert_close(shadow[name], value, rtol=1e-6, atol=1e-6)
        assert not torch.equal(shadow[name], current[name]), name  # averaged, not copied
    assert torch.equal(ema.shadow[1].running_mean, model[1].running_mean)
    assert int(ema.shadow[1].num_batches_tracked) == 3


def test_update_follows_weights_loaded_into_the_model_after_the_first_update():
    model = _model()
    ema = ExponentialMovingAverage(model, decay=0.0)  # decay 0: the shadow is a copy of the weights
    ema.update(model)
    other = _model()
    with torch.no_grad():
        for p in other.parameters():
            p.fill_(2.5)
    model.load_state_dict(other.state_dict())  # in place: the cached tensors are the model's
    ema.update(model)
    assert all(torch.equal(p, torch.full_like(p, 2.5)) for p in ema.shadow.parameters())


def test_a_different_model_is_refused():
    ema = ExponentialMovingAverage(_model(), decay=0.5)
    with pytest.raises(ValueError, match="parameters or buffers do not match"):
        ema.update(nn.Linear(2, 2))


def test_update_follows_a_model_moved_after_the_first_update():
    model = _model()
    ema = ExponentialMovingAverage(model, decay=0.0)
    ema.update(model)
    model.double()  # swaps every parameter's data and replaces the buffers
    ema.shadow.double()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.5)
        model[1].running_mean.fill_(4.0)
    ema.update(model)
    assert all(torch.equal(p, torch.full_like(p, 1.5)) for p in ema.shadow.parameters())
    assert torch.equal(ema.shadow[1].running_mean, torch.full((3,), 4.0, dtype=torch.float64))
