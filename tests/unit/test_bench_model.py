"""The lab's own model (`bench.py --model`, `invoke benchmark --model`), without a framework: the spec's form, the
import of the lab's code, the checks of what its function returns, and the one line every failure ends in. The
training step itself runs in a container (tests/bench/test_bench_model.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labstack import payload
from labstack.bench.run import BenchOptions, Target, bench_arguments, project_folder, with_defaults
from labstack.errors import BadInput
from labstack.matrix import load_matrix
from tests.invoking import assert_one_line_failure, run_invoke
from tests.unit.test_bench_script import Ladder

bench = payload.load("bench")
workloads = payload.load("workloads")
SPEC = "mylab.model:build"


class FakeTensor:
    """What the checks read of a tensor: its shape."""

    def __init__(self, *shape: int) -> None:
        self.shape = shape


def is_tensor(value) -> bool:
    return isinstance(value, FakeTensor)


def model(*inputs):
    return inputs


def loss(output, targets):
    return 0.0


def unpack(returned):
    return bench.unpack_model(SPEC, returned, is_tensor)


def refused(returned) -> str:
    with pytest.raises(bench.UserModelError) as caught:
        unpack(returned)
    message = str(caught.value)
    assert message.startswith(f"--model {SPEC}: ") and "\n" not in message
    return message


@pytest.mark.parametrize("spec", ["mylab.model:build", "train:build", "a.b.c:_make2"])
def test_a_spec_is_a_module_and_a_function_as_in_entry_points(spec):
    assert bench.parse_model_spec(spec) == tuple(spec.split(":"))


@pytest.mark.parametrize("spec", ["mylab.model", "mylab/model.py:build", "a.b:c:d", ":build", "a.b:", "a b:c", "1a:b"])
def test_anything_else_is_refused_with_the_form_to_give(spec):
    with pytest.raises(bench.UserModelError, match=r"give package\.module:function"):
        bench.parse_model_spec(spec)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder on sys.path, as PYTHONPATH=/work puts the mounted one in the container."""
    (tmp_path / "mylab").mkdir()
    (tmp_path / "mylab" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m == "mylab" or m.startswith("mylab.")]:
        del sys.modules[name]


def load_failure(project: Path, name: str, source: str) -> str:
    """The one line that loading and calling mylab.NAME:build ends in."""
    (project / "mylab" / f"{name}.py").write_text(source)
    importlib.invalidate_caches()  # a folder's listing is cached by its mtime, which may not have moved
    spec = f"mylab.{name}:build"
    with pytest.raises(bench.UserModelError) as caught:
        bench.call_model_function(spec, bench.load_model_function(spec))
    message = str(caught.value)
    assert message.startswith(f"--model {spec}: ") and "\n" not in message
    return message


def test_an_import_failure_quotes_the_labs_own_exception(project):
    with pytest.raises(bench.UserModelError) as caught:
        bench.load_model_function("nosuch.model:build")
    assert "cannot import nosuch.model: ModuleNotFoundError: No module named 'nosuch'" in str(caught.value)
    assert "PYTHONPATH" in str(caught.value)
    message = load_failure(project, "needs_data", "raise RuntimeError('needs the data folder\\nsecond line')\n")
    assert "cannot import mylab.needs_data: RuntimeError: needs the data folder (PYTHONPATH" in message
    assert "SyntaxError" in load_failure(project, "broken", "def build(:\n")


def test_a_missing_or_uncallable_function_and_one_that_raises_are_named(project):
    assert "has no build" in load_failure(project, "other", "def make(): pass\n")
    assert "mylab.three.build is an int, not a function" in load_failure(project, "three", "build = 3\n")
    assert "calling it raised ValueError: no batch size" in load_failure(
        project, "raising", "def build():\n    raise ValueError('no batch size')\n"
    )


def test_the_function_is_found_and_called(project):
    (project / "mylab" / "good.py").write_text("def build():\n    return 'built'\n")
    importlib.invalidate_caches()
    function = bench.load_model_function("mylab.good:build")
    assert bench.call_model_function("mylab.good:build", function) == "built"


def test_a_tuple_or_a_dict_gives_the_model_its_batch_and_loss():
    x, y = FakeTensor(32, 3, 28, 28), FakeTensor(32)
    user = unpack((model, (x, y), loss))
    assert user.inputs == (x,) and user.targets is y and user.config == {"spec": SPEC, "batch": 32}
    assert user.image_like
    tokens, mask = FakeTensor(8, 128), FakeTensor(8, 128)
    user = unpack({"model": model, "batch": ((tokens, mask), y), "loss": loss, "samples_per_epoch": 1000,
                   "name": "my encoder"})  # fmt: skip
    assert user.inputs == (tokens, mask) and not user.image_like
    assert user.config == {"spec": SPEC, "batch": 8, "samples_per_epoch": 1000, "name": "my encoder"}


def test_what_the_function_returned_is_checked_and_each_fault_named():
    x, y = FakeTensor(4, 10), FakeTensor(4)
    assert "it returned an int: return (model, (inputs, targets), loss)" in refused(3)
    assert "it returned a tuple of 2" in refused((model, (x, y)))
    assert "the dict it returned lacks loss" in refused({"model": model, "batch": (x, y)})
    assert "has unknown keys sample_per_epoch" in refused(
        {"model": model, "batch": (x, y), "loss": loss, "sample_per_epoch": 10}
    )
    assert "the model is a str, not a callable model" in refused(("net", (x, y), loss))
    assert "the loss is None" in refused((model, (x, y), None))
    assert "the batch is a tuple of 3: give (inputs, targets)" in refused((model, (x, y, y), loss))
    assert "the inputs are a list of 2: give a tensor or a tuple of tensors" in refused((model, ([1, 2], y), loss))
    assert "the first input is 0-d" in refused((model, (FakeTensor(), y), loss))
    for bad in (0, -5, 2.5, True, "60000"):
        assert "samples_per_epoch is" in refused({"model": model, "batch": (x, y), "loss": loss,
                                                 "samples_per_epoch": bad})  # fmt: skip
    assert "name is an int" in refused({"model": model, "batch": (x, y), "loss": loss, "name": 7})


def test_a_framework_without_the_lab_model_says_so():
    class Keras:
        pass

    with pytest.raises(bench.UserModelError, match="runs PyTorch models for now"):
        bench.load_user_model(SPEC, Keras())


def test_channels_last_is_tried_only_on_a_model_with_a_4d_input():
    cpu = {"physical_cores": 2, "isa": ["avx512_bf16"]}
    knobs, skipped = bench.plan_tuning("torch", "model", "cpu", cpu, 2, True, image_like=True)
    assert knobs == ["channels_last", "bf16_autocast"]
    knobs, skipped = bench.plan_tuning("torch", "model", "cpu", cpu, 2, True, image_like=False)
    assert knobs == ["bf16_autocast"] and any("no input of your model is 4-D" in s for s in skipped)


class OwnModel(Ladder):
    """A backend that times the lab's model at a given rate, to see what a model result records."""

    def __init__(self) -> None:
        super().__init__({})

    def model_step(self, user, setting):
        return (lambda: time.sleep(user.config["batch"] / 8000.0)), "cpu"


def test_a_model_result_is_in_samples_per_second_with_its_spec_and_the_epoch_of_its_data(monkeypatch):
    monkeypatch.setitem(bench.TIMING, "quick", {"warmup": 0, "min_steps": 3, "min_seconds": 0, "max_seconds": 9})
    user = unpack({"model": model, "batch": (FakeTensor(16, 3, 8, 8), FakeTensor(16)), "loss": loss,
                   "samples_per_epoch": 80_000})  # fmt: skip
    setting = bench.setting_of("model", [], 2, {})
    result = bench.measure(OwnModel(), "model", setting, "quick", "cpu", user)
    assert result["workload"] == "model" and result["unit"] == "samples/s" and result["work_per_step"] == 16
    assert result["config"] == {"spec": SPEC, "batch": 16, "samples_per_epoch": 80_000}
    assert 0 < result["throughput"] <= 8000
    assert result["epoch_s"] == pytest.approx(80_000 / result["throughput"])


def test_the_report_names_the_model_by_its_spec_and_its_epoch():
    config = {"spec": SPEC, "batch": 16, "samples_per_epoch": 50_000}
    assert workloads.title("model", config) == f"your model {SPEC}"
    assert workloads.describe("model", config) == f"{SPEC}, batch 16"
    assert workloads.describe("model", {**config, "name": "tiny CNN"}) == "tiny CNN, batch 16"
    assert workloads.wait_seconds("model", config, 1000.0) == ("one epoch of your data, 50,000 samples", 50.0)
    assert workloads.wait_seconds("model", {"spec": SPEC, "batch": 16}, 1000.0) is None
    assert workloads.title("resnet") == "ResNet"


def bench_py(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(payload.path("bench")), *args], capture_output=True, text=True,
                          timeout=60)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--framework", "torch", "--model", "mylab/model.py"], ["--model 'mylab/model.py'", "package.module"]),
        (["--framework", "tensorflow", "--model", SPEC], ["runs PyTorch models for now", "--framework torch"]),
    ],
)
def test_bench_py_refuses_a_bad_model_in_one_line_before_any_framework_loads(args, words):
    result = bench_py(*args)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench.py: --model "), result.stderr
    assert all(word in lines[0] for word in words), lines[0]


def test_with_a_model_the_builtin_workloads_run_only_when_named():
    args = bench.parse_args(["--framework", "torch", "--model", SPEC])
    assert args.workloads == []
    assert bench.parse_args(["--framework", "torch", "--model", SPEC, "--workloads", "matmul"]).workloads == ["matmul"]
    assert bench.parse_args(["--framework", "torch"]).workloads == list(bench.WORKLOADS)


def test_the_host_runs_the_model_in_the_lab_image_with_torch_and_no_builtin_workload_by_default():
    options = with_defaults(BenchOptions(framework=None, workloads=None, model=SPEC))
    assert (options.framework, options.workloads) == ("torch", "")
    # without --model: the lab's framework (labstack.framework), every workload
    plain = with_defaults(BenchOptions(framework=None, workloads=None, default_framework="tensorflow"))
    assert (plain.framework, plain.workloads) == ("tensorflow", "all")
    image = load_matrix().image("torch", "cpu")
    target = Target(image, "image", "cpu", "lab")
    assert target.ref == f"{image.ref}-lab" and target.label == "torch-cpu-lab (container)"
    assert bench_arguments(target, [], True, SPEC) == [
        "--framework", "torch", "--device", "cpu", "--model", SPEC, "--quick",
    ]  # fmt: skip


def test_the_project_folder_is_the_option_then_the_setting_then_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert project_folder(None, "") == tmp_path
    (tmp_path / "code").mkdir()
    assert project_folder(str(tmp_path / "code"), "elsewhere") == tmp_path / "code"
    assert project_folder(None, str(tmp_path / "code")) == tmp_path / "code"
    with pytest.raises(BadInput, match="is not a folder"):
        project_folder(str(tmp_path / "missing"), "")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--model", "mylab.model"], ["--model 'mylab.model'", "give package.module:function"]),
        (["--model", SPEC, "--framework", "tensorflow"], ["runs PyTorch models for now, not tensorflow"]),
        (["--model", SPEC, "--framework", "all"], ["not tensorflow"]),
        (["--model", SPEC, "--local"], ["--local"]),
        (["--model", SPEC, "--project", "/nonexistent/lab"], ["--project /nonexistent/lab", "not a folder"]),
    ],
)
def test_invoke_benchmark_refuses_a_bad_model_in_one_line_before_docker(args, words):
    # an unreachable daemon proves nothing was asked of Docker: that would be exit 3
    result = run_invoke("benchmark", *args, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert_one_line_failure(result, 2, *words)
