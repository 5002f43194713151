"""A real torch.distributed program for steps on several nodes (shipped in the torch image).

``python3 -m torch.distributed.run -m tests.realnode.torch_steps`` (torchrun) on every rank: each
process adds its rank + 1 with an all-reduce over gloo and prints the sum, which every process
must agree on: ``world * (world + 1) / 2``. torchrun reads its nodes, this node's rank, the
processes per node and rank 0's address from the ``PET_`` variables the operator sets.
"""

from __future__ import annotations

import os
import socket
import sys


def allreduce() -> float:
    """Join the others (env://), all-reduce rank + 1, print and return the sum."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)
    expected = world * (world + 1) / 2
    print(
        f"rank {rank} of {world} on {socket.gethostname()} (node rank "
        f"{os.environ.get('NODE_RANK')}, master {os.environ.get('MASTER_ADDR')}): "
        f"all_reduce sum {total.item():g}, expected {expected:g}",
        flush=True,
    )
    dist.destroy_process_group()
    if total.item() != expected:
        sys.exit(3)
    return float(total.item())


if __name__ == "__main__":
    allreduce()
