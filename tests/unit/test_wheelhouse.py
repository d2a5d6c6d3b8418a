import hashlib
import zipfile

import pytest

from labstack.build.lock import Pin
from labstack.build.wheelhouse import find_wheels, manylinux_platforms, sync_dir
from labstack.errors import LabstackError
from labstack.matrix import load_matrix

MATRIX = load_matrix()


def make_wheel(folder, filename, payload=b"hello"):
    path = folder / filename
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("demo/__init__.py", payload)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_wheel_with_the_locked_hash_is_found(tmp_path):
    path, digest = make_wheel(tmp_path, "demo-1.0-py3-none-any.whl")
    found, missing = find_wheels([Pin("demo", "1.0", frozenset({digest}))], MATRIX, tmp_path)
    assert found == {"demo": path} and missing == []


def test_a_tampered_wheel_is_an_error_not_a_download(tmp_path):
    make_wheel(tmp_path, "demo-1.0-py3-none-any.whl", payload=b"evil")
    (tmp_path / "genuine").mkdir()
    _, digest = make_wheel(tmp_path / "genuine", "demo-1.0-py3-none-any.whl")
    with pytest.raises(LabstackError, match="does not match the hash"):
        find_wheels([Pin("demo", "1.0", frozenset({digest}))], MATRIX, tmp_path)


def test_wheels_for_another_python_or_platform_are_ignored(tmp_path):
    make_wheel(tmp_path, "demo-1.0-cp312-cp312-manylinux_2_17_x86_64.whl")
    make_wheel(tmp_path, "demo-1.0-cp311-cp311-macosx_11_0_arm64.whl")
    make_wheel(tmp_path, "demo-1.0-cp311-cp311-manylinux_2_39_x86_64.whl")
    pin = Pin("demo", "1.0", frozenset({"0" * 64}))
    assert find_wheels([pin], MATRIX, tmp_path) == ({}, [pin])


def test_local_versions_are_matched_exactly(tmp_path):
    _, digest = make_wheel(tmp_path, "demo-2.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
    found, _ = find_wheels([Pin("demo", "2.0+cpu", frozenset({digest}))], MATRIX, tmp_path)
    assert "demo" in found
    _, missing = find_wheels([Pin("demo", "2.0", frozenset({digest}))], MATRIX, tmp_path)
    assert [p.version for p in missing] == ["2.0"]


def test_manylinux_platforms_follow_the_glibc_of_the_image():
    platforms = manylinux_platforms(MATRIX)
    assert platforms[0] == "manylinux_2_36_x86_64"
    assert "manylinux_2_17_x86_64" in platforms and "manylinux2014_x86_64" in platforms
    assert "manylinux_2_37_x86_64" not in platforms


def test_sync_dir_leaves_exactly_the_given_files_hard_linked(tmp_path):
    source = tmp_path / "a.whl"
    source.write_bytes(b"a")
    target = tmp_path / "ctx"
    target.mkdir()
    (target / "stale.whl").write_bytes(b"old")
    sync_dir(target, {"a.whl": source})
    assert sorted(p.name for p in target.iterdir()) == ["a.whl"]
    assert (target / "a.whl").stat().st_ino == source.stat().st_ino


def test_a_wheel_that_matched_the_lock_before_blames_a_changed_lock_hash_and_a_changed_wheel_is_blamed(tmp_path):
    _, digest = make_wheel(tmp_path, "demo-1.0-py3-none-any.whl")
    find_wheels([Pin("demo", "1.0", frozenset({digest}))], MATRIX, tmp_path)  # matched: recorded
    edited = Pin("demo", "1.0", frozenset({"0" * 64}))
    with pytest.raises(LabstackError) as err:
        find_wheels([edited], MATRIX, tmp_path)
    assert str(err.value).startswith("the lockfile: the --hash of demo==1.0 does not match the wheel the index serves")
    assert "the lock was probably edited" in str(err.value) and "tampered" not in str(err.value)
    make_wheel(tmp_path, "demo-1.0-py3-none-any.whl", payload=b"evil")
    with pytest.raises(LabstackError, match="tampered or from another source"):
        find_wheels([Pin("demo", "1.0", frozenset({digest}))], MATRIX, tmp_path)
