"""Data-parallel training under `torchrun`: which process this is, and the few collective
steps the training loop needs.

`torchrun --nproc_per_node N -m weldmon.cli train ...` starts N processes with RANK,
WORLD_SIZE and LOCAL_RANK set; `from_environment` joins them into one process group (gloo on
CPU, NCCL when CUDA is there; one GPU per local rank). Without torchrun it returns the
single-process context and nothing here talks to anyone.

Every rank holds the whole training set (features from the shared cache) and walks the same
shuffled batches (same seed); each batch's bags are split between the ranks
(`shard_of`), DDP averages the gradients, and `loss_weight` scales each rank's loss so that
the average equals the whole batch's gradient even when the last batch does not split
evenly. BatchNorm normalises with each rank's own shard in training mode (SyncBatchNorm is
GPU-only in torch 2.13), so a run on N ranks equals one on a single process only within a
tolerance (tests/test_training_ddp.py states it). Buffers (BatchNorm running statistics) are
broadcast from rank 0 before validation, so every rank validates the same model and takes
the same schedule and early-stopping decisions; rank 0 alone writes files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""  # "gloo" or "nccl"; "" when alone

    @property
    def is_main(self) -> bool:
        """The rank that writes checkpoints, history and reports."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    @property
    def device(self) -> torch.device:
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


SINGLE = Ranks()


def from_environment() -> Ranks:
    """Join torchrun's process group when WORLD_SIZE > 1 is set; otherwise `SINGLE`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Ranks(dist.get_rank(), dist.get_world_size(), local, backend)


def shutdown(ranks: Ranks) -> None:
    """Leave the process group (after the last collective)."""
    if ranks.parallel and dist.is_initialized():
        dist.destroy_process_group()


def default_threads(ranks: Ranks) -> int | None:
    """CPU threads per rank when the config sets none: the cores shared out between the
    ranks of this machine (None: torch's default, when alone)."""
    if not ranks.parallel:
        return None
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(ranks.world_size)))
    return max(1, (os.cpu_count() or 1) // local_world)


def shard_of(batch: Sequence[int], ranks: Ranks) -> list[int]:
    """This rank's bags of a batch (every world_size-th from its rank). A rank left without
    one (a last batch smaller than the world) runs the batch's first bag at weight 0, so
    that every rank still takes part in the gradient all-reduce."""
    mine = list(batch[ranks.rank :: ranks.world_size])
    return mine or list(batch[:1])


def loss_weight(batch: Sequence[int], ranks: Ranks) -> float:
    """Factor on this rank's mean loss so that DDP's average over ranks is the whole batch's
    mean: world_size x (this rank's bags / the batch's bags)."""
    mine = len(batch[ranks.rank :: ranks.world_size])
    return ranks.world_size * mine / len(batch)


def wrap(backbone: nn.Module, ranks: Ranks) -> nn.Module:
    """The module the training step runs: `backbone` itself, or its DDP wrapper."""
    if not ranks.parallel:
        return backbone
    ids = [ranks.local_rank] if ranks.backend == "nccl" else None
    return nn.parallel.DistributedDataParallel(backbone, device_ids=ids)


def broadcast_buffers(module: nn.Module, ranks: Ranks) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank."""
    if ranks.parallel:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def sum_over_ranks(value: float, ranks: Ranks) -> float:
    """`value` summed over every rank (itself when alone)."""
    if not ranks.parallel:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=ranks.device)
    dist.all_reduce(total)
    return float(total.item())


@contextmanager
def local_main_first(ranks: Ranks) -> Iterator[None]:
    """Run the block on each machine's local rank 0 first, then on the other ranks: the
    first decodes every file into the shared feature cache, the others read it."""
    if ranks.parallel and ranks.local_rank != 0:
        dist.barrier()
    yield
    if ranks.parallel and ranks.local_rank == 0:
        dist.barrier()
