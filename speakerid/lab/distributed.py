"""Data-parallel training with PyTorch's own engine (torchrun + DistributedDataParallel).

``speakerid train`` runs distributed when torchrun starts it; nothing else changes::

    torchrun --standalone --nproc_per_node 4 -m speakerid.cli train DATA... --out runs/x
    # several machines (run on each; --node_rank 0..NNODES-1 not needed with c10d):
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint HOST:29400 --rdzv_id RUN_ID -m speakerid.cli train DATA... --out runs/x

Each process ("rank") trains the same model on its own share of every step's batch: ranks
draw from differently seeded samplers (so they see different speakers and fragments), DDP
averages the gradients, so every rank takes the same optimiser step and the weights stay
identical. Validation, logging, checkpoints and the resume file are rank 0's job; every
rank reads ``last.pt`` when resuming, so the run folder must be on a shared file system
across machines. Backends: ``nccl`` on CUDA, ``gloo`` on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from speakerid.errors import DataError

TORCHRUN_LINE = "torchrun --standalone --nproc_per_node N -m speakerid.cli train DATA... --out DIR"


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in the job (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0  # rank within this machine: picks the GPU

    @property
    def main(self) -> bool:
        """Rank 0: the process that validates, logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def launched() -> bool:
    """Whether torchrun (or an equivalent launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device_type: str) -> Ranks:
    """Join the process group torchrun describes in the environment; one process: no-op.

    ``nccl`` for CUDA, ``gloo`` for the CPU. Raises ``DataError`` outside torchrun's
    environment variables when they are incomplete.
    """
    if not launched():
        return Ranks()
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise DataError(
            f"distributed training needs torchrun's environment: {TORCHRUN_LINE}"
        ) from None
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return Ranks(rank, world, local)


def teardown(ranks: Ranks) -> None:
    if ranks.distributed and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, ranks: Ranks) -> int:
    """Sampling seed of a rank: the run's seed on rank 0 (so one process is unchanged),
    a distinct one on every other rank (so ranks draw different batches)."""
    return seed + 1_000_003 * ranks.rank


def share(batch: int, ranks: Ranks) -> int:
    """This rank's part of a global batch; the batch must split evenly."""
    if batch % ranks.world:
        raise DataError(
            f"batch_size {batch} does not split evenly over {ranks.world} processes; "
            "give a multiple of the process count"
        )
    return batch // ranks.world


def from_main(value: float, ranks: Ranks, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank: its clock (for a time-budgeted schedule) or its
    decision to stop, so that all ranks step alike and stop at the same step (a rank that
    stopped alone would leave the others waiting forever)."""
    if not ranks.distributed:
        return value
    shared = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(shared, src=0)
    return float(shared.item())


def in_sync(module: torch.nn.Module, ranks: Ranks, device: torch.device) -> bool:
    """Whether every rank holds the same weights (the spread of a weight checksum is 0)."""
    if not ranks.distributed:
        return True
    with torch.no_grad():
        total = sum(p.detach().double().sum() for p in module.parameters())
        total = torch.as_tensor(total, dtype=torch.float64, device=device).reshape(1)
        lo, hi = total.clone(), total.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool((hi - lo).abs().item() <= 1e-9 * max(1.0, abs(hi.item())))


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()
