import pytest

from labstack.errors import LabstackError
from labstack.matrix import MATRIX_PATH, load_matrix, parse_matrix


def test_default_selection_is_the_cpu_images():
    images = load_matrix().select()
    assert [i.name for i in images] == ["torch-cpu", "tensorflow-cpu"]


def test_all_selects_the_four_images():
    assert len(load_matrix().select("all", "all")) == 4


@pytest.mark.parametrize(("framework", "variant", "word"), [("jax", "cpu", "framework"), ("torch", "rocm", "variant")])
def test_unknown_names_are_rejected_with_the_choices(framework, variant, word):
    with pytest.raises(LabstackError) as err:
        load_matrix().select(framework, variant)
    assert err.value.code == 2
    assert f"unknown {word}" in str(err.value) and "choose from" in str(err.value)


def test_tags_and_labels_derive_from_the_matrix(monkeypatch):
    monkeypatch.delenv("LABSTACK_REPOSITORY", raising=False)
    torch_cuda = load_matrix().image("torch", "cuda")
    assert torch_cuda.ref == f"labstack/torch:{torch_cuda.version}-cuda{torch_cuda.cuda}"
    monkeypatch.setenv("LABSTACK_REPOSITORY", "registry.lab.example/ml")
    assert torch_cuda.ref == f"registry.lab.example/ml/torch:{torch_cuda.version}-cuda{torch_cuda.cuda}"
    labels = torch_cuda.labels()
    assert labels["labstack.min_driver"] == torch_cuda.min_driver
    assert labels["labstack.cuda"] == torch_cuda.cuda
    assert "labstack.min_driver" not in load_matrix().image("torch", "cpu").labels()


def test_every_cuda_cell_states_cuda_and_a_minimum_driver():
    for image in load_matrix().select("all", "cuda"):
        assert image.cuda and image.min_driver, image.name


def test_cuda_package_patterns():
    matrix = load_matrix()
    assert matrix.is_cuda_package("nvidia-cublas-cu12")
    assert matrix.is_cuda_package("nvidia_cudnn_cu13")
    assert matrix.is_cuda_package("triton")
    assert not matrix.is_cuda_package("torch")
    assert not matrix.is_cuda_package("numpy")


def test_a_changed_matrix_changes_the_parsed_requirements():
    text = MATRIX_PATH.read_text().replace('"torch==2.13.0+cpu"', '"torch==2.12.0+cpu"')
    assert parse_matrix(text).image("torch", "cpu").requirements == ("torch==2.12.0+cpu",)
