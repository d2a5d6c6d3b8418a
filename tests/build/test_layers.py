"""The lab's own packages, end to end: `invoke lab-add` in a copy of this checkout re-locks every lab and notebook
lock, and `invoke build --layer notebook` then rebuilds only the layers (the framework image comes from cache) with
the new package importable, and the notebook on top of the new lab image."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from labstack import ROOT
from labstack.build.layers import LAYERS, layer_ref, lockfile
from labstack.matrix import load_matrix
from tests.invoking import checkout_copy, invoke_in_copy

MATRIX = load_matrix()
# Small, pure Python, no dependencies: what it adds is the point, not its size.
PACKAGE = "tabulate"


def test_lab_add_relocks_every_layer_and_the_rebuild_touches_only_the_layers(tmp_path, client, built):
    image = MATRIX.image("torch", "cpu")
    if image.name not in built:
        pytest.skip("needs the torch cpu image: run with --variant cpu or all")
    copy = checkout_copy(tmp_path / "checkout")
    namespace = f"labstack-test-{uuid.uuid4().hex[:6]}"
    refs = {layer: layer_ref(image, layer).replace(image.repository.split("/")[0], namespace, 1)
            for layer in ("framework", "lab", "notebook")}  # fmt: skip
    try:
        first = invoke_in_copy(copy, namespace, "build", "--framework", "torch", "--layer", "framework")
        assert first.returncode == 0, first.stderr[-3000:]
        framework_id = client.images.get(refs["framework"]).id

        added = invoke_in_copy(copy, namespace, "lab-add", PACKAGE)
        assert added.returncode == 0, added.stderr[-3000:]
        matrix_text = (copy / "images" / "matrix.toml").read_text()
        assert f'packages = ["{PACKAGE}==' in matrix_text, "the package is not in [lab] packages, pinned"
        for each in MATRIX.images:
            for layer in LAYERS.values():
                path = lockfile(each, layer).relative_to(ROOT)
                changed = (copy / path).read_text() != (ROOT / path).read_text()
                assert changed, f"{path} was not re-locked"
                if layer.name == "lab":
                    assert f"\n{PACKAGE}==" in (copy / path).read_text(), f"{path} lacks {PACKAGE}"

        rebuilt = invoke_in_copy(copy, namespace, "build", "--framework", "torch", "--layer", "notebook")
        assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
        assert client.images.get(refs["framework"]).id == framework_id, "the framework image was rebuilt"
        notebook = client.images.get(refs["notebook"])
        assert notebook.labels["org.opencontainers.image.base.name"] == refs["lab"]
        out = client.containers.run(
            refs["notebook"], ["python", "-c", f"import {PACKAGE}, jupyterlab; print({PACKAGE}.__file__)"],
            remove=True, network_mode="none",
        )  # fmt: skip
        assert out.decode().strip().startswith("/opt/venv/"), out
    finally:
        for ref in refs.values():  # tags of this test's namespace; the cached layers stay for everyone
            subprocess.run(["docker", "rmi", "--force", ref], capture_output=True, check=False)
