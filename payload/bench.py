#!/usr/bin/env python3
"""labstack benchmark workloads: the same training steps in PyTorch and TensorFlow, timed the way
tf_cnn_benchmarks and TorchBench time them. Prints one JSON document on stdout; progress goes to stderr as
JSON lines ({"event": ...}) that `invoke benchmark` turns into a progress bar.

    python3 bench.py --framework torch|tensorflow [--workloads matmul,mnist_cnn,resnet,transformer]
                     [--quick] [--device cpu|cuda] [--threads N] [--model package.module:function]

--model times the training steps of the lab's own PyTorch model the same way: the function, imported from
sys.path (PYTHONPATH), returns (model, (inputs, targets), loss) or a dict with those keys (and optionally
samples_per_epoch and name); see docs/benchmark.md. With --model, the built-in workloads run only when
--workloads names them.

Runs inside a labstack image (/opt/labstack/payload/bench.py) and on a bare host with nothing but the
framework installed (a GPU host without Docker or network: `python3 payload/bench.py --device cuda ...`).
Method: synthetic random-normal data with fixed seeds; warm-up steps not counted; then timed steps until both
a minimum count and a minimum time are reached; every step is timed on its own, with CUDA synchronised (torch)
or the step's result fetched (TensorFlow) before each clock read; the device that ran is asserted from the
framework; CPU threads follow the container's CPU quota (probe.py's usable_cpus).
Exit codes: 0 done, 1 the --model's training step failed in every setting, 2 bad arguments or a --model that
cannot be used (one `bench.py:` line on stderr), 5 the requested device is not usable, 130 interrupted (partial
results).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import importlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import probe  # the payload's probes and workload table, beside this file
from workloads import MNIST_EPOCH
from workloads import WORKLOADS as WORKLOAD_TABLE

SCHEMA = "labstack-bench-run/1"
FRAMEWORKS = ("torch", "tensorflow")
WORKLOADS = tuple(WORKLOAD_TABLE)
DEVICES = ("cpu", "cuda")
CONFIGS = {mode: {w: spec["sizes"][mode] for w, spec in WORKLOAD_TABLE.items() if w != "matmul"} for mode in
           ("quick", "full")}  # fmt: skip
MATMUL_SHAPE = WORKLOAD_TABLE["matmul"]["shape"]
# warm-up steps (not counted), then at least min_steps and min_seconds of timed steps, at most max_seconds.
TIMING = {
    "quick": {"warmup": 2, "min_steps": 8, "min_seconds": 2.5, "max_seconds": 20.0},
    "full": {"warmup": 5, "min_steps": 20, "min_seconds": 8.0, "max_seconds": 90.0},
}
HEAVY_FULL = {"warmup": 2, "min_steps": 6, "min_seconds": 8.0, "max_seconds": 120.0}  # resnet/transformer, full
MODEL = "model"  # the workload name of the lab's own model (--model), beside the built-in ones
UNITS = {**{w: spec["unit"] for w, spec in WORKLOAD_TABLE.items()}, MODEL: "samples/s"}
# package.module:function, as in Python's entry points; a top-level module (train:build) is a package of one
MODEL_SPEC = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*\Z")
MODEL_KEYS = ("model", "batch", "loss")
MODEL_OPTIONAL = ("samples_per_epoch", "name")
RESNET_STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class DeviceUnusable(Exception):
    """The requested device cannot be used by this framework here (exit 5)."""


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), file=sys.stderr, flush=True)


def median_spread(times: list[float]) -> dict:
    ordered = sorted(times)
    median = statistics.median(ordered)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [median, median, median]
    return {
        "median_s": median,
        "min_s": ordered[0],
        "max_s": ordered[-1],
        "spread_range": (ordered[-1] - ordered[0]) / median,
        "spread_iqr": (quartiles[2] - quartiles[0]) / median,
    }


def timed_steps(step, sync, timing: dict) -> list[float]:
    """Run `step` warm-up times untimed, then time each step (sync before every clock read) until both the
    minimum count and the minimum time are reached, stopping at max_seconds."""
    for _ in range(timing["warmup"]):
        step()
    sync()
    times: list[float] = []
    started = time.perf_counter()
    while True:
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        if len(times) >= timing["min_steps"] and elapsed >= timing["min_seconds"]:
            break
        if elapsed >= timing["max_seconds"] and len(times) >= 3:
            break
    return times


# ------------------------------------------------------------------------------------ the lab's own model


class UserModelError(Exception):
    """The lab's --model cannot be used: a spec not of the form package.module:function, a module that does not
    import, a function that is missing, raises or returns the wrong thing (exit 2). The message is one line that
    names the spec and what was wrong."""


def one_line(err: BaseException) -> str:
    """An exception as its type and the first line of its message: what a one-line failure quotes."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def parse_model_spec(spec: str) -> tuple[str, str]:
    """(module, function) of a --model spec."""
    if not MODEL_SPEC.match(spec):
        raise UserModelError(f"--model {spec!r}: give package.module:function, e.g. mylab.model:build (a function "
                             "that returns the model, a batch and a loss)")  # fmt: skip
    module, function = spec.split(":")
    return module, function


def load_model_function(spec: str):
    """The function a --model spec names, imported from sys.path; every failure is a UserModelError that quotes
    the lab's own exception."""
    module_name, name = parse_model_spec(spec)
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as err:  # the lab's code: whatever its import raises is reported, not raised
        where = os.environ.get("PYTHONPATH") or "not set"
        raise UserModelError(f"--model {spec}: cannot import {module_name}: {one_line(err)} (PYTHONPATH: {where}; "
                             "then the installed packages)") from None  # fmt: skip
    function = getattr(module, name, None)
    if function is None:
        raise UserModelError(f"--model {spec}: {module_name} ({getattr(module, '__file__', '?')}) has no {name}")
    if not callable(function):
        raise UserModelError(f"--model {spec}: {module_name}.{name} is {kind_of(function)}, not a function")
    return function


def call_model_function(spec: str, function):
    try:
        return function()
    except (Exception, SystemExit) as err:
        raise UserModelError(f"--model {spec}: calling it raised {one_line(err)}") from None


def kind_of(value) -> str:
    """What a value is, for a message: "a tuple of 2", "an int", "None"."""
    if value is None:
        return "None"
    name = type(value).__name__
    article = "an" if name[0].lower() in "aeiou" else "a"
    return f"{article} {name} of {len(value)}" if isinstance(value, (tuple, list)) else f"{article} {name}"


@dataclass
class UserModel:
    """The lab's model, its batch and its loss, checked; `config` is what the results record as its size."""

    model: object
    inputs: tuple
    targets: object
    loss: object
    config: dict
    initial: dict = field(default_factory=dict)  # the model's starting weights: every setting starts from them

    @property
    def image_like(self) -> bool:
        """Some input is 4-D (N, C, H, W): channels-last can apply."""
        return any(len(t.shape) == 4 for t in self.inputs)


def unpack_model(spec: str, returned, is_tensor) -> UserModel:
    """What a --model function returned: (model, (inputs, targets), loss), or a dict with model, batch and loss and
    optionally samples_per_epoch and name. `inputs` is a tensor or a tuple of tensors (the model is called as
    model(*inputs)); the batch size is the first input's first dimension. Anything else is a UserModelError."""
    expected = "return (model, (inputs, targets), loss) or a dict with model, batch and loss"
    extra: dict = {}
    if isinstance(returned, dict):
        missing = [k for k in MODEL_KEYS if k not in returned]
        unknown = sorted(str(k) for k in returned if k not in (*MODEL_KEYS, *MODEL_OPTIONAL))
        if missing or unknown:
            wrong = (f"lacks {', '.join(missing)}" if missing else "") + (" and " if missing and unknown else "")
            wrong += f"has unknown keys {', '.join(unknown)}" if unknown else ""
            raise UserModelError(f"--model {spec}: the dict it returned {wrong}: {expected} (optional: "
                                 f"{', '.join(MODEL_OPTIONAL)})")  # fmt: skip
        model, batch, loss = (returned[k] for k in MODEL_KEYS)
        extra = {k: returned[k] for k in MODEL_OPTIONAL if returned.get(k) is not None}
    elif isinstance(returned, (tuple, list)) and len(returned) == 3:
        model, batch, loss = returned
    else:
        raise UserModelError(f"--model {spec}: it returned {kind_of(returned)}: {expected}")
    if not callable(model):
        raise UserModelError(f"--model {spec}: the model is {kind_of(model)}, not a callable model")
    if not callable(loss):
        raise UserModelError(f"--model {spec}: the loss is {kind_of(loss)}: give a function loss(output, targets)")
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise UserModelError(f"--model {spec}: the batch is {kind_of(batch)}: give (inputs, targets)")
    inputs, targets = batch
    inputs = (inputs,) if is_tensor(inputs) else inputs
    if not isinstance(inputs, (tuple, list)) or not inputs or not all(is_tensor(t) for t in inputs):
        raise UserModelError(f"--model {spec}: the inputs are {kind_of(inputs)}: give a tensor or a tuple of tensors")
    if not len(inputs[0].shape):
        raise UserModelError(f"--model {spec}: the first input is 0-d: its first dimension must be the batch")
    samples = extra.get("samples_per_epoch")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples <= 0):
        raise UserModelError(f"--model {spec}: samples_per_epoch is {samples!r}: give a whole number above 0")
    if "name" in extra and not isinstance(extra["name"], str):
        raise UserModelError(f"--model {spec}: name is {kind_of(extra['name'])}: give text")
    config = {"spec": spec, "batch": int(inputs[0].shape[0]), **extra}
    return UserModel(model, tuple(inputs), targets, loss, config)


def load_user_model(spec: str, backend) -> UserModel:
    """Import and call the lab's function, check what it returned, and hand model and batch to the backend."""
    if not hasattr(backend, "adopt_model"):
        raise UserModelError(f"--model {spec}: the lab model runs PyTorch models for now: give --framework torch")
    function = load_model_function(spec)
    backend.seed()
    user = unpack_model(spec, call_model_function(spec, function), backend.is_tensor)
    backend.adopt_model(user)
    return user


# ---------------------------------------------------------------------------------------------- PyTorch


class TorchBackend:
    name = "torch"

    def __init__(self, device: str, threads: int) -> None:
        import torch

        self.torch = torch
        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # already set in this process
            torch.set_num_interop_threads(1)  # one training step at a time: no inter-op parallelism to use
        # fp32 means fp32 in both frameworks: no TF32 tensor cores (cuDNN convolutions default to them)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        if device == "cuda" and not torch.cuda.is_available():
            raise DeviceUnusable(f"torch {torch.__version__} cannot use CUDA here (torch.cuda.is_available() is False)")
        self.device = torch.device("cuda:0" if device == "cuda" else "cpu")
        self.kind = device

    def threads(self) -> dict:
        return {"intra_op": self.torch.get_num_threads(), "inter_op": self.torch.get_num_interop_threads()}

    def set_threads(self, count: int) -> None:
        self.torch.set_num_threads(count)

    def bf16_supported(self) -> bool:
        return self.kind != "cuda" or self.torch.cuda.is_bf16_supported()

    def device_name(self) -> str:
        if self.kind == "cuda":
            return self.torch.cuda.get_device_name(self.device)
        return "cpu"

    def extra(self) -> dict:
        config = self.torch.__config__.show()
        blas = re.search(r"BLAS_INFO=(\w+)", config)
        return {
            "blas": blas.group(1) if blas else None,
            "mkldnn": self.torch.backends.mkldnn.is_available(),
            "tf32": self.torch.backends.cudnn.allow_tf32 or self.torch.backends.cuda.matmul.allow_tf32,
        }

    def sync(self) -> None:
        if self.kind == "cuda":
            self.torch.cuda.synchronize()

    def assert_device(self, tensor) -> str:
        if tensor.device.type != self.kind:
            raise AssertionError(f"torch ran on {tensor.device}, not {self.kind}")
        return str(tensor.device)

    def seed(self) -> None:
        self.torch.manual_seed(0)

    def matmul(self, n: int, inner: int, precision: str):
        torch = self.torch
        dtype = torch.float32 if precision == "fp32" else torch.bfloat16
        a = torch.randn(n, n, device=self.device, dtype=dtype)
        b = torch.randn(n, n, device=self.device, dtype=dtype)
        out = {}

        def step():
            for _ in range(inner):
                out["c"] = a @ b

        step()
        return step, self.assert_device(out["c"])

    def model(self, workload: str, config: dict):
        nn = self.torch.nn
        if workload == "mnist_cnn":
            return nn.Sequential(
                nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                nn.Linear(12 * 12 * 64, 128), nn.ReLU(), nn.Linear(128, 10),
            )  # fmt: skip
        if workload == "resnet":
            return torch_resnet(nn, config)
        layer = nn.TransformerEncoderLayer(
            config["hidden"], config["heads"], config["ffn"], dropout=0.0, activation="gelu", batch_first=True
        )
        encoder = nn.TransformerEncoder(layer, config["layers"], enable_nested_tensor=False)
        return torch_first_token_classifier(nn, encoder, nn.Linear(config["hidden"], 2))

    def train_step(self, workload: str, config: dict, setting: dict):
        torch = self.torch
        model = self.model(workload, config).to(self.device)
        x, y = synthetic_batch(
            workload,
            config,
            normal=lambda shape: torch.randn(*shape, device=self.device),
            integers=lambda high, n: torch.randint(0, high, (n,), device=self.device),
            channels_last=False,
        )
        if setting.get("channels_last"):  # NHWC in memory, the layout oneDNN's and cuDNN's fast kernels want
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        loss_fn = torch.nn.CrossEntropyLoss()
        return self.sgd_steps(model, (x,), y, lambda logits, y: loss_fn(logits.float(), y), setting)

    def sgd_steps(self, model, inputs: tuple, targets, loss_fn, setting: dict):
        """The training step every torch workload times, the lab's own model too: SGD (lr 0.01, momentum 0.9), the
        forward pass and the loss under bf16 autocast when the setting says so. It runs once here, and the device
        it ran on is asserted."""
        torch = self.torch
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        amp = setting["precision"] == "amp_bf16"
        out = {}

        def step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(model(*inputs), targets)
            if not isinstance(loss, torch.Tensor) or loss.ndim:
                got = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else kind_of(loss)
                raise TypeError(f"loss(output, targets) returned {got}: it must return a scalar tensor")
            loss.backward()
            optimizer.step()
            out["loss"] = loss

        step()
        self.sync()
        where = self.assert_device(out["loss"])
        if next(model.parameters()).device.type != self.kind:
            raise AssertionError(f"torch model parameters are not on {self.kind}")
        return step, where

    def is_tensor(self, value) -> bool:
        return isinstance(value, self.torch.Tensor)

    def adopt_model(self, user: UserModel) -> None:
        """The lab's model and batch on the device, once, and the model's starting weights kept."""
        torch = self.torch
        spec = user.config["spec"]
        if not isinstance(user.model, torch.nn.Module):
            raise UserModelError(f"--model {spec}: the model is {kind_of(user.model)}, not a torch.nn.Module")
        try:
            user.model = user.model.to(self.device)
            user.inputs = tuple(t.to(self.device) for t in user.inputs)
            user.targets = to_device(user.targets, self.device, torch.Tensor)
            user.initial = copy.deepcopy(user.model.state_dict())
        except Exception as err:  # the lab's model: what moving it raises is reported, not raised
            raise UserModelError(f"--model {spec}: moving it to {self.device} raised {one_line(err)}") from None

    def model_step(self, user: UserModel, setting: dict):
        """The lab's model in the setting's memory layout, from its starting weights, with a new optimizer."""
        torch = self.torch
        model = user.model
        model.load_state_dict(user.initial)
        model.train()
        layout = torch.channels_last if setting.get("channels_last") else torch.contiguous_format
        model.to(memory_format=layout)  # only 4-D parameters change
        inputs = tuple(t.contiguous(memory_format=layout) if t.dim() == 4 else t for t in user.inputs)
        return self.sgd_steps(model, inputs, user.targets, user.loss, setting)


def to_device(value, device, tensor_type):
    """Tensors moved to the device, inside tuples, lists and dicts too (the lab's targets can be any of them)."""
    if isinstance(value, tensor_type):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device, tensor_type) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device, tensor_type) for k, v in value.items()}
    return value


def torch_resnet(nn, config: dict):
    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
            )  # fmt: skip
            self.shortcut = nn.Identity()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.relu(self.body(x) + self.shortcut(x))

    layers = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
    ]  # fmt: skip
    cin = 64
    for index, blocks in enumerate(RESNET_STAGES[config["depth"]]):
        cout = 64 * 2**index
        for block in range(blocks):
            layers.append(Block(cin, cout, 2 if block == 0 and index > 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, config["classes"])]
    return nn.Sequential(*layers)


def torch_first_token_classifier(nn, encoder, head):
    """An encoder stack with a classification head on the first token (BERT's [CLS] position)."""

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.head = encoder, head

        def forward(self, x):
            return self.head(self.encoder(x)[:, 0])

    return Classifier()


def synthetic_batch(workload: str, config: dict, normal, integers, channels_last: bool):
    """Random-normal inputs (never zeros) and random labels, shaped for the workload and the framework."""
    batch = config["batch"]
    if workload == "mnist_cnn":
        shape, classes = ((batch, 28, 28, 1) if channels_last else (batch, 1, 28, 28)), 10
    elif workload == "resnet":
        size = config["image_size"]
        shape, classes = ((batch, size, size, 3) if channels_last else (batch, 3, size, size)), config["classes"]
    else:
        shape, classes = (batch, config["seq"], config["hidden"]), 2
    return normal(shape), integers(classes, batch)


# ------------------------------------------------------------------------------------------- TensorFlow


class TensorflowBackend:
    name = "tensorflow"

    def __init__(self, device: str, threads: int) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        self.tf = tf
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.experimental.enable_tensor_float_32_execution(False)  # fp32 means fp32, as in torch
        gpus = tf.config.list_physical_devices("GPU")
        if device == "cuda" and not gpus:
            raise DeviceUnusable(f"tensorflow {tf.__version__} lists no GPU here (built with CUDA: "
                                 f"{tf.test.is_built_with_cuda()})")  # fmt: skip
        self.kind = device
        self.tf_device = "/GPU:0" if device == "cuda" else "/CPU:0"

    def threads(self) -> dict:
        threading = self.tf.config.threading
        return {
            "intra_op": threading.get_intra_op_parallelism_threads(),
            "inter_op": threading.get_inter_op_parallelism_threads(),
        }

    def device_name(self) -> str:
        if self.kind == "cuda":
            gpu = self.tf.config.list_physical_devices("GPU")[0]
            return self.tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
        return "cpu"

    def set_threads(self, count: int) -> None:
        raise NotImplementedError("TensorFlow fixes its thread pools when it starts")

    def bf16_supported(self) -> bool:
        return True

    def extra(self) -> dict:
        import keras

        return {"keras": keras.__version__, "tf32": self.tf.config.experimental.tensor_float_32_execution_enabled()}

    def sync(self) -> None:
        pass  # every step returns a scalar that is fetched (.numpy()), which waits for the device

    def assert_device(self, tensor) -> str:
        placed = tensor.device
        expected = "GPU" if self.kind == "cuda" else "CPU"
        if f"device:{expected}:" not in placed:
            raise AssertionError(f"tensorflow ran on {placed}, not {expected}")
        return placed

    def fetched_step(self, compiled, *args):
        """A step that runs `compiled` on the device and fetches its result, which waits for the device."""

        def step():
            with self.tf.device(self.tf_device):
                result = compiled(*args)
            result.numpy()
            return result

        return step

    def seed(self) -> None:
        import keras

        keras.utils.set_random_seed(0)

    def matmul(self, n: int, inner: int, precision: str):
        tf = self.tf
        dtype = tf.float32 if precision == "fp32" else tf.bfloat16
        with tf.device(self.tf_device):
            a = tf.cast(tf.random.normal((n, n), seed=1), dtype)
            b = tf.cast(tf.random.normal((n, n), seed=2), dtype)

        @tf.function
        def product(a, b):
            total = tf.constant(0.0)
            for _ in tf.range(inner):  # a graph loop: grappler would merge identical matmuls written out
                total += tf.cast(tf.reduce_sum(tf.linalg.matmul(a, b)), tf.float32)
            return total

        step = self.fetched_step(product, a, b)
        return step, self.assert_device(step())

    def model(self, workload: str, config: dict):
        import keras
        from keras import layers

        if workload == "mnist_cnn":
            return keras.Sequential([
                keras.Input((28, 28, 1)), layers.Conv2D(32, 3, activation="relu"),
                layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(),
                layers.Dense(128, activation="relu"), layers.Dense(10, dtype="float32"),
            ])  # fmt: skip
        if workload == "resnet":
            return keras_resnet(keras, layers, config)
        inputs = keras.Input((config["seq"], config["hidden"]))
        x = inputs
        for _ in range(config["layers"]):
            attention = layers.MultiHeadAttention(config["heads"], config["hidden"] // config["heads"])(x, x)
            x = layers.LayerNormalization(epsilon=1e-5)(x + attention)
            feed = layers.Dense(config["hidden"])(layers.Dense(config["ffn"], activation="gelu")(x))
            x = layers.LayerNormalization(epsilon=1e-5)(x + feed)
        outputs = layers.Dense(2, dtype="float32")(x[:, 0])
        return keras.Model(inputs, outputs)

    def train_step(self, workload: str, config: dict, setting: dict):
        tf = self.tf
        import keras

        mixed = setting["precision"] == "amp_bf16"
        keras.mixed_precision.set_global_policy("mixed_bfloat16" if mixed else "float32")
        with tf.device(self.tf_device):
            model = self.model(workload, config)
            x, y = synthetic_batch(workload, config, lambda shape: tf.random.normal(shape, seed=3),
                                   lambda high, n: tf.random.uniform((n,), 0, high, tf.int32, seed=4),
                                   channels_last=True)  # fmt: skip
            optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
            optimizer.build(model.trainable_variables)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function
        def train(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, tf.cast(model(x, training=True), tf.float32))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))  # noqa: B905 (bare hosts' Python < 3.10)
            return loss

        step = self.fetched_step(train, x, y)
        where = self.assert_device(step())
        self.assert_device(model.trainable_variables[0].value)  # a Keras 3 Variable wraps a tf.Variable
        return step, where


def keras_resnet(keras, layers, config: dict):
    def block(x, cout: int, stride: int):
        shortcut = x
        y = layers.Conv2D(cout, 3, stride, padding="same", use_bias=False)(x)
        y = layers.ReLU()(layers.BatchNormalization()(y))
        y = layers.BatchNormalization()(layers.Conv2D(cout, 3, padding="same", use_bias=False)(y))
        if stride != 1 or x.shape[-1] != cout:
            shortcut = layers.BatchNormalization()(layers.Conv2D(cout, 1, stride, use_bias=False)(x))
        return layers.ReLU()(y + shortcut)

    inputs = keras.Input((config["image_size"], config["image_size"], 3))
    x = layers.Conv2D(64, 7, 2, padding="same", use_bias=False)(inputs)
    x = layers.MaxPooling2D(3, 2, padding="same")(layers.ReLU()(layers.BatchNormalization()(x)))
    for index, blocks in enumerate(RESNET_STAGES[config["depth"]]):
        for b in range(blocks):
            x = block(x, 64 * 2**index, 2 if b == 0 and index > 0 else 1)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(config["classes"], dtype="float32")(x))


BACKENDS = {"torch": TorchBackend, "tensorflow": TensorflowBackend}


# --------------------------------------------------------------------------------------------- the run


# The settings a careful user tries, in this order, each kept only when it made the workload faster (the
# "best" of a workload is its fastest setting). The default is fp32, the framework's own memory layout and one
# thread per usable CPU.
KNOBS = {
    "threads": "one thread per physical core",
    "channels_last": "channels-last memory format",
    "bf16_autocast": "bf16 autocast",
    "bf16": "bf16 operands",
}
CNN_WORKLOADS = ("mnist_cnn", "resnet")


def bf16_hardware(cpu: dict) -> str | None:
    """The CPU feature that runs bf16 matrix maths natively, or None (bf16 would be converted, and slower)."""
    isa = set(cpu.get("isa") or [])
    if "amx_bf16" in isa:
        return "AMX"
    if "avx512_bf16" in isa:
        return "AVX512_BF16"
    return None


def plan_tuning(
    framework: str, workload: str, device: str, cpu: dict, threads: int, bf16_ok: bool, image_like: bool = False
):
    """(knobs to try after the default, in order; why the others are not tried). `threads` is the default count;
    `image_like`: the lab's model (workload "model") has a 4-D input, so channels-last can apply to it."""
    knobs: list[str] = []
    skipped: list[str] = []
    if workload == "matmul":
        return ["bf16"], skipped  # the GEMM is measured in both precisions wherever it runs
    physical = cpu.get("physical_cores")
    if device == "cpu":
        if physical and physical < threads:
            if framework == "torch":
                knobs.append("threads")
            else:
                skipped.append(f"threads: TensorFlow fixes its thread pools when it starts ({threads} threads)")
        else:
            skipped.append(f"threads: {threads}, already one per physical core")
    if workload == MODEL and not image_like:
        skipped.append("channels-last: no input of your model is 4-D (N, C, H, W)")
    elif workload in CNN_WORKLOADS or workload == MODEL:
        if framework == "torch":
            knobs.append("channels_last")
        else:
            skipped.append("channels-last: Keras convolutions are channels-last already")
    if device == "cuda":
        if bf16_ok:
            knobs.append("bf16_autocast")
        else:
            skipped.append("bf16 autocast: this GPU has no bf16 support")
    elif bf16_hardware(cpu):
        knobs.append("bf16_autocast")
    else:
        skipped.append("bf16 autocast: this CPU has neither AVX512_BF16 nor AMX, so bf16 would be converted to "
                       "fp32 and run slower")  # fmt: skip
    return knobs, skipped


def setting_of(workload: str, tuning: list[str], threads: int, cpu: dict) -> dict:
    """What a list of knobs means for a run: precision, memory layout and thread count."""
    if workload == "matmul":
        precision = "bf16" if "bf16" in tuning else "fp32"
    else:
        precision = "amp_bf16" if "bf16_autocast" in tuning else "fp32"
    return {
        "tuning": list(tuning),
        "precision": precision,
        "channels_last": "channels_last" in tuning,
        "threads": (cpu.get("physical_cores") or threads) if "threads" in tuning else threads,
    }


def measure(backend, workload: str, setting: dict, mode: str, device: str, user: UserModel | None = None) -> dict:
    backend.seed()
    precision = setting["precision"]
    timing = dict(HEAVY_FULL if mode == "full" and workload in ("resnet", "transformer") else TIMING[mode])
    default_threads = backend.threads()["intra_op"]
    if device == "cpu" and setting["threads"] != default_threads:
        backend.set_threads(setting["threads"])
    try:
        if workload == "matmul":
            shape = MATMUL_SHAPE[device]
            config: dict = {}
            step, where = backend.matmul(shape["n"], shape["inner"], precision)
            work = 2 * shape["n"] ** 3 * shape["inner"] / 1e9  # GFLOP per step
        elif workload == MODEL:
            config, shape = dict(user.config), {}
            step, where = backend.model_step(user, setting)
            work = config["batch"]
        else:
            config, shape = CONFIGS[mode][workload], {}
            step, where = backend.train_step(workload, config, setting)
            work = config["batch"]
        times = timed_steps(step, backend.sync, timing)
    finally:
        if device == "cpu" and setting["threads"] != default_threads:
            backend.set_threads(default_threads)
    stats = median_spread(times)
    result = {
        "workload": workload,
        "precision": precision,
        "tuning": setting["tuning"],
        "channels_last": setting["channels_last"],
        "threads": setting["threads"],
        "config": config,
        "shape": shape,
        "unit": UNITS[workload],
        "work_per_step": work,
        "warmup": timing["warmup"],
        "steps": len(times),
        "times_s": [round(t, 6) for t in times],
        **stats,
        "throughput": work / stats["median_s"],
        "device_used": where,
    }
    if workload == "transformer":
        result["tokens_per_s"] = result["throughput"] * config["seq"]
    if workload == "mnist_cnn":
        result["epoch_s"] = MNIST_EPOCH / result["throughput"]
    if workload == MODEL and config.get("samples_per_epoch"):
        result["epoch_s"] = config["samples_per_epoch"] / result["throughput"]  # an epoch of the lab's own data
    return result


def tune(backend, workload: str, knobs: list[str], context: dict, on_start, on_result, on_error) -> None:
    """The default, then each knob added to the best setting so far, kept only when it was faster. The fastest
    result is marked best; a knob that fails is reported and skipped."""
    kept: list[str] = []
    best: dict | None = None
    for knob in [None, *knobs]:
        trial = [*kept, knob] if knob else []
        setting = setting_of(workload, trial, context["threads"], context["cpu"])
        on_start(workload, setting)
        try:
            result = measure(backend, workload, setting, context["mode"], context["device"], context.get("user"))
        except Exception as err:  # one failed setting is reported; the others still run
            on_error(workload, setting, err)
            continue
        result["best"] = False
        if best is None or result["throughput"] > best["throughput"]:
            kept, best = trial, result
        on_result(result)
    if best is not None:
        best["best"] = True


class OtherLoad:
    """How many tasks of other processes were runnable while this run measured, sampled from /proc every
    0.25 s: /proc/loadavg counts every runnable task of the machine (also seen from a container), minus this
    process's own running threads. The load average cannot tell: it includes this run's own threads."""

    def __init__(self, interval: float = 0.25) -> None:
        self.samples: list[int] = []
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while not self.stop.wait(self.interval):
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open("/proc/loadavg") as handle:
                    running = int(handle.read().split()[3].split("/")[0])
                own = 0
                for task in os.listdir("/proc/self/task"):
                    with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/stat") as stat:
                        own += stat.read().rsplit(")", 1)[1].split()[0] == "R"
                self.samples.append(max(0, running - own))

    def __enter__(self) -> OtherLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def cpu_times() -> list[int]:
    """The machine's aggregate CPU times from /proc/stat (user nice system idle iowait irq softirq steal)."""
    try:
        with open("/proc/stat") as handle:
            return [int(v) for v in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return []


def steal_fraction(before: list[int], after: list[int]) -> float | None:
    """Share of CPU time the hypervisor gave to other guests between two readings (a VM's hidden contention)."""
    if len(before) < 8 or len(after) < 8:
        return None
    delta = [b - a for a, b in zip(before, after)]  # noqa: B905 (bare hosts' Python < 3.10)
    return delta[7] / sum(delta) if sum(delta) > 0 else None


def labstack_revision() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(framework: str, device: str) -> dict:
    record = {name: probe.run(name) for name in ("system", "cpu", "shm", framework)}
    if device == "cuda":
        record["nvml"] = probe.run("nvml")
    return record


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", required=True, choices=FRAMEWORKS)
    parser.add_argument("--workloads", help="comma list (default: all; none with --model)")
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    parser.add_argument("--quick", action="store_true", help="smaller models and fewer steps")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: usable CPUs, cgroup-aware)")
    parser.add_argument("--model", help="package.module:function: also time the lab's own PyTorch model, imported "
                        "from sys.path (PYTHONPATH)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.model:
        try:
            parse_model_spec(args.model)
        except UserModelError as err:
            refuse(str(err))
        if args.framework != "torch":
            refuse(f"--model {args.model}: the lab model runs PyTorch models for now: give --framework torch")
    if args.workloads is None:  # with --model, the built-in workloads run only when asked for
        args.workloads = "" if args.model else ",".join(WORKLOADS)
    else:
        args.workloads = args.workloads or "(none)"
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown or not (args.workloads or args.model):
        parser.error(f"unknown workload {', '.join(unknown) or '(none)'}: choose from {', '.join(WORKLOADS)}")
    return args


def refuse(message: str) -> None:
    """Bad input: one `bench.py:` line, exit 2."""
    print(f"bench.py: {message}", file=sys.stderr)
    sys.exit(2)


def now_utc() -> str:
    # dt.UTC is Python 3.11+; a bare GPU host may have an older Python
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")  # noqa: UP017


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # The document goes to the real stdout; anything a framework prints there goes to stderr instead.
    document_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    signal.signal(signal.SIGTERM, _interrupt)
    mode = "quick" if args.quick else "full"
    cpu = probe.run("cpu")
    threads = args.threads or cpu.get("usable_cpus") or os.cpu_count() or 1
    doc: dict = {
        "schema": SCHEMA,
        "framework": args.framework,
        "device": args.device,
        "mode": mode,
        "started": now_utc(),
        "loadavg_start": list(os.getloadavg()),
        "labstack_revision": labstack_revision(),
        "results": [],
        "errors": [],
        "interrupted": False,
    }
    code = 0
    other_load, times_before = OtherLoad(), cpu_times()
    names = [MODEL, *args.workloads] if args.model else args.workloads  # the lab's model first: it is theirs
    user = None
    try:
        other_load.__enter__()
        emit("setup", framework=args.framework, total=len(names))
        backend = BACKENDS[args.framework](args.device, threads)
        doc.update(
            framework_version=probe.run(args.framework).get("version"),
            device_name=backend.device_name(),
            threads=backend.threads(),
            threads_requested=threads,
            framework_extra=backend.extra(),
            bf16_hardware=bf16_hardware(cpu) if args.device == "cpu" else None,
            tuning_skipped={},
        )
        if args.model:
            user = load_user_model(args.model, backend)
            doc["model"] = user.config
        plans = {}
        for workload in names:
            knobs, skipped = plan_tuning(args.framework, workload, args.device, cpu, threads, backend.bf16_supported(),
                                         image_like=bool(user and user.image_like))  # fmt: skip
            plans[workload] = knobs
            doc["tuning_skipped"][workload] = skipped
        total = sum(1 + len(knobs) for knobs in plans.values())
        emit("setup", framework=args.framework, total=total)
        progress = {"index": 0}

        def on_result(result: dict) -> None:
            doc["results"].append(result)
            emit("done", workload=result["workload"], precision=result["precision"], tuning=result["tuning"],
                 index=progress["index"], total=total, throughput=result["throughput"],
                 unit=result["unit"])  # fmt: skip
            progress["index"] += 1

        def on_error(workload: str, setting: dict, err: Exception) -> None:
            error = one_line(err)
            doc["errors"].append({"workload": workload, "precision": setting["precision"],
                                  "tuning": setting["tuning"], "error": error})  # fmt: skip
            emit("error", workload=workload, precision=setting["precision"], index=progress["index"], error=error)
            progress["index"] += 1

        def on_start(workload: str, setting: dict) -> None:
            emit("start", workload=workload, precision=" + ".join(setting["tuning"]) or "default",
                 index=progress["index"], total=total)  # fmt: skip

        context = {"threads": threads, "cpu": cpu, "mode": mode, "device": args.device, "user": user}
        for workload, knobs in plans.items():
            tune(backend, workload, knobs, context, on_start, on_result, on_error)
        if user and not any(r["workload"] == MODEL for r in doc["results"]):
            failed = next(e["error"] for e in doc["errors"] if e["workload"] == MODEL)
            print(f"bench.py: --model {args.model}: its training step failed in every setting: {failed}",
                  file=sys.stderr)  # fmt: skip
            code = 1
    except UserModelError as err:
        doc["errors"].append({"workload": MODEL, "precision": None, "error": str(err)})
        print(f"bench.py: {err}", file=sys.stderr)
        code = 2
    except DeviceUnusable as err:
        doc["errors"].append({"workload": None, "precision": None, "error": str(err)})
        print(f"bench.py: {err}", file=sys.stderr)
        code = 5
    except KeyboardInterrupt:
        doc["interrupted"] = True
        code = 130
    other_load.__exit__()
    doc["other_load"] = other_load.mean()
    doc["cpu_steal"] = steal_fraction(times_before, cpu_times())
    doc["finished"] = now_utc()
    doc["loadavg_end"] = list(os.getloadavg())
    doc["environment"] = environment(args.framework, args.device)
    document_out.write(json.dumps(doc) + "\n")
    document_out.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
