"""The training loop shared by every model family.

A model exposes ``compute_losses(batch) -> dict`` whose ``"loss"`` entry is the scalar to minimise (the
other entries are logged). A model with several optimizers (a GAN) instead exposes
``make_optimizers(lr, betas, weight_decay) -> dict[str, Optimizer]`` and
``train_step(batch, optimizers, grad_clip) -> dict`` that performs its own updates; the loop then only
checks, logs, averages and checkpoints (such models are not wrapped in DDP). The loop adds what every recipe needs: Adam, optional EMA/Polyak weights,
gradient clipping, a guard against non-finite losses, bf16 autocast on CUDA, optional torch.compile,
DDP when started by torchrun, atomic checkpoints, exact resume, a progress bar, and a logging callback
that only rank 0 calls.

Exact resume: batches are a pure function of (seed, epoch) (semcolor.data.loader), the checkpoint holds the
optimizer, EMA and RNG states, and resuming at step s replays epoch s // steps_per_epoch from its
(s % steps_per_epoch)-th batch. On CPU a resumed run therefore ends with the same weights as an
uninterrupted one. The checkpoint also holds every row logged so far (``TrainResult.history``), so a
resumed run's curve has no gap, and a run killed after its last checkpoint still reports its final losses.

Models that need a data-dependent initialization (weight normalization, ``semcolor.models.weight_norm``)
expose ``data_dependent_init(batch)``: on a fresh start (not on resume) the loop calls it once with the first
training batch, before EMA copies the weights and before DDP broadcasts rank 0's weights to every rank.

Validation: given ``validation`` batches (a small fixed subset of the val split), the loop evaluates every
loss term on them every ``val_every`` steps and at the last step, in eval mode without gradients, on the
weights that evaluation uses (the EMA weights when EMA is on), and logs them as ``val_<term>``.
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
from semcolor.errors import NonFiniteLossError


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one training stage (params.yaml `train_*.train`)."""

    steps: int = 1000
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0  # max global gradient norm; null disables clipping
    ema_decay: float | None = None  # Polyak/EMA of the weights, e.g. 0.999; null disables it
    warmup_steps: int = 0  # linear learning-rate warm-up: step s (1-based) uses lr * min(1, s / warmup_steps)
    log_every: int = 10
    checkpoint_every: int = 200
    val_every: int | None = None  # validation loss every N steps (and at the end); null: every checkpoint_every
    val_samples: int = 32  # size of the fixed validation subset (first samples of the val split); 0 disables
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
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or null, got {self.threads}")
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise ValueError("log_every and checkpoint_every must be >= 1")
        if self.val_every is not None and self.val_every < 1:
            raise ValueError(f"val_every must be >= 1 or null, got {self.val_every}")
        if self.val_samples < 0:
            raise ValueError(f"val_samples must be >= 0, got {self.val_samples}")

    @property
    def validation_interval(self) -> int:
        return self.val_every if self.val_every is not None else self.checkpoint_every


class Batches(Protocol):
    """What the loop iterates: one epoch per iteration, selected with set_epoch (see ShardBatches)."""

    steps_per_epoch: int

    def set_epoch(self, epoch: int) -> None: ...

    def __iter__(self) -> Iterator[dict[str, Any]]: ...


@dataclass
class TrainResult:
    step: int
    losses: dict[str, float] = field(default_factory=dict)
    samples_per_second: float = 0.0
    checkpoint: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)  # every logged row, {"step": s, ...}


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
    validation: Iterable[dict[str, Any]] | None = None,
) -> TrainResult:
    """Train ``model`` for ``config.steps`` optimizer steps; resume from ``checkpoint_path`` if present.

    ``model_name``/``model_config`` are what semcolor.models.create_model needs to rebuild the model; they
    are stored in the checkpoint as plain data. ``on_log(metrics, step)`` is called on rank 0 every
    ``log_every`` steps with the mean losses since the last call and samples/s, and at validation steps with
    the ``val_*`` losses (merged into the same call when both fall on one step). ``validation``: batches
    evaluated every ``config.validation_interval`` steps and at the last step (rank 0 only).
    """
    context = context or DistributedContext()
    device = device or torch.device("cpu")
    checkpoint_path = Path(checkpoint_path)
    model.to(device)
    custom_step = hasattr(model, "train_step")
    if custom_step and context.enabled:
        raise ValueError(f"{model_name} performs its own optimizer steps and cannot be trained with DDP")
    payload = None
    if resume and checkpoint_path.is_file():
        payload = load_checkpoint(checkpoint_path, map_location=device)
        if payload["model_name"] != model_name:
            raise ValueError(f"{checkpoint_path} holds a {payload['model_name']} model, not {model_name}")
        model.load_state_dict(payload["model"])
    elif hasattr(model, "data_dependent_init"):
        batches.set_epoch(0)
        model.train()
        model.data_dependent_init(move_batch(next(iter(batches)), device))
    if custom_step:
        optimizers = model.make_optimizers(config.lr, config.betas, config.weight_decay)
    else:
        # foreach: one fused update over all tensors; torch picks it only for CUDA tensors by itself, and the
        # per-tensor loop cost a PixelCNN's CPU step 9 ms of its 150 (4.9 ms fused)
        optimizers = {"main": torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas,
                                               weight_decay=config.weight_decay, foreach=True)}
    loss_module: nn.Module = LossModule(model)
    if context.enabled:  # broadcasts rank 0's (initialised or resumed) weights to every rank
        loss_module = nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[device.index] if device.type == "cuda" else None
        )
    ema = ExponentialMovingAverage(model, config.ema_decay) if config.ema_decay is not None else None
    step = 0
    history: list[dict[str, float]] = []
    last_losses: dict[str, float] = {}
    samples_per_second = 0.0
    if payload is not None:
        for name, state in payload["optimizer"].items():
            optimizers[name].load_state_dict(state)
        if ema is not None and payload.get("ema") is not None:
            ema.load_state_dict(payload["ema"])
        set_rng_state(payload["rng"])
        step = int(payload["step"])
        history = [dict(row) for row in payload.get("history", [])]
        last_losses = dict(payload.get("last_losses", {}))
        samples_per_second = float(payload.get("samples_per_second", 0.0))
    plain_config = config_to_dict(model_config)

    def checkpoint(at_step: int) -> Path:
        return save_checkpoint(checkpoint_path, {
            "model_name": model_name, "model_config": plain_config, "model": model.state_dict(),
            "ema": ema.state_dict() if ema is not None else None, "optimizer": {name: opt.state_dict() for name, opt in optimizers.items()},
            "step": at_step, "rng": rng_state(), "train_config": config_to_dict(config), "extra": extra or {},
            "history": history, "last_losses": last_losses, "samples_per_second": samples_per_second,
        })

    if config.compile:
        loss_module = torch.compile(loss_module)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and config.bf16 else _null_context()
    validation = list(validation) if validation is not None and context.is_main else None
    steps_per_epoch = batches.steps_per_epoch
    if steps_per_epoch < 1:
        raise ValueError("the training data yields no whole batch per epoch")

    parameters = list(model.parameters())  # walked once: load_state_dict and .to() keep the Parameter objects
    model.train()
    bar = tqdm(total=config.steps, initial=step, desc=model_name, disable=not (config.progress and context.is_main),
               dynamic_ncols=True)
    sums: dict[str, float] = {}
    window_samples, window_start = 0, time.perf_counter()
    while step < config.steps:
        epoch, skip = divmod(step, steps_per_epoch)
        batches.set_epoch(epoch)
        for index, batch in enumerate(batches):
            if index < skip:
                continue  # replaying the epoch up to where the checkpoint left it
            batch = move_batch(batch, device)
            grad_norm = None
            if config.warmup_steps:  # a pure function of the step, so resume needs no scheduler state
                factor = min(1.0, (step + 1) / config.warmup_steps)
                for optimizer in optimizers.values():
                    for group in optimizer.param_groups:
                        group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor
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
                    grad_norm = float(nn.utils.clip_grad_norm_(parameters, config.grad_clip, foreach=True))
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
            row: dict[str, float] = {}
            if step % config.log_every == 0 or step == config.steps:
                elapsed = time.perf_counter() - window_start
                samples_per_second = window_samples / elapsed if elapsed > 0 else 0.0
                count = sums.pop("_count")
                last_losses = {name: total / count for name, total in sums.items()}
                bar.set_postfix(loss=f"{last_losses['loss']:.4f}", samples_s=f"{samples_per_second:.1f}")
                row = {**last_losses, "samples_per_second": samples_per_second, "epoch": float(epoch)}
                sums, window_samples, window_start = {}, 0, time.perf_counter()
            if validation and (step % config.validation_interval == 0 or step == config.steps):
                started = time.perf_counter()
                validated = validation_losses(ema.shadow if ema is not None else model, validation, autocast)
                row.update(validated)
                last_losses = {**last_losses, **validated}
                window_start += time.perf_counter() - started  # validation time is not training time
            if row and context.is_main:
                history.append({"step": float(step), **row})
                if on_log is not None:
                    on_log(row, step)
            if context.is_main and step % config.checkpoint_every == 0 and step < config.steps:
                checkpoint(step)
            if step >= config.steps:
                break
    bar.close()
    final = checkpoint(step) if context.is_main else None
    return TrainResult(step=step, losses=last_losses, samples_per_second=samples_per_second, checkpoint=final,
                       history=history)


@torch.no_grad()
def validation_losses(model: nn.Module, batches: list[dict[str, Any]], autocast: Any = None) -> dict[str, float]:
    """Every loss term of ``model.compute_losses`` averaged over ``batches`` (weighted by batch size), in
    eval mode, as ``val_<term>``; the model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    device = next(model.parameters()).device
    try:
        for batch in batches:
            batch = move_batch(batch, device)
            size = int(batch["L"].shape[0])
            with autocast if autocast is not None else _null_context():
                losses = model.compute_losses(batch)
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) * size
            count += size
    finally:
        model.train(was_training)
    return {f"val_{name}": total / count for name, total in sums.items()} if count else {}


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
