"""The build pipeline's promises, checked against the real Docker Engine and the real images."""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from labstack.build.images import image_build_args, stage_context
from labstack.build.lock import read_lock
from labstack.build.pipconf import host_pip_sources
from labstack.build.wheelhouse import ensure_wheels
from labstack.engine import check_disk, docker_build
from labstack.errors import LabstackError
from labstack.matrix import REPOSITORY_VARIABLE, load_matrix
from labstack.paths import cache_dir
from tests.invoking import assert_one_line_failure, checkout_copy, invoke_in_copy

MATRIX = load_matrix()


def docker_cli(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=600).stdout


PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s+(.+?)\s+-----END CERTIFICATE-----", re.S)
CA_VARIABLES = ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


def certificate_lines(pem_text: bytes) -> set[bytes]:
    """One distinctive 64-character base64 line from the middle of each certificate."""
    lines = set()
    for body in PEM.findall(pem_text):
        rows = body.split()
        lines.add(rows[len(rows) // 2])
    return lines


def host_private_ca_lines() -> set[bytes]:
    """Lines of the CAs the host trusts beyond Debian's Mozilla set: a TLS proxy's CA, a company CA."""
    bundle = host_pip_sources().cert or "/etc/ssl/certs/ca-certificates.crt"
    trusted = certificate_lines(Path(bundle).read_bytes()) if Path(bundle).is_file() else set()
    public = set()
    for crt in Path("/usr/share/ca-certificates/mozilla").glob("*.crt"):
        public |= certificate_lines(crt.read_bytes())
    return trusted - public


def find_in_saved_image(ref: str, needles: set[bytes]) -> list[str]:
    """Stream `docker save` (every layer, deleted files included, and the image config) and return the names
    of the files that contain any needle."""
    overlap = max(len(n) for n in needles)
    hits = []
    with (
        subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE) as proc,
        tarfile.open(fileobj=proc.stdout, mode="r|") as outer,
    ):
        for member in outer:
            if not member.isreg():
                continue
            handle = outer.extractfile(member)
            if member.name.endswith("layer.tar"):
                with tarfile.open(fileobj=handle, mode="r|") as layer:
                    for entry in layer:
                        if entry.isreg() and _contains(layer.extractfile(entry), needles, overlap):
                            hits.append(f"{member.name}:{entry.name}")
            elif _contains(handle, needles, overlap):
                hits.append(member.name)
    return hits


def _contains(handle, needles: set[bytes], overlap: int) -> bool:
    tail = b""
    while block := handle.read(8 << 20):
        window = tail + block
        if any(n in window for n in needles):
            return True
        tail = window[-overlap:]
    return False


def test_no_ca_bundle_or_secret_in_any_layer_or_the_history(image, built):
    history = docker_cli("history", "--no-trunc", "--format", "{{.CreatedBy}}", image.ref)
    for variable in CA_VARIABLES:
        assert variable not in history, f"{variable} appears in the build history of {image.ref}"
    assert "type=secret" not in history
    needles = host_private_ca_lines()
    if not needles:
        pytest.skip("this host trusts no CA beyond Debian's public set: there is no private CA that could leak")
    assert find_in_saved_image(image.ref, needles) == []


def test_cpu_and_cuda_images_share_every_layer_below_the_framework_install(client, built):
    frameworks = {i.framework for i in MATRIX.select("all", "all") if i.name in built}
    pairs = [f for f in frameworks if f"{f}-cpu" in built and f"{f}-cuda" in built]
    if not pairs:
        pytest.skip("needs both variants of a framework: run with --variant all")
    for framework in pairs:
        cpu, cuda = (client.images.get(MATRIX.image(framework, v).ref) for v in ("cpu", "cuda"))
        base = client.images.get(cpu.labels["org.opencontainers.image.base.name"])
        base_layers = base.attrs["RootFS"]["Layers"]
        cpu_layers, cuda_layers = cpu.attrs["RootFS"]["Layers"], cuda.attrs["RootFS"]["Layers"]
        assert cpu_layers[: len(base_layers)] == base_layers == cuda_layers[: len(base_layers)]
        assert cpu_layers[len(base_layers)] != cuda_layers[len(base_layers)]


@pytest.mark.parametrize(
    ("wheels_of", "claimed", "message"),
    [("cpu", "cuda", "cuda image got a CPU build"), ("cuda", "cpu", "cpu image got a CUDA build")],
    ids=["cuda-image-with-cpu-wheel", "cpu-image-with-cuda-wheels"],
)
def test_build_fails_when_the_wheels_do_not_match_the_variant(wheels_of, claimed, message, built, client, capfd):
    source = MATRIX.image("torch", wheels_of)
    if source.name not in built:
        pytest.skip(f"needs the {source.name} wheels: run with --variant all")
    context = stage_context(source, ensure_wheels(read_lock(source, MATRIX), MATRIX))
    base_ref = client.images.get(source.ref).labels["org.opencontainers.image.base.name"]
    with pytest.raises(LabstackError, match=r"docker build of .* failed"):
        docker_build(
            dockerfile=source.dockerfile,
            context=context,
            tag="labstack-test/guard:mismatch",
            build_args=image_build_args(MATRIX, MATRIX.image("torch", claimed), base_ref),
            labels={},
        )
    captured = capfd.readouterr()
    assert message in captured.out + captured.err


def test_build_fails_when_the_framework_is_not_the_version_of_the_tag(built, client, capfd):
    """The image's own last word: whatever the host checked, the framework installed is the release it is tagged
    with (here the torch cpu wheels under a tag that says another version)."""
    source = MATRIX.image("torch", "cpu")
    if source.name not in built:
        pytest.skip(f"needs the {source.name} wheels: run with --variant cpu or all")
    context = stage_context(source, ensure_wheels(read_lock(source, MATRIX), MATRIX))
    base_ref = client.images.get(source.ref).labels["org.opencontainers.image.base.name"]
    tag = f"{source.repository}:mislabelled-2.99.0"
    try:
        with pytest.raises(LabstackError, match=r"docker build of .* failed"):
            docker_build(
                dockerfile=source.dockerfile,
                context=context,
                tag=tag,
                build_args=image_build_args(MATRIX, source, base_ref) | {"LABSTACK_FRAMEWORK_VERSION": "2.99.0"},
                labels={},
            )
    finally:
        subprocess.run(["docker", "rmi", "--force", tag], capture_output=True, check=False)
    captured = capfd.readouterr()
    assert f"image tagged 2.99.0 holds torch {source.version}+cpu" in captured.out + captured.err


def images_of(client, namespace: str) -> dict[str, str]:
    return {tag: i.id for i in client.images.list(filters={"reference": f"{namespace}/*"}) for tag in i.tags}


def test_a_framework_version_changed_alone_is_refused_before_anything_is_built(tmp_path, client):
    """Issue 14: `version` changed in the matrix without the requirements left the lock current and built an image
    tagged with the new version holding the old framework. In a copy of this checkout, the build refuses it."""
    image = MATRIX.image("torch", "cpu")
    pinned = {p.name: p.version for p in read_lock(image, MATRIX)}["torch"]
    copy = checkout_copy(tmp_path / "checkout")
    matrix = copy / "images" / "matrix.toml"
    old = f'version = "{image.version}"'
    assert matrix.read_text().count(old) == 1
    matrix.write_text(matrix.read_text().replace(old, 'version = "2.99.0"'))
    namespace = os.environ.get(REPOSITORY_VARIABLE) or "labstack-test"
    before = images_of(client, namespace)
    try:
        result = invoke_in_copy(
            copy, namespace, "build", "--framework", "torch", "--variant", "cpu", "--layer", "framework"
        )
        assert_one_line_failure(
            result, 1, "images/matrix.toml [frameworks.torch] version is 2.99.0", f"pins torch {pinned}",
            "invoke lock --framework torch",
        )  # fmt: skip
        assert images_of(client, namespace) == before, "the build tagged or replaced an image"
        assert "docker build" not in result.stdout + result.stderr
    finally:  # before the fix this built the mislabelled image: never leave it behind
        subprocess.run(["docker", "rmi", "--force", f"{namespace}/torch:2.99.0-cpu"], capture_output=True, check=False)


def test_not_enough_disk_is_refused_before_building(client):
    with pytest.raises(LabstackError, match="not enough disk space") as err:
        check_disk(client, needed_bytes=10**18, cache=cache_dir())
    assert err.value.code == 4


def test_the_layer_scan_finds_a_ca_planted_in_an_image(client, tmp_path):
    """The scan above must be able to fail: plant the host's private CA in a throwaway image and find it."""
    needles = host_private_ca_lines()
    if not needles:
        pytest.skip("this host trusts no CA beyond Debian's public set: nothing to plant")
    bundle = host_pip_sources().cert or "/etc/ssl/certs/ca-certificates.crt"
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as archive:
        archive.add(bundle, arcname="etc/leaked-ca.pem")
    ref = "labstack-test/planted-ca:latest"
    client.api.import_image_from_file(str(rootfs), repository=ref.split(":")[0], tag="latest")
    try:
        assert any("etc/leaked-ca.pem" in hit for hit in find_in_saved_image(ref, needles))
    finally:
        client.images.remove(ref, force=True)
