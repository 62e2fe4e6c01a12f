"""DDP from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK); a no-op for one process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, tracks and checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA); single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cpu``/``cuda`` force one (cuda without a GPU is an error)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but no CUDA device is available; use 'auto' or 'cpu'")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device("cpu")


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
