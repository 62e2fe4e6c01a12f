"""The training loop: exact resume after a real kill, the NaN guard, DDP == one process, checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from semcolor.training.checkpoint import load_checkpoint, save_checkpoint
from semcolor.training.loop import InMemoryBatches, NonFiniteLossError, TrainConfig, train
from tests.training_toy import build, make_batches

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def run_toy(*args: str, torchrun: int = 0, timeout: float = 240) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] if torchrun else [sys.executable]
    return subprocess.run([*launcher, "-m", "tests.training_toy", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout, check=True)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path):
    straight = tmp_path / "straight.pt"
    run_toy("--checkpoint", str(straight), "--steps", "30")
    resumed = tmp_path / "resumed.pt"
    process = subprocess.Popen([sys.executable, "-m", "tests.training_toy", "--checkpoint", str(resumed), "--steps", "30",
                                "--sleep", "0.2"], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill it once a mid-run checkpoint (step 10 or later) exists
        if resumed.is_file() and load_checkpoint(resumed)["step"] >= 10:
            break
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = load_checkpoint(resumed)["step"]
    assert 10 <= killed_at < 30
    run_toy("--checkpoint", str(resumed), "--steps", "30")  # resumes from the checkpoint
    final = load_checkpoint(resumed)
    assert final["step"] == 30
    expected, got = weights(straight), final["model"]
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    for name, tensor in load_checkpoint(straight)["ema"].items():
        assert torch.equal(tensor, final["ema"][name]), f"ema {name}"


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    single, ddp = tmp_path / "single.pt", tmp_path / "ddp.pt"
    common = ("--steps", "12", "--global-batch", "8", "--dropout", "0")  # dropout differs per rank: off
    run_toy("--checkpoint", str(single), *common)
    run_toy("--checkpoint", str(ddp), *common, torchrun=2)
    expected, got = weights(single), weights(ddp)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6)
    # and training moved the weights at all (the comparison is not between two untouched inits)
    assert not torch.allclose(expected["body.0.weight"], build(dropout=0).body[0].weight)


def test_nan_loss_stops_with_step_and_batch_keys(tmp_path):
    batches = make_batches(count=4)
    batches.batches[2]["L"][0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"step 3 .*sample_2_0"):
        train(build(), "toy", {}, batches, TrainConfig(steps=10, device="cpu", progress=False), tmp_path / "c.pt")


def test_checkpoint_is_plain_data_and_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    result = train(build(), "toy", {"width": 8}, make_batches(count=2),
                   TrainConfig(steps=3, device="cpu", progress=False, ema_decay=0.5), path)
    assert result.step == 3 and result.checkpoint == path
    payload = torch.load(path, weights_only=True)  # no pickled objects
    assert payload["model_config"] == {"width": 8} and payload["train_config"]["steps"] == 3
    assert set(payload) >= {"model", "ema", "optimizer", "rng", "step", "model_name"}
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", explode)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 99})
    assert path.read_bytes() == before  # the old checkpoint survives a failed write
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # and no temp file is left


def test_gradient_clipping_bounds_the_norm_the_optimizer_sees(tmp_path, monkeypatch):
    batches = make_batches(count=1)
    batches.batches[0]["ab"] = batches.batches[0]["ab"] * 1e4  # a huge loss, huge gradients
    seen = []
    original_step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    logged = {}
    config = TrainConfig(steps=2, grad_clip=0.5, device="cpu", progress=False, log_every=1)
    train(build(dropout=0), "toy", {}, batches, config, tmp_path / "c.pt", on_log=lambda m, s: logged.update(m))
    assert logged["grad_norm"] > 0.5  # the norm before clipping is what gets logged, and it was large
    assert seen and all(norm <= 0.5 + 1e-4 for norm in seen)
