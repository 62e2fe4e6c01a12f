"""The training loop shared by every model family.

A model exposes ``compute_losses(batch) -> dict`` whose ``"loss"`` entry is the scalar to minimise (the
other entries are logged). A model with several optimizers (a GAN) instead exposes
``make_optimizers(lr, betas, weight_decay) -> dict[str, Optimizer]`` and
``train_step(batch, optimizers, grad_clip) -> dict`` that performs its own updates; the loop then only
checks, logs, averages and checkpoints (such models are not wrapped in DDP). The loop adds what every recipe needs: Adam, optional EMA/Polyak weights,
gradient clipping, a guard against non-finite losses, bf16 autocast on CUDA, optional torch.compile,
DDP when started by torchrun, atomic checkpoints, exact resume, a progress bar, and a logging callback
that only rank 0 calls.

Exact resume: batches are a pure function of (seed, epoch) (semcolor.loader), the checkpoint holds the
optimizer, EMA and RNG states, and resuming at step s replays epoch s // steps_per_epoch from its
(s % steps_per_epoch)-th batch. On CPU a resumed run therefore ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from semcolor.config import config_to_dict
from semcolor.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from semcolor.training.distributed import DistributedContext
from semcolor.training.ema import ExponentialMovingAverage


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one training stage (params.yaml `train_*.train`)."""

    steps: int = 1000
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0  # max global gradient norm; null disables clipping
    ema_decay: float | None = None  # Polyak/EMA of the weights, e.g. 0.999; null disables it
    log_every: int = 10
    checkpoint_every: int = 200
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = True  # autocast to bfloat16 on CUDA (ignored on CPU)
    compile: bool = False  # torch.compile the loss module
    threads: int | None = None  # CPU threads for compute (torch.set_num_threads); null: torch's default
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ValueError(f"betas must be in [0, 1), got {self.betas}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or null, got {self.grad_clip}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) or null, got {self.ema_decay}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or null, got {self.threads}")
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise ValueError("log_every and checkpoint_every must be >= 1")


class Batches(Protocol):
    """What the loop iterates: one epoch per iteration, selected with set_epoch (see ShardBatches)."""

    steps_per_epoch: int

    def set_epoch(self, epoch: int) -> None: ...

    def __iter__(self) -> Iterator[dict[str, Any]]: ...


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the batch's sample keys."""


@dataclass
class TrainResult:
    step: int
    losses: dict[str, float] = field(default_factory=dict)
    samples_per_second: float = 0.0
    checkpoint: Path | None = None


class LossModule(nn.Module):
    """Routes ``forward(batch)`` to ``model.compute_losses`` so that DDP's gradient hooks see the call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.model.compute_losses(batch)


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def train(
    model: nn.Module,
    model_name: str,
    model_config: Any,
    batches: Batches,
    config: TrainConfig,
    checkpoint_path: str | Path,
    *,
    device: torch.device | None = None,
    context: DistributedContext | None = None,
    on_log: Callable[[dict[str, float], int], None] | None = None,
    resume: bool = True,
    extra: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` for ``config.steps`` optimizer steps; resume from ``checkpoint_path`` if present.

    ``model_name``/``model_config`` are what semcolor.models.create_model needs to rebuild the model; they
    are stored in the checkpoint as plain data. ``on_log(metrics, step)`` is called on rank 0 every
    ``log_every`` steps with the mean losses since the last call and samples/s.
    """
    context = context or DistributedContext()
    device = device or torch.device("cpu")
    checkpoint_path = Path(checkpoint_path)
    model.to(device)
    custom_step = hasattr(model, "train_step")
    if custom_step:
        if context.enabled:
            raise ValueError(f"{model_name} performs its own optimizer steps and cannot be trained with DDP")
        optimizers = model.make_optimizers(config.lr, config.betas, config.weight_decay)
    else:
        optimizers = {"main": torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas,
                                               weight_decay=config.weight_decay)}
    ema = ExponentialMovingAverage(model, config.ema_decay) if config.ema_decay is not None else None
    step = 0
    if resume and checkpoint_path.is_file():
        payload = load_checkpoint(checkpoint_path, map_location=device)
        if payload["model_name"] != model_name:
            raise ValueError(f"{checkpoint_path} holds a {payload['model_name']} model, not {model_name}")
        model.load_state_dict(payload["model"])
        for name, state in payload["optimizer"].items():
            optimizers[name].load_state_dict(state)
        if ema is not None and payload.get("ema") is not None:
            ema.load_state_dict(payload["ema"])
        set_rng_state(payload["rng"])
        step = int(payload["step"])
    plain_config = config_to_dict(model_config)

    def checkpoint(at_step: int) -> Path:
        return save_checkpoint(checkpoint_path, {
            "model_name": model_name, "model_config": plain_config, "model": model.state_dict(),
            "ema": ema.state_dict() if ema is not None else None, "optimizer": {name: opt.state_dict() for name, opt in optimizers.items()},
            "step": at_step, "rng": rng_state(), "train_config": config_to_dict(config), "extra": extra or {},
        })

    loss_module: nn.Module = LossModule(model)
    if context.enabled:
        loss_module = nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        loss_module = torch.compile(loss_module)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and config.bf16 else _null_context()
    steps_per_epoch = batches.steps_per_epoch
    if steps_per_epoch < 1:
        raise ValueError("the training data yields no whole batch per epoch")

    model.train()
    bar = tqdm(total=config.steps, initial=step, desc=model_name, disable=not (config.progress and context.is_main),
               dynamic_ncols=True)
    sums: dict[str, float] = {}
    window_samples, window_start = 0, time.perf_counter()
    last_losses: dict[str, float] = {}
    samples_per_second = 0.0
    while step < config.steps:
        epoch, skip = divmod(step, steps_per_epoch)
        batches.set_epoch(epoch)
        for index, batch in enumerate(batches):
            if index < skip:
                continue  # replaying the epoch up to where the checkpoint left it
            batch = move_batch(batch, device)
            grad_norm = None
            if custom_step:
                with autocast:
                    losses = model.train_step(batch, optimizers, config.grad_clip)
                _check_finite(losses["loss"], step + 1, batch, context)
            else:
                with autocast:
                    losses = loss_module(batch)
                loss = losses["loss"]
                _check_finite(loss, step + 1, batch, context)
                optimizers["main"].zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
                optimizers["main"].step()
            if ema is not None:
                ema.update(model)
            step += 1
            window_samples += int(batch["L"].shape[0]) * context.world_size
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            if grad_norm is not None:
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm
            sums["_count"] = sums.get("_count", 0.0) + 1
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                elapsed = time.perf_counter() - window_start
                samples_per_second = window_samples / elapsed if elapsed > 0 else 0.0
                count = sums.pop("_count")
                last_losses = {name: total / count for name, total in sums.items()}
                bar.set_postfix(loss=f"{last_losses['loss']:.4f}", samples_s=f"{samples_per_second:.1f}")
                if context.is_main and on_log is not None:
                    on_log({**last_losses, "samples_per_second": samples_per_second, "epoch": float(epoch)}, step)
                sums, window_samples, window_start = {}, 0, time.perf_counter()
            if context.is_main and step % config.checkpoint_every == 0 and step < config.steps:
                checkpoint(step)
            if step >= config.steps:
                break
    bar.close()
    final = checkpoint(step) if context.is_main else None
    return TrainResult(step=step, losses=last_losses, samples_per_second=samples_per_second, checkpoint=final)


def _check_finite(loss: torch.Tensor, step: int, batch: dict[str, Any], context: DistributedContext) -> None:
    value = loss.detach().float()
    if context.enabled:  # every rank must stop together, or the others hang in the next all-reduce
        flag = torch.tensor([0.0 if torch.isfinite(value) else 1.0], device=value.device)
        torch.distributed.all_reduce(flag)
        finite = flag.item() == 0.0
    else:
        finite = bool(torch.isfinite(value))
    if not finite:
        keys = batch.get("key", [])
        raise NonFiniteLossError(
            f"non-finite loss ({value.item()}) at step {step} on rank {context.rank}; batch keys: {list(keys)}. "
            "Check these samples, lower the learning rate or enable grad_clip."
        )


class _null_context:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def list_batches(batches: Iterable[dict[str, Any]]) -> "InMemoryBatches":
    return InMemoryBatches(list(batches))


class InMemoryBatches:
    """A fixed list of batches as an epoch (tests and small experiments); the same every epoch."""

    def __init__(self, batches: list[dict[str, Any]]):
        self.batches = batches
        self.steps_per_epoch = len(batches)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.batches)


def mean_finite(values: Iterable[float]) -> float:
    values = [v for v in values if math.isfinite(v)]
    return sum(values) / len(values) if values else float("nan")
