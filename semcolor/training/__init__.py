"""Model-agnostic training: the loop, checkpoints, EMA weights and torchrun/DDP set-up."""
