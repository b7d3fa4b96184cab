"""The collective helpers on 2 gloo ranks, checked on each rank by tests/ranks_plan.py under
torch.distributed.run (for tests/test_distributed.py).

``check_all`` raises an AssertionError on the first helper that disagrees with its one-process meaning.
"""
import copy

import torch
from torch import nn

from cafe_core import distributed


def check_reductions(rank: distributed.World) -> None:
    assert distributed.reduce_sums({"hits": rank.rank + 1, "seen": 0.5}) == {"hits": 3.0, "seen": 1.0}
    assert distributed.gather_objects(rank.rank) == [0, 1]
    assert distributed.broadcast_object({"from": rank.rank}) == {"from": 0}
    shards = distributed.gather_objects(distributed.shard_indices(5).tolist())
    assert sorted(shards[0] + shards[1]) == list(range(5)) and not set(shards[0]) & set(shards[1])


def check_cross_rank_batchnorm(rank: distributed.World) -> None:
    """Each rank holds every other image; the pair must compute BatchNorm of the whole batch."""
    torch.manual_seed(0)
    images = torch.randn(6, 3, 4, 4, dtype=torch.float64) * 2 + 1
    weights = torch.randn(6, 3, 4, 4, dtype=torch.float64)  # a loss that is not symmetric in the images
    reference = nn.BatchNorm2d(3).double()
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-0.5, 0.5)
    synced = distributed.sync_batchnorm(nn.Sequential(copy.deepcopy(reference)))
    assert isinstance(synced[0], distributed.CrossRankBatchNorm2d)
    whole = images.clone().requires_grad_(True)
    expected = reference(whole)
    (expected * weights).sum().backward()
    mine = images[rank.rank::2].clone().requires_grad_(True)
    out = synced(mine)
    (out * weights[rank.rank::2]).sum().backward()  # summed over the ranks: the reference loss
    torch.testing.assert_close(out.detach(), expected.detach()[rank.rank::2], rtol=0, atol=1e-12)
    torch.testing.assert_close(mine.grad, whole.grad[rank.rank::2], rtol=0, atol=1e-12)
    for name, param in synced[0].named_parameters():
        total = param.grad.clone()
        torch.distributed.all_reduce(total)
        torch.testing.assert_close(total, getattr(reference, name).grad, rtol=0, atol=1e-12)


def check_running_statistics(rank: distributed.World) -> None:
    """One training pass: the running mean and variance are those of the whole batch."""
    torch.manual_seed(1)
    images = torch.rand(8, 2, 3, 3, dtype=torch.float64) * 3
    reference = nn.BatchNorm2d(2).double()
    synced = distributed.sync_batchnorm(nn.Sequential(copy.deepcopy(reference)))
    with torch.no_grad():
        reference(images)
        synced(images[rank.rank::2])
    for name, buffer in reference.named_buffers():
        torch.testing.assert_close(dict(synced[0].named_buffers())[name], buffer, rtol=0, atol=1e-12)


def check_gradient_averaging(rank: distributed.World) -> None:
    net = nn.Linear(2, 1).double()
    for p in net.parameters():
        p.grad = torch.full_like(p, float(rank.rank))
    distributed.average_gradients(net)
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in net.parameters())
    with torch.no_grad():
        net.weight.fill_(float(rank.rank))
    bn = nn.BatchNorm2d(1)
    with torch.no_grad():
        bn.running_mean.fill_(float(rank.rank + 7))
    distributed.broadcast_buffers([bn])
    assert float(bn.running_mean) == 7.0
    assert isinstance(distributed.wrap(nn.Linear(2, 2), torch.device("cpu")), nn.parallel.DistributedDataParallel)


def check_all(world: distributed.World) -> None:
    """Every check above, then a barrier; prints one line per rank."""
    assert world.size == 2 and distributed.is_distributed()
    check_reductions(world)
    check_cross_rank_batchnorm(world)
    check_running_statistics(world)
    check_gradient_averaging(world)
    distributed.barrier()
    print(f"rank {world.rank}: all collective helpers agree with one process", flush=True)
