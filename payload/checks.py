#!/usr/bin/env python3
"""Small real workloads the validation suite runs in images and on bare hosts; each prints one JSON line.

    python3 checks.py matmul --framework torch|tensorflow [--device cuda|cpu]
        A matmul on the device, compared with the same matmul on the CPU in float64. Reports the device the
        framework actually used, so a silent fallback to the CPU shows.
    python3 checks.py dataloader [--workers 2] [--batch-mb 24] [--batches 16] [--timeout 30]
        A PyTorch DataLoader whose worker processes pass batches through /dev/shm, as training does.

The assertions are made by pytest on the host; this script only measures and reports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

SIZE = 1024


def matmul_torch(device: str) -> dict:
    import torch

    torch.manual_seed(0)
    a, b = torch.randn(SIZE, SIZE), torch.randn(SIZE, SIZE)
    expected = (a.double() @ b.double()).float()
    if device == "cuda" and not torch.cuda.is_available():
        return {"ok": False, "reason": "torch.cuda.is_available() is False"}
    result = a.to(device) @ b.to(device)
    if device == "cuda":
        torch.cuda.synchronize()
    used = str(result.device)
    error = float((result.cpu() - expected).norm() / expected.norm())
    return {"ok": True, "device_used": used, "relative_error": error}


def matmul_tensorflow(device: str) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    if device == "cuda" and not tf.config.list_physical_devices("GPU"):
        return {"ok": False, "reason": "tf.config lists no GPU"}
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((SIZE, SIZE), dtype=np.float32), rng.standard_normal((SIZE, SIZE), dtype=np.float32)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    with tf.device("/GPU:0" if device == "cuda" else "/CPU:0"):
        result = tf.matmul(tf.constant(a), tf.constant(b))
    used = result.device.rsplit("/", 1)[-1].split(":")[-2:]  # e.g. ['GPU', '0']
    error = float(np.linalg.norm(result.numpy() - expected) / np.linalg.norm(expected))
    return {"ok": True, "device_used": ":".join(used).lower().replace("gpu", "cuda"), "relative_error": error}


def dataloader(workers: int, batch_mb: int, batches: int, timeout: int) -> dict:
    import torch
    from torch.utils.data import DataLoader, Dataset

    elements = batch_mb * 1024 * 1024 // 4

    class Noise(Dataset):
        def __len__(self):
            return batches

        def __getitem__(self, index):
            return torch.randn(elements)

    seen = 0
    # A worker that cannot allocate its batch in /dev/shm dies in a background thread and the loader waits
    # forever: the timeout turns that hang into an error.
    loader = DataLoader(Noise(), batch_size=None, num_workers=workers, prefetch_factor=2, timeout=timeout)
    for batch in loader:
        seen += int(batch.numel() > 0)
    return {"ok": seen == batches, "batches": seen, "workers": workers, "batch_mb": batch_mb}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    matmul = commands.add_parser("matmul")
    matmul.add_argument("--framework", choices=["torch", "tensorflow"], required=True)
    matmul.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    loader = commands.add_parser("dataloader")
    loader.add_argument("--workers", type=int, default=2)
    loader.add_argument("--batch-mb", type=int, default=24)
    loader.add_argument("--batches", type=int, default=16)
    loader.add_argument("--timeout", type=int, default=30, help="seconds to wait for one batch")
    args = parser.parse_args(argv)
    try:
        if args.command == "matmul":
            check = matmul_torch if args.framework == "torch" else matmul_tensorflow
            result = check(args.device)
        else:
            result = dataloader(args.workers, args.batch_mb, args.batches, args.timeout)
    except Exception as err:  # reported, not raised: the host decides and shows the reason
        result = {"ok": False, "reason": f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"}
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
