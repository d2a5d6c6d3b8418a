#!/usr/bin/env python3
"""Train a small CNN on MNIST (IDX files in a mounted folder) with PyTorch or TensorFlow; resumable.

    python3 train.py [--framework torch|tensorflow] [--synthetic] [--epochs 3] [--batch-size 64] [--lr 0.001]

What `docker compose run train` runs inside a labstack image. Writes to RUNS/<run>/:
  metrics.jsonl       one JSON object per event (start, step, epoch, stop), appended across restarts
  environment.jsonl   one record per start: image, image id, device, framework and Python versions, CPU
  checkpoint.pt|.npz  written after every epoch and on SIGTERM: temp file in the same folder, fsync, rename
  train.lock          flock()ed for the trainer's whole life, so one run has one trainer; holds who has it
Started again with the same --run, it resumes from the checkpoint (epoch, position in the epoch, model and
optimizer state); a SIGKILL loses at most the current epoch and never leaves a half-written checkpoint.
--synthetic trains on random tensors (no data needed) and says so in every line it writes.
Standard library plus the framework; bad input is one `labstack: ...` line on stderr and exit code 2. A runs
folder that fills up (or fails) mid-run is one line too, exit 4 (1 for a failure other than space): it names the
file that could not be written and the last good checkpoint, which is never replaced by a partial one.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import importlib.util
import json
import os
import platform
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mnist  # the payload's own modules, beside this file
from probe import MANIFEST_DIR, quiet_import

FRAMEWORKS = ("torch", "tensorflow")
MANIFEST = Path(MANIFEST_DIR) / "versions.json"
CHECKPOINT_SUFFIX = {"torch": ".pt", "tensorflow": ".npz"}
SYNTHETIC_SIZES = (2048, 512)
BAD_INPUT = 2
FAILED = 1
NO_DISK = 4  # labstack's ExitCode.NO_DISK (tests/unit/test_full_runs_folder.py keeps them equal)
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


class UsageError(Exception):
    """Bad input or environment: one line naming the fix."""


class WriteFailed(Exception):
    """A file of the run could not be written (a full or failing runs folder); what was there before is intact."""

    def __init__(self, path: Path, err: OSError) -> None:
        super().__init__(f"cannot write {path} ({err.strerror or err})")
        self.path = path
        self.error = err

    @property
    def out_of_space(self) -> bool:
        return self.error.errno in OUT_OF_SPACE


class Stopped(Exception):
    """The run ended early for a reason already put in one line: str(err), exit code `code`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def os_error_in(err: BaseException) -> OSError | None:
    """The OSError behind `err`: itself, or what it was raised from or while handling (torch.save turns a full disk
    into a RuntimeError about zip positions, raised while handling the OSError of the write)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def append_line(path: Path, text: str) -> None:
    """Append one line, whole or not at all: on a full disk a write can stop mid-line, so the file is cut back to
    its old length and every line of metrics.jsonl stays valid JSON."""
    data = (text + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as err:
        raise WriteFailed(path, err) from None
    try:
        size = os.fstat(fd).st_size
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise WriteFailed(path, err) from None
    finally:
        os.close(fd)


@dataclass
class Progress:
    """Where training stands; stored in every checkpoint."""

    epoch: int = 0  # epochs completed
    samples_done: int = 0  # samples of epoch `epoch` already trained on (non-zero only after a SIGTERM)
    fingerprint: str = ""  # the data the weights were trained on
    synthetic: bool = False
    history: list = field(default_factory=list)


def process_age() -> float:
    """Seconds since this process started (includes the interpreter start), from /proc; 0.0 elsewhere."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def read_manifest(path: Path = MANIFEST) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def choose_framework(requested: str | None, manifest: dict, installed=importlib.util.find_spec) -> str:
    """--framework, else FRAMEWORK, else the image's own framework (its manifest); refuse what is not here."""
    name = (requested or manifest.get("framework") or "").strip()
    if not name:
        raise UsageError("cannot tell which framework to use: pass --framework torch or --framework tensorflow")
    if name not in FRAMEWORKS:
        raise UsageError(f"unknown framework {name}: choose from {', '.join(FRAMEWORKS)}")
    if installed(name) is None:
        have = manifest.get("framework") or "another framework"
        raise UsageError(
            f"this image has {have}, not {name}: run `invoke env --framework {name}` (sets TRAIN_IMAGE in .env) "
            "or set TRAIN_IMAGE to a labstack image of that framework"
        )
    return name


def run_name(framework: str, synthetic: bool, requested: str | None) -> str:
    name = requested or f"{'synthetic' if synthetic else 'mnist'}-{framework}"
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum() or name.startswith("."):
        raise UsageError(f"--run {name!r} is not a plain folder name: use letters, digits, '-', '_' and '.'")
    return name


def check_writable(folder: Path) -> None:
    """The runs folder must exist and take files from this user (the compose file runs as UID:GID)."""
    who = f"uid {os.getuid()} gid {os.getgid()}"
    if not folder.is_dir():
        raise UsageError(f"runs folder {folder} does not exist: create it or set RUNS_DIR to a folder you own")
    probe = folder / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        owner = folder.stat().st_uid
        raise UsageError(
            f"runs folder {folder} (owned by uid {owner}) is not writable by {who}: `chown` it to yourself, or run "
            "`invoke env` so UID/GID in .env match you, or set RUNS_DIR to a folder you own"
        ) from None


LOCK_FILE = "train.lock"


def holder_identity() -> dict:
    """Who holds a run: PID, host name (a container's is its short ID), whether that is a container, start time."""
    return {
        "pid": os.getpid(),
        "host": platform.node(),
        "container": Path("/.dockerenv").exists(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def describe_holder(name: str, text: str) -> str:
    """The refusal for a run another trainer holds, from what that trainer wrote into the lock file."""
    try:
        who = json.loads(text)
        pid, host, started = who["pid"], who["host"], who["started"]
    except (ValueError, TypeError, KeyError):
        return (f"run {name} is in use by another trainer (it has not written who it is yet): stop it, or give "
                "another --run")  # fmt: skip
    if who.get("container"):
        return (f"run {name} is in use by PID {pid} in container {host} (started {started}): stop it (docker stop "
                f"{host}) or give another --run")  # fmt: skip
    return (f"run {name} is in use by PID {pid} on host {host} (started {started}): stop it (kill {pid}) or give "
            "another --run")  # fmt: skip


def lock_run(folder: Path, name: str) -> int:
    """Take the run's lock, non-blocking, before anything in `folder` is read or written; refuse if another trainer
    holds it. The lock is the flock, not the file: the kernel drops it when the holder dies (even by SIGKILL), so a
    file left behind never blocks. Keep the returned descriptor open for the process's whole life."""
    # Read-write: NFS emulates flock() as a POSIX lock, which needs a file open for writing.
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise UsageError(
            f"cannot open {folder / LOCK_FILE} ({err.strerror}): a run started by another user? `chown` the run "
            "folder to yourself, or give another --run"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        text = ""
        for _ in range(10):  # the holder writes its identity just after it takes the lock
            with contextlib.suppress(OSError):
                text = (folder / LOCK_FILE).read_text()
            if text.strip():
                break
            time.sleep(0.1)
        raise UsageError(describe_holder(name, text)) from None
    except OSError as err:  # ENOLCK: an NFS mount whose server keeps no locks (NFSv3 without lockd)
        os.close(fd)
        raise UsageError(
            f"cannot lock run folder {folder} ({err.strerror}): its filesystem keeps no locks; use a local runs "
            "folder, or mount the NFS share with local_lock=flock (excludes trainers on this machine only)"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder_identity()) + "\n").encode(), 0)
    except OSError as err:  # a full runs folder: the lock is held, only who holds it is unwritten
        raise WriteFailed(folder / LOCK_FILE, err) from None
    return fd


def save_atomic(path: Path, write) -> None:
    """`write(handle)` into a temp file next to `path`, fsync it, rename it over `path`, fsync the folder.
    A crash at any point leaves either the old checkpoint or the new one, never a mix. A write that fails (a full
    disk) is WriteFailed, with the old file in place and the temp file gone."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except Exception as err:
        cause = os_error_in(err)
        if cause is None:
            raise
        raise WriteFailed(path, cause) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def remove_stale_temps(folder: Path) -> None:
    """Temp files of a process that was killed before its rename."""
    for stale in folder.glob(".checkpoint*.tmp-*"):
        with contextlib.suppress(OSError):
            stale.unlink()


class StopFlag:
    """SIGTERM (docker stop, compose down) or SIGINT (Ctrl-C) asks for a checkpoint at the next step boundary,
    then an exit with 128 + the signal's number (143, 130)."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handler)
        signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum, frame) -> None:
        self.signal = signal.Signals(signum)


def synthetic_dataset(seed: int) -> mnist.Dataset:
    """Random images and labels: proves the pipeline runs, learns nothing, and is labelled as such everywhere."""
    import random

    rng = random.Random(seed)
    splits = []
    for count in SYNTHETIC_SIZES:
        images = bytes(rng.getrandbits(8) for _ in range(count * mnist.SIDE * mnist.SIDE))
        labels = bytes(rng.randrange(10) for _ in range(count))
        splits.append(mnist.Split(images, labels, count))
    return mnist.Dataset(splits[0], splits[1], source="synthetic", fingerprint=f"synthetic-seed-{seed}")


class TorchBackend:
    name = "torch"

    def __init__(self, data: mnist.Dataset, lr: float, seed: int) -> None:
        import warnings

        # The images carry no NumPy for torch (nothing here needs it); its import-time warning is noise.
        warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
        import torch
        from torch import nn

        self.torch = torch
        torch.manual_seed(seed)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.train_x, self.train_y = self._tensors(data.train)
        self.test_x, self.test_y = self._tensors(data.test)
        self.model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10),
        ).to(self.device)  # fmt: skip
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.loss = nn.CrossEntropyLoss()

    def _tensors(self, split: mnist.Split):
        torch = self.torch
        images = torch.frombuffer(bytearray(split.images), dtype=torch.uint8).reshape(split.count, 1, 28, 28)
        labels = torch.frombuffer(bytearray(split.labels), dtype=torch.uint8).long()
        return images.to(self.device), labels.to(self.device)

    def device_record(self) -> dict:
        torch = self.torch
        record = {"device": str(self.device), "threads": torch.get_num_threads(), "torch": torch.__version__}
        if self.device.type == "cuda":
            record |= {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda}
        return record

    def order(self, seed: int, epoch: int) -> list[int]:
        generator = self.torch.Generator().manual_seed(seed * 100_003 + epoch)
        return self.torch.randperm(len(self.train_y), generator=generator).tolist()

    def train_batch(self, indices: list[int]) -> float:
        index = self.torch.tensor(indices, device=self.device)
        images = self.train_x[index].float().div_(255.0)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.model(images), self.train_y[index])
        loss.backward()
        self.optimizer.step()
        return float(loss.item())

    def accuracy(self) -> float:
        self.model.eval()
        correct = 0
        with self.torch.no_grad():
            for start in range(0, len(self.test_y), 1000):
                images = self.test_x[start : start + 1000].float().div_(255.0)
                correct += int((self.model(images).argmax(1) == self.test_y[start : start + 1000]).sum())
        return correct / len(self.test_y)

    def save(self, path: Path, progress: Progress) -> None:
        state = {
            "progress": asdict(progress),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.torch.get_rng_state(),
        }
        save_atomic(path, lambda handle: self.torch.save(state, handle))

    def load(self, path: Path) -> Progress:
        state = self.torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.torch.set_rng_state(state["rng"])
        return Progress(**state["progress"])


class TensorflowBackend:
    name = "tensorflow"

    def __init__(self, data: mnist.Dataset, lr: float, seed: int) -> None:
        # TensorFlow's C++ start-up chatter (oneDNN notices) bypasses TF_CPP_MIN_LOG_LEVEL: keep it off stderr.
        tf = quiet_import("tensorflow")
        import keras
        import numpy as np

        self.np, self.tf = np, tf
        keras.utils.set_random_seed(seed)
        self.gpus = tf.config.list_physical_devices("GPU")
        self.train_x, self.train_y = self._arrays(data.train)
        self.test_x, self.test_y = self._arrays(data.test)
        layers = keras.layers
        self.model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                layers.Conv2D(16, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
                layers.Conv2D(32, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
                layers.Flatten(), layers.Dense(64, activation="relu"), layers.Dense(10),
            ]
        )  # fmt: skip
        self.optimizer = keras.optimizers.Adam(learning_rate=lr)
        self.optimizer.build(self.model.trainable_variables)
        self.loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function
        def step(images, labels):
            with tf.GradientTape() as tape:
                loss = self.loss(labels, self.model(images, training=True))
            grads = tape.gradient(loss, self.model.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
            return loss

        self._step = step
        self._predict = tf.function(lambda images: tf.argmax(self.model(images, training=False), axis=1))

    def _arrays(self, split: mnist.Split):
        np = self.np
        images = np.frombuffer(split.images, dtype=np.uint8).reshape(split.count, 28, 28, 1)
        return images, np.frombuffer(split.labels, dtype=np.uint8).astype(np.int64)

    def device_record(self) -> dict:
        record = {"device": "gpu" if self.gpus else "cpu", "tensorflow": self.tf.__version__}
        record["threads"] = self.tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
        if self.gpus:
            record["gpu"] = [g.name for g in self.gpus]
        return record

    def order(self, seed: int, epoch: int) -> list[int]:
        return self.np.random.default_rng(seed * 100_003 + epoch).permutation(len(self.train_y)).tolist()

    def train_batch(self, indices: list[int]) -> float:
        images = self.train_x[indices].astype(self.np.float32) / 255.0
        return float(self._step(images, self.train_y[indices]))

    def accuracy(self) -> float:
        correct = 0
        for start in range(0, len(self.test_y), 1000):
            images = self.test_x[start : start + 1000].astype(self.np.float32) / 255.0
            predicted = self._predict(images).numpy()
            correct += int((predicted == self.test_y[start : start + 1000]).sum())
        return correct / len(self.test_y)

    def _variables(self):
        return list(self.model.variables) + list(self.optimizer.variables)

    def save(self, path: Path, progress: Progress) -> None:
        arrays = {f"v{i}": v.numpy() for i, v in enumerate(self._variables())}
        arrays["progress"] = self.np.array(json.dumps(asdict(progress)))
        save_atomic(path, lambda handle: self.np.savez(handle, **arrays))

    def load(self, path: Path) -> Progress:
        with self.np.load(path) as saved:
            variables = self._variables()
            if len(saved.files) - 1 != len(variables):
                raise UsageError(f"checkpoint {path} holds another model: move it away, or use another --run")
            for i, variable in enumerate(variables):
                variable.assign(saved[f"v{i}"])
            return Progress(**json.loads(str(saved["progress"])))


BACKENDS = {"torch": TorchBackend, "tensorflow": TensorflowBackend}


class Recorder:
    """Metrics as JSON lines (every line says whether the data is synthetic and whether this start resumed)."""

    def __init__(self, folder: Path, common: dict) -> None:
        self.path = folder / "metrics.jsonl"
        self.common = common

    def write(self, event: str, **values) -> None:
        append_line(self.path, json.dumps({"event": event, "time": time.time(), **self.common, **values}))


def environment_record(backend, framework: str, manifest: dict, progress: Progress, synthetic: bool) -> dict:
    return {
        "time": time.time(),
        "image": os.environ.get("LABSTACK_IMAGE", "unknown"),
        "image_id": os.environ.get("LABSTACK_IMAGE_ID") or "unknown (run `invoke env` to record it)",
        "framework": framework,
        "manifest": manifest,
        "python": platform.python_version(),
        "host": platform.node(),
        "machine": platform.machine(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "uid": os.getuid(),
        "synthetic": synthetic,
        "resumed_from": {"epoch": progress.epoch, "samples_done": progress.samples_done},
        **backend.device_record(),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env = os.environ.get
    parser.add_argument(
        "--framework", default=env("FRAMEWORK") or None, help="torch or tensorflow (default: the image's)"
    )
    parser.add_argument("--data", type=Path, default=Path(env("LABSTACK_DATA", "/data")), help="MNIST IDX folder")
    parser.add_argument("--runs", type=Path, default=Path(env("LABSTACK_RUNS", "/runs")), help="folder for runs")
    parser.add_argument("--run", default=None, help="run folder name (default: mnist-FRAMEWORK or synthetic-FRAMEWORK)")
    parser.add_argument("--synthetic", action="store_true", help="random tensors instead of MNIST (smoke runs)")
    parser.add_argument(
        "--epochs", type=int, default=3, help="total epochs of the run, counting resumed ones (default: 3)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="samples per step (default: 64)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 0.001)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and data order (default: 0)")
    parser.add_argument("--log-every", type=int, default=50, help="steps between progress lines (default: 50)")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "log_every"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    if not args.lr > 0:
        raise UsageError(f"--lr must be positive, not {args.lr}")
    return args


def train(argv: list[str]) -> int:
    stop = StopFlag()
    stop.install()
    args = parse_args(argv)
    manifest = read_manifest()
    framework = choose_framework(args.framework, manifest)
    name = run_name(framework, args.synthetic, args.run)
    check_writable(args.runs)
    # Read and verify the data before the framework import: a bad folder is reported in well under a second.
    data = synthetic_dataset(args.seed) if args.synthetic else load_data(args.data)
    folder = args.runs / name
    last = LastCheckpoint(folder / f"checkpoint{CHECKPOINT_SUFFIX[framework]}")
    try:
        return run_training(args, framework, manifest, name, data, last, stop)
    except WriteFailed as err:
        raise Stopped(last.after(err), NO_DISK if err.out_of_space else FAILED) from None


@dataclass
class LastCheckpoint:
    """The run's checkpoint file and what its last good version holds, for the line a failed write ends with."""

    path: Path
    holds: str = ""  # "epoch 2", or "epoch 3 up to sample 640" after a signal; empty until one is read or written

    def keep(self, progress: Progress) -> None:
        self.holds = (f"epoch {progress.epoch + 1} up to sample {progress.samples_done}" if progress.samples_done
                      else f"epoch {progress.epoch}")  # fmt: skip

    def after(self, err: WriteFailed) -> str:
        """What could not be written, what is intact, and the fix."""
        again = "then run the same command again to resume"
        if self.holds:
            kept = f"the last good checkpoint ({self.holds}) is intact in {self.path}"
        elif self.path.is_file():  # the lock or the first lines of a resumed run: not read yet, never touched
            kept = f"the checkpoint {self.path} is intact"
        else:
            kept, again = "no checkpoint was written yet", "then run the same command again"
        if err.out_of_space:
            fix = "free space in the runs folder, or move the run folder to a disk with room and point RUNS_DIR there"
        else:
            fix = "check the runs folder's disk, or move the run folder elsewhere and point RUNS_DIR there"
        return f"{err}: {kept}; {fix}, {again}"


def run_training(args, framework: str, manifest: dict, name: str, data: mnist.Dataset, last: LastCheckpoint,
                 stop: StopFlag) -> int:  # fmt: skip
    """Lock the run, resume or start it, train to --epochs; a write into the run folder that fails is WriteFailed."""
    label = "[synthetic data] " if args.synthetic else ""
    folder, checkpoint = last.path.parent, last.path
    try:
        folder.mkdir(exist_ok=True)
    except OSError as err:
        raise WriteFailed(folder, err) from None
    lock_run(folder, name)  # its descriptor is never closed: the lock lasts as long as this process
    remove_stale_temps(folder)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    backend = BACKENDS[framework](data, args.lr, args.seed)
    progress = Progress(fingerprint=data.fingerprint, synthetic=args.synthetic)
    resumed = checkpoint.is_file()
    if resumed:
        try:
            progress = backend.load(checkpoint)
        except UsageError:
            raise
        except Exception as err:
            raise UsageError(
                f"checkpoint {checkpoint} cannot be read ({type(err).__name__}): move it away to start over"
            ) from None
        if progress.fingerprint != data.fingerprint:
            raise UsageError(
                f"run {name} was trained on other data ({progress.fingerprint[:12]}, now {data.fingerprint[:12]}): "
                "use another --run"
            )
        last.keep(progress)
    recorder = Recorder(folder, {"run": name, "framework": framework, "synthetic": args.synthetic, "resumed": resumed})
    record = environment_record(backend, framework, manifest, progress, args.synthetic)
    append_line(folder / "environment.jsonl", json.dumps(record))
    where = f"epoch {progress.epoch + 1}" + (f", sample {progress.samples_done}" if progress.samples_done else "")
    print(
        f"{label}{framework} on {record['device']}, data {data.source} ({data.train.count} train / {data.test.count} "
        f"test), run {folder}: " + (f"resuming from {checkpoint.name} at {where}" if resumed else "new run"),
        flush=True,
    )
    recorder.write("start", data=data.source, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                   from_epoch=progress.epoch, from_sample=progress.samples_done)  # fmt: skip
    if progress.epoch >= args.epochs:
        print(
            f"{label}run {name} already has {progress.epoch} epochs: nothing to do (pass --epochs > {progress.epoch})"
        )
        return 0

    first_step = True
    while progress.epoch < args.epochs:
        epoch_started = time.monotonic()
        order = backend.order(args.seed, progress.epoch)
        losses = []
        start = progress.samples_done
        for offset in range(start, len(order), args.batch_size):
            loss = backend.train_batch(order[offset : offset + args.batch_size])
            losses.append(loss)
            progress.samples_done = min(offset + args.batch_size, len(order))
            if first_step:
                first_step = False
                age = process_age()
                print(f"{label}first step after {age:.1f} s (process start to first optimizer step)", flush=True)
                recorder.write("first_step", seconds_since_process_start=round(age, 3))
            if len(losses) % args.log_every == 0:
                print(f"{label}epoch {progress.epoch + 1}/{args.epochs} sample {progress.samples_done} loss {loss:.4f}")
                recorder.write("step", epoch=progress.epoch + 1, sample=progress.samples_done, loss=loss)
            if stop.signal is not None:
                backend.save(checkpoint, progress)
                last.keep(progress)
                name = stop.signal.name
                recorder.write("stop", signal=name, epoch=progress.epoch + 1, sample=progress.samples_done)
                print(f"{label}{name}: checkpoint written at epoch {progress.epoch + 1}, sample "
                      f"{progress.samples_done}; run again to resume", flush=True)  # fmt: skip
                return 128 + stop.signal.value
        seconds = time.monotonic() - epoch_started
        trained = progress.samples_done - start
        accuracy = backend.accuracy()
        progress.epoch += 1
        progress.samples_done = 0
        summary = {
            "epoch": progress.epoch,
            "train_loss": sum(losses) / max(1, len(losses)),
            "test_accuracy": accuracy,
            "seconds": round(seconds, 3),
            "samples_per_second": round(trained / seconds, 1) if seconds else None,
            "partial_epoch": start > 0,
        }
        progress.history.append(summary)
        backend.save(checkpoint, progress)
        last.keep(progress)
        recorder.write("epoch", **summary)
        print(f"{label}epoch {progress.epoch}/{args.epochs}: loss {summary['train_loss']:.4f}, test accuracy "
              f"{accuracy:.4f}, {seconds:.1f} s; checkpoint {checkpoint.name} written", flush=True)  # fmt: skip
    return 0


def load_data(folder: Path) -> mnist.Dataset:
    try:
        return mnist.load(folder)
    except mnist.DataError as err:
        raise UsageError(str(err)) from None


def main(argv: list[str]) -> int:
    try:
        return train(argv)
    except UsageError as err:
        print(f"labstack: {err}", file=sys.stderr)
        return BAD_INPUT
    except Stopped as err:
        print(f"labstack: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print("labstack: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
