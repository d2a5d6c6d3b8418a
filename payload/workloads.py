"""The benchmark's workloads, each known once: what it is called, its unit, its sizes, and the time a researcher
would wait for it. bench.py (in the images and on bare GPU hosts) measures them; the host's report describes
them from the same table (labstack.payload loads this file). Standard library only.

A workload's `sizes` are what must be equal for two results to be compared (a GPU reference is matched to a
CPU result by them). matmul is compared by GFLOP/s whatever its size, so its size is a `shape` per device.
"""

from __future__ import annotations

MNIST_EPOCH = 60_000  # training images in one MNIST epoch
IMAGENET_EPOCH = 1_281_167  # training images in one ImageNet-1k epoch
TRAINING_TOKENS = 100_000_000

WORKLOADS = {
    "matmul": {
        "title": "Large matrix multiply (GEMM)",
        "unit": "GFLOP/s",
        "sizes": {"quick": {}, "full": {}},
        "shape": {"cpu": {"n": 2048, "inner": 1}, "cuda": {"n": 8192, "inner": 10}},
    },
    "mnist_cnn": {
        "title": "Small CNN on MNIST (28x28x1, batch 128)",
        "unit": "samples/s",
        "sizes": {"quick": {"batch": 128}, "full": {"batch": 128}},
        "wait": ("10 epochs of MNIST", 10 * MNIST_EPOCH),
    },
    "resnet": {
        "title": "ResNet",
        "unit": "images/s",
        "sizes": {
            "quick": {"depth": 18, "image_size": 112, "batch": 16, "classes": 1000},
            "full": {"depth": 18, "image_size": 224, "batch": 32, "classes": 1000},
        },
        "wait": ("an ImageNet-sized epoch, 1.28 M images", IMAGENET_EPOCH),
    },
    "transformer": {
        "title": "Transformer encoder (BERT-like)",
        "unit": "sequences/s",
        "sizes": {
            "quick": {"layers": 4, "hidden": 384, "heads": 6, "ffn": 1536, "seq": 128, "batch": 8},
            "full": {"layers": 12, "hidden": 768, "heads": 12, "ffn": 3072, "seq": 128, "batch": 8},  # BERT-base
        },
        "wait": ("100 M training tokens", TRAINING_TOKENS),  # in tokens: sequences x seq
    },
}


def title(workload: str, config: dict | None = None) -> str:
    """A workload's heading; the lab's own model (bench.py --model, workload "model") is named by its spec."""
    if workload not in WORKLOADS:
        return f"your model {(config or {}).get('spec', workload)}"
    return WORKLOADS[workload]["title"]


def describe(workload: str, config: dict) -> str:
    """The size of a result, as the report's tables give it."""
    if workload not in WORKLOADS:  # the lab's own model: its name or spec, and its batch
        return f"{config.get('name') or config.get('spec', workload)}, batch {config.get('batch', '?')}"
    if workload == "resnet":
        return f"ResNet-{config['depth']}, {config['image_size']}x{config['image_size']}, batch {config['batch']}"
    if workload == "transformer":
        return (
            f"{config['layers']} layers x {config['hidden']} hidden, {config['heads']} heads, seq {config['seq']}, "
            f"batch {config['batch']}"
        )
    if workload == "mnist_cnn":
        return f"batch {config['batch']}"
    return ""


def samples_per_unit(workload: str, config: dict) -> float:
    """How many of the `wait` amount one unit of throughput is: a transformer sequence is `seq` tokens."""
    return float(config["seq"]) if workload == "transformer" else 1.0


def wait_seconds(workload: str, config: dict, throughput: float) -> tuple[str, float] | None:
    """(what, seconds): how long the workload's yardstick takes at `throughput`, None for matmul; for the lab's own
    model, one epoch of its data when it said how many samples that is."""
    wait = WORKLOADS.get(workload, {}).get("wait")
    if workload not in WORKLOADS and config.get("samples_per_epoch"):
        wait = (f"one epoch of your data, {config['samples_per_epoch']:,} samples", config["samples_per_epoch"])
    if not wait or throughput <= 0:
        return None
    what, amount = wait
    return what, amount / (throughput * samples_per_unit(workload, config))
