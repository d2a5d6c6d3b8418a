import pytest

from labstack.errors import LabstackError
from labstack.matrix import MATRIX_PATH, load_matrix, parse_matrix
from tests.invoking import assert_one_line_failure, checkout_copy, invoke_in_copy


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


def edited_matrix(old: str, new: str, count: int = 1) -> str:
    text = MATRIX_PATH.read_text()
    assert old in text
    return text.replace(old, new, count)


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ("disk_gb = 3\n", 'disk_gb = "three"\n', ['[frameworks.torch.variants.cpu] disk_gb is "three"', "number"]),
        ("disk_gb = 3\n", "", ["[frameworks.torch.variants.cpu] has no disk_gb"]),
        ("uid = 1000", 'uid = "lab"', ['[base] uid is "lab": give a whole number']),
        (
            'packages = ["python3", "python3-venv", "tini", "ca-certificates"]',
            'packages = "python3"',
            ['[base] packages is "python3"', "list"],
        ),
        ("[notebook]\n", "[notebook_gone]\n", ["the file has no notebook"]),
        ('version = "2.13.0"', "version = 2.13", ["[frameworks.torch] version is 2.13", "quoted text"]),
        ('[python]\nversion = "3.11"', 'python = "3.11"\n[py]', ['[python] is "3.11": make it a table']),
    ],
)
def test_a_wrong_type_shape_or_missing_key_in_the_matrix_names_its_key(old, new, words):
    with pytest.raises(LabstackError) as err:
        parse_matrix(edited_matrix(old, new))
    assert err.value.code == 2
    assert str(err.value).startswith("images/matrix.toml: ")
    for word in words:
        assert word in str(err.value)


def test_invoke_refuses_a_bad_matrix_in_one_line_before_asking_docker(tmp_path, monkeypatch):
    copy = checkout_copy(tmp_path / "checkout")
    (copy / "images" / "matrix.toml").write_text(edited_matrix("disk_gb = 3\n", 'disk_gb = "three"\n'))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = invoke_in_copy(copy, "labstack-test", "build")
    assert_one_line_failure(result, 2, 'images/matrix.toml: [frameworks.torch.variants.cpu] disk_gb is "three"')
