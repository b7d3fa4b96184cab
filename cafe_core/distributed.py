"""Several processes (torchrun) or one: the few collective helpers the trainer and evaluation use.

``torchrun --nproc_per_node N -m cafe_core train ...`` sets WORLD_SIZE, RANK and LOCAL_RANK;
``init`` then joins the process group ("nccl" on CUDA, "gloo" on CPU) and returns this rank's
device (``cuda:LOCAL_RANK``). Without torchrun (or with one process) nothing is initialised and
every helper is the identity, so a plain ``python -m cafe_core train`` runs exactly as before.

Only trainable modules are wrapped in DistributedDataParallel (``wrap``); attacks, causal
inversion and AWP's weight perturbation always act on the underlying module. BatchNorm layers of
trained modules can be synchronised across ranks (``sync_batchnorm``): PyTorch's SyncBatchNorm on
CUDA; on CPU, where PyTorch ships SyncBatchNorm kernels for GPUs only, ``CrossRankBatchNorm2d``
does the same computation with two differentiable all-reduces (used by the gloo tests).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the ranks (``size == 1``: a single process)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world() -> World:
    """The world torchrun describes in the environment (one process when the variables are absent)."""
    return World(rank=int(os.environ.get("RANK", 0)), local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                 size=int(os.environ.get("WORLD_SIZE", 1)))


def is_distributed() -> bool:
    """True when a process group of more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> World:
    """The active world: from the process group when one is initialised, else a single process."""
    if not is_distributed():
        return World()
    return World(rank=dist.get_rank(), local_rank=env_world().local_rank, size=dist.get_world_size())


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes files and prints."""
    return world().is_main


def init(device: str | torch.device | None = None) -> torch.device:
    """Join torchrun's process group (when WORLD_SIZE > 1) and return this rank's device.

    Args:
        device: "cpu", "cuda", "cuda:1" or None (CUDA when present). Under torchrun the CUDA
            index is LOCAL_RANK, whatever index was asked for.
    """
    env = env_world()
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if env.size <= 1:
        return torch.device(device) if device is not None else torch.device(kind)
    chosen = torch.device("cuda", env.local_rank) if kind == "cuda" else torch.device(kind)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=chosen if chosen.type == "cuda" else None)
    return chosen


def teardown() -> None:
    """Leave the process group (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (no-op for one process)."""
    if is_distributed():
        dist.barrier()


def _comm_device() -> torch.device:
    """Where tensors for collectives live: the current GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_sums(values: Mapping[str, float]) -> dict[str, float]:
    """Each value summed over the ranks (float64); every rank must pass the same keys.

    One process: a plain copy of ``values``.
    """
    if not is_distributed():
        return {k: float(v) for k, v in values.items()}
    keys = sorted(values)
    packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(packed)
    return dict(zip(keys, packed.tolist()))


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (picklable; used for small records such as a card)."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (one process: ``[obj]``)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shard_indices(n: int) -> torch.Tensor:
    """This rank's share of ``range(n)``: every ``size``-th index from ``rank`` (all of it for one process)."""
    w = world()
    return torch.arange(w.rank, n, w.size)


def broadcast_buffers(modules: Iterable[nn.Module]) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    if not is_distributed():
        return
    with torch.no_grad():
        for module in modules:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)


def average_gradients(module: nn.Module) -> None:
    """Replace each parameter's gradient by its mean over the ranks (for modules outside DDP)."""
    if not is_distributed():
        return
    size = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(size)


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around a trainable module when distributed, else the module itself.

    The wrapper is only for the training forward pass; keep using the module for attacks,
    inversion, validation and saving.
    """
    if not is_distributed():
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) whose backward is all_reduce(SUM) of the incoming gradient: every rank's
    loss depends on every rank's input, so each input receives the gradients of all losses."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class CrossRankBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the whole batch across ranks (CPU).

    Same maths, state and gradients as ``nn.SyncBatchNorm``: mean and biased variance from
    all-reduced sums (differentiable, so the backward pass is synchronised too), running
    statistics updated with the unbiased variance of the global batch. Eval mode, or a single
    process, is plain BatchNorm. Float32 inputs (the CPU runs without autocast).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = (0, 2, 3)
        count = x.new_tensor([x.numel() / x.shape[1]])
        dist.all_reduce(count)
        mean = _SumOverRanks.apply(x.sum(dims)) / count
        centred = x - mean[None, :, None, None]
        var = _SumOverRanks.apply(centred.pow(2).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(unbiased.detach(), factor)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def _cross_rank_copy(bn: nn.BatchNorm2d) -> CrossRankBatchNorm2d:
    """A CrossRankBatchNorm2d sharing ``bn``'s parameters and buffers (optimizers keep working)."""
    out = CrossRankBatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if bn.affine:
        out.weight, out.bias = bn.weight, bn.bias
    if bn.track_running_stats:
        out.running_mean, out.running_var = bn.running_mean, bn.running_var
        out.num_batches_tracked = bn.num_batches_tracked
    out.train(bn.training)
    return out


def _convert_cross_rank(module: nn.Module) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        return _cross_rank_copy(module)
    for name, child in module.named_children():
        module.add_module(name, _convert_cross_rank(child))
    return module


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """BatchNorm statistics over all ranks' images: ``nn.SyncBatchNorm`` on CUDA,
    ``CrossRankBatchNorm2d`` on CPU. Parameters and buffers are shared with the original layers,
    state-dict keys are unchanged; one process: the module unchanged.
    """
    if not is_distributed():
        return module
    on_cuda = any(p.is_cuda for p in module.parameters())
    return nn.SyncBatchNorm.convert_sync_batchnorm(module) if on_cuda else _convert_cross_rank(module)
