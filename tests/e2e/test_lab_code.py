"""Ordinary training code, unchanged, in the lab images, through `docker compose run train`: a PyTorch MNIST
script with torchvision's dataset and transforms and DataLoader workers, a Keras script that reads a CSV with
pandas, and an analysis script with pandas and matplotlib (tests/e2e/lab_project/). They know nothing about
labstack; the data is the generated stand-in, laid out as torchvision and the digit-recognizer CSVs expect it."""

from __future__ import annotations

import csv
import os
import re
import shutil
from pathlib import Path

import pytest

from labstack import payload
from labstack.build.images import build_images
from labstack.build.layers import LAB, build_layer, layer_ref, read_layer_lock
from labstack.validate.plugin import selected_images

from .conftest import MATRIX, TEST_GID, TEST_UID

LAB_PROJECT = Path(__file__).parent / "lab_project"
TARGET_ACCURACY = 0.90
mnist = payload.load("mnist")


def owned_by_test_user(path: Path) -> bool:
    return (path.stat().st_uid, path.stat().st_gid) == (TEST_UID, TEST_GID)


@pytest.fixture
def project(stack, learnable_data) -> Path:
    """The lab's project folder: the three scripts, and the training split as a digit-recognizer train.csv."""
    for script in LAB_PROJECT.glob("*.py"):
        shutil.copy(script, stack.project / script.name)
    dims, images = mnist.decode_idx((learnable_data / mnist.FILES["train_images"]).read_bytes(), "images")
    _, labels = mnist.decode_idx((learnable_data / mnist.FILES["train_labels"]).read_bytes(), "labels")
    side = dims[1] * dims[2]
    with (stack.project / "train.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", *(f"pixel{i}" for i in range(side))])
        for n in range(dims[0]):
            writer.writerow([labels[n], *images[n * side : (n + 1) * side]])
    for path in stack.project.iterdir():
        os.chown(path, TEST_UID, TEST_GID)
    return stack.project


@pytest.fixture(scope="session")
def torchvision_data(learnable_data, tmp_path_factory) -> Path:
    """The same IDX files where torchvision.datasets.MNIST("../data") looks: /data/MNIST/raw/."""
    root = tmp_path_factory.mktemp("torchvision-data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in mnist.FILES.values():
        shutil.copy(learnable_data / name, raw / name)
    for folder in (root, root / "MNIST", raw):
        folder.chmod(0o755)
    return root


@pytest.fixture(scope="session")
def torchvision_lab(request) -> str:
    """The torch lab image whose lock holds torchvision: the CPU one where PyTorch's CPU index was reachable when
    it was locked, else the CUDA one (which runs on CPU here)."""
    cpu = MATRIX.image("torch", "cpu")
    if "torchvision" in {p.name for p in read_layer_lock(MATRIX, cpu, LAB).pins}:
        return layer_ref(cpu, LAB.name)
    cuda = MATRIX.image("torch", "cuda")
    if cuda not in selected_images(request.config):
        pytest.skip("torchvision is in the torch CUDA lab image only here (see docs/lab.md): run with --variant all")
    build_images(MATRIX, [cuda])
    build_layer(MATRIX, cuda, LAB, parent_built=True)
    return layer_ref(cuda, LAB.name)


def test_pytorch_mnist_with_torchvision_runs_unchanged(stack, images, project, torchvision_data, torchvision_lab):
    result = stack.train(
        "python", "mnist_torchvision.py", "--epochs", "1", "--workers", "2", "--save-model",
        env={"TRAIN_IMAGE": torchvision_lab, "DATA_DIR": str(torchvision_data)},
    )  # fmt: skip
    accuracy = re.findall(r"accuracy \d+/\d+ \(([\d.]+)%\)", result.stdout)
    assert accuracy and float(accuracy[-1]) / 100 >= TARGET_ACCURACY, result.stdout[-2000:]
    assert owned_by_test_user(project / "mnist_cnn.pt")


def test_torchvision_is_absent_not_broken_where_the_lab_lock_goes_without_it(stack, images, project, torchvision_data):
    cpu = MATRIX.image("torch", "cpu")
    if "torchvision==0.28.0+cpu" not in read_layer_lock(MATRIX, cpu, LAB).missing:
        pytest.skip("the torch CPU lab lock holds torchvision here")
    result = stack.train(
        "python", "mnist_torchvision.py", check=False,
        env={"TRAIN_IMAGE": layer_ref(cpu, LAB.name), "DATA_DIR": str(torchvision_data)},
    )  # fmt: skip
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'torchvision'" in result.stderr, result.stderr[-2000:]


def test_keras_script_reading_a_csv_runs_unchanged(stack, images, project):
    tensorflow = layer_ref(MATRIX.image("tensorflow", "cpu"), LAB.name)
    stack.train("python", "keras_digits.py", "--epochs", "3", env={"TRAIN_IMAGE": tensorflow})
    with (project / "history.csv").open() as handle:
        history = list(csv.DictReader(handle))
    assert [row["epoch"] for row in history] == ["0", "1", "2"]
    assert float(history[-1]["val_accuracy"]) >= TARGET_ACCURACY, history
    assert owned_by_test_user(project / "digits.keras") and owned_by_test_user(project / "history.csv")


@pytest.mark.parametrize("framework", MATRIX.frameworks)
def test_pandas_and_matplotlib_script_runs_unchanged(stack, images, project, framework):
    (project / "history.csv").write_text("epoch,accuracy,val_accuracy\n0,0.5,0.6\n1,0.8,0.85\n2,0.9,0.93\n")
    result = stack.train(
        "python",
        "plot_history.py",
        "history.csv",
        env={"TRAIN_IMAGE": layer_ref(MATRIX.image(framework, "cpu"), "lab")},
    )
    assert "wrote history.png" in result.stdout
    png = project / "history.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert owned_by_test_user(png)
