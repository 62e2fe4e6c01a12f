"""The training loop's curves: validation losses, the logged history across a resume, data-dependent init."""

from __future__ import annotations

import pytest
import torch

from semcolor.training.loop import TrainConfig, train, validation_losses
from tests.training_toy import ToyColorizer, build, make_batches


def _config(**overrides) -> TrainConfig:
    return TrainConfig(**{"steps": 12, "lr": 1e-2, "ema_decay": 0.9, "log_every": 2, "checkpoint_every": 6,
                          "device": "cpu", "progress": False, **overrides})


def _without_timing(rows):
    return [{k: v for k, v in row.items() if k != "samples_per_second"} for row in rows]


def test_validation_losses_are_logged_every_val_every_steps_from_the_ema_weights(tmp_path):
    validation = list(make_batches(count=2, batch=4, seed=5).batches)
    logged = []
    result = train(build(), "toy", {}, make_batches(), _config(val_every=4), tmp_path / "c.pt",
                   on_log=lambda metrics, step: logged.append((step, dict(metrics))), validation=validation)
    val_steps = [step for step, metrics in logged if "val_loss" in metrics]
    assert val_steps == [4, 8, 12]  # every val_every steps and the last
    assert [step for step, metrics in logged if "loss" in metrics] == [2, 4, 6, 8, 10, 12]
    # the last validation is the EMA model's loss on the validation batches, in eval mode
    payload = torch.load(tmp_path / "c.pt", weights_only=True)
    ema = ToyColorizer()
    ema.load_state_dict(payload["ema"])
    ema.eval()
    with torch.no_grad():
        expected = sum(float(ema.compute_losses(b)["loss"]) * 4 for b in validation) / 8
    assert logged[-1][1]["val_loss"] == pytest.approx(expected, rel=1e-6)
    assert result.losses["val_loss"] == pytest.approx(expected, rel=1e-6)
    assert result.history[-1]["step"] == 12 and result.history[-1]["val_loss"] == pytest.approx(expected, rel=1e-6)
    # validating changes nothing about training (no gradients, no random numbers drawn)
    plain = train(build(), "toy", {}, make_batches(), _config(val_every=4), tmp_path / "plain.pt")
    for name, tensor in torch.load(tmp_path / "plain.pt", weights_only=True)["model"].items():
        assert torch.equal(tensor, payload["model"][name]), name
    assert "val_loss" not in plain.losses


def test_validation_losses_restore_the_training_mode():
    model = build()
    model.train()
    losses = validation_losses(model, list(make_batches(count=1).batches))
    assert set(losses) == {"val_loss"} and model.training
    assert validation_losses(model, []) == {}


def test_a_resumed_run_keeps_every_logged_row_and_a_finished_one_its_final_losses(tmp_path):
    validation = list(make_batches(count=1, batch=4, seed=5).batches)
    straight = train(build(), "toy", {}, make_batches(), _config(), tmp_path / "straight.pt", validation=validation)
    # stop after the checkpoint at step 6 (a kill there loses nothing of the curve), then resume to 12
    part = tmp_path / "part.pt"
    first = train(build(), "toy", {}, make_batches(), _config(steps=6), part, validation=validation)
    assert [row["step"] for row in first.history] == [2, 4, 6]
    resumed_rows = []
    resumed = train(build(), "toy", {}, make_batches(), _config(), part, validation=validation,
                    on_log=lambda metrics, step: resumed_rows.append(step))
    assert resumed_rows == [8, 10, 12]  # only the new steps are logged again ...
    assert _without_timing(resumed.history) == _without_timing(straight.history)  # ... the history is whole
    # a run killed after its last checkpoint, restarted: nothing to train, the same final losses and curve
    again = train(build(), "toy", {}, make_batches(), _config(), part, validation=validation)
    assert again.step == 12 and again.losses == resumed.losses and again.history == resumed.history
    assert again.losses["loss"] == pytest.approx(straight.losses["loss"]) and "val_loss" in again.losses


class _NeedsInit(ToyColorizer):
    def __init__(self):
        super().__init__(dropout=0.0)
        self.init_batches = []

    def data_dependent_init(self, batch):
        self.init_batches.append(batch["key"])
        with torch.no_grad():
            self.body[0].bias.fill_(0.25)


def test_data_dependent_init_runs_once_on_a_fresh_start_with_the_first_batch_and_not_on_resume(tmp_path):
    batches = make_batches()
    model = _NeedsInit()
    train(model, "toy", {}, batches, _config(steps=2, lr=1e-12, ema_decay=0.5), tmp_path / "c.pt")
    assert model.init_batches == [batches.batches[0]["key"]]
    # EMA copies the weights after the init (else its average would still hold the default bias)
    ema_bias = torch.load(tmp_path / "c.pt", weights_only=True)["ema"]["body.0.bias"]
    torch.testing.assert_close(ema_bias, torch.full_like(ema_bias, 0.25))
    resumed = _NeedsInit()
    train(resumed, "toy", {}, batches, _config(steps=4), tmp_path / "c.pt")
    assert resumed.init_batches == []
