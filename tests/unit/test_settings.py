"""A lab's defaults come from invoke's configuration; the older variables still win over the files."""

from __future__ import annotations

import pytest

from labstack import ROOT
from labstack.errors import LabstackError
from labstack.settings import DEFAULTS, Settings, export, from_config
from tests.unit.test_cli import run_invoke


def test_without_configuration_the_defaults_hold():
    assert from_config(None, environ={}) == Settings()
    assert DEFAULTS["hosts"] == "local://" and DEFAULTS["framework"] == "torch"


def test_configuration_then_the_variables_over_it():
    config = {"repository": "lab.example:5000/labstack", "cache": "/srv/cache", "hosts": "ssh://lab@gpu1"}
    assert from_config(config, environ={}).repository == "lab.example:5000/labstack"
    settings = from_config(config, environ={"LABSTACK_REPOSITORY": "mine", "LABSTACK_CACHE": ""})
    assert (settings.repository, settings.cache, settings.hosts) == ("mine", "/srv/cache", "ssh://lab@gpu1")


@pytest.mark.parametrize(
    ("config", "words"), [({"host": "x"}, "unknown setting labstack.host"), ({"hosts": 3}, "text")]
)
def test_a_wrong_setting_is_bad_input(config, words):
    with pytest.raises(LabstackError) as err:
        from_config(config, environ={})
    assert err.value.code == 2 and words in str(err.value)


def test_the_namespace_cache_and_ssh_config_are_exported_for_the_library_and_its_child_processes():
    environ: dict[str, str] = {}
    export(Settings(repository="labtest", cache="/tmp/c", ssh_config="/lab/ssh_config"), environ)
    assert environ == {
        "LABSTACK_REPOSITORY": "labtest",
        "LABSTACK_CACHE": "/tmp/c",
        "LABSTACK_SSH_CONFIG": "/lab/ssh_config",
    }
    assert from_config({}, {"LABSTACK_SSH_CONFIG": "/mine"}).ssh_config == "/mine"


def test_the_example_file_names_every_setting():
    example = (ROOT / "invoke.example.yaml").read_text()
    for key in DEFAULTS:
        assert f"  {key}:" in example


def test_a_configured_host_is_what_validate_checks(tmp_path):
    config = tmp_path / "lab.yaml"
    config.write_text("labstack:\n  hosts: ssh://-oProxyCommand=true\n")
    result = run_invoke("-f", str(config), "validate", "--image", "none")
    assert result.returncode == 2 and "bad host 'ssh://-oProxyCommand=true'" in result.stderr, result.stderr


def test_a_configured_framework_is_the_default_of_the_one_framework_tasks(tmp_path):
    config = tmp_path / "lab.yaml"
    config.write_text("labstack:\n  framework: jax\n")
    result = run_invoke("-f", str(config), "up-cpu")
    assert result.returncode == 2 and "unknown framework jax" in result.stderr, result.stderr


@pytest.mark.parametrize("task", ["env", "up-cpu"])
def test_a_configured_project_folder_must_exist_before_anything_is_written(tmp_path, task):
    config = tmp_path / "lab.yaml"
    config.write_text(f"labstack:\n  project: {tmp_path / 'no-such-project'}\n")
    env_file = ROOT / ".env"
    before = env_file.read_bytes() if env_file.is_file() else None
    result = run_invoke("-f", str(config), task)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "labstack.project" in lines[0] and "no-such-project, which is not a folder" in lines[0]
    assert (env_file.read_bytes() if env_file.is_file() else None) == before
