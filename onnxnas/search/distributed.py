"""Data-parallel search under torchrun: ranks shard the batches and average gradients.

Gradients are all-reduced by hand (one flat buffer per step) rather than by a
DistributedDataParallel wrapper, because block pruning keeps shrinking the parameter set,
which a DDP wrapper fixes at construction. Identical initial weights, averaged gradients
and identical optimizer steps keep weights and architecture weights equal on every rank;
pruning decisions, made from those, then agree too. Only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

from onnxnas.errors import OnnxNasError


@dataclasses.dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group torchrun describes in the environment (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size())


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(params: Iterable[nn.Parameter], ctx: DistContext) -> None:
    """Replace every gradient by its mean over ranks (missing gradients count as zero)."""
    if not ctx.enabled:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def mean_over_ranks(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.enabled:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= ctx.world_size
    return value


def sync_buffers(module: nn.Module, ctx: DistContext) -> None:
    """BatchNorm statistics differ per rank (different batches): take rank 0's."""
    if ctx.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def search_device(name: str) -> torch.device:
    """``--device auto|cpu|cuda`` of a search process (under torchrun, this rank's GPU)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise OnnxNasError("--device cuda: no CUDA device is visible", fix="use --device cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")
