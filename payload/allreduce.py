#!/usr/bin/env python3
"""A multi-node smoke test of torch.distributed: every rank joins, all-reduces a tensor, trains a few DDP steps,
and checks that all ranks end with the same weights. gloo on CPU, NCCL where every rank has a GPU (the same code).

    python3 allreduce.py [--steps 5] [--out /runs/RUN/allreduce.json]

The rank, world size and rendezvous come from the environment torchrun and labstack's Slurm jobs set: RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT. Each rank prints one JSON line; rank 0 also writes --out. Exit 0
when the sum and the weights agree, 1 when not, 2 on bad input. Standard library plus torch.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import sys
import time
from pathlib import Path

TIMEOUT_S = 120


def environment() -> tuple[int, int, int]:
    try:
        rank, world, local = (int(os.environ[n]) for n in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    except (KeyError, ValueError) as missing:
        raise SystemExit(
            f"labstack: {missing} missing or not a number: run under torchrun or a labstack Slurm job"
        ) from None
    return rank, world, local


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="DDP training steps (default: 5)")
    parser.add_argument("--out", type=Path, default=None, help="rank 0 writes the ranks' results here as JSON")
    args = parser.parse_args(argv)
    rank, world, local = environment()

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local % torch.cuda.device_count()}" if cuda else "cpu")
    backend = "nccl" if cuda else "gloo"
    began = time.monotonic()
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    joined_s = time.monotonic() - began

    tensor = torch.full((4,), float(rank + 1), device=device)
    dist.all_reduce(tensor)
    expected = world * (world + 1) / 2

    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = DistributedDataParallel(torch.nn.Linear(16, 4).to(device), device_ids=[device.index] if cuda else None)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1000 + rank)  # each rank its own data: the gradients must be averaged
    for _ in range(args.steps):
        inputs = torch.randn(32, 16, generator=generator).to(device)
        loss = model(inputs).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(weights) for _ in range(world)]
    dist.all_gather(gathered, weights)
    same_weights = all(torch.equal(gathered[0], other) for other in gathered)

    result = {
        "rank": rank, "world_size": world, "host": socket.gethostname(), "node": os.environ.get("SLURMD_NODENAME"),
        "backend": backend, "device": str(device), "all_reduce": tensor.tolist(), "expected": expected,
        "sum_ok": bool(torch.all(tensor == expected)), "ddp_steps": args.steps, "same_weights": same_weights,
        "join_s": round(joined_s, 3),
    }  # fmt: skip
    results = [None] * world
    dist.all_gather_object(results, result)
    dist.destroy_process_group()
    print(json.dumps(result), flush=True)
    if rank == 0 and args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if result["sum_ok"] and same_weights else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
