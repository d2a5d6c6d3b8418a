"""A lab's defaults, from invoke's configuration: `invoke.yaml` beside tasks.py (invoke.example.yaml shows every
setting), `~/.invoke.yaml`, `INVOKE_LABSTACK_<NAME>` variables or `invoke -f FILE`. The older variables
LABSTACK_REPOSITORY, LABSTACK_CACHE and LABSTACK_SSH_CONFIG are still honoured, and win over the files, as
variables do in invoke.

The values reach the library the one way it already reads them: the namespace, the cache and the ssh config
file are exported to the environment (so `invoke validate`'s pytest processes see them too); the default hosts,
framework and project folder are the tasks' defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from labstack.errors import BadInput
from labstack.hosts import SSH_CONFIG_VARIABLE
from labstack.matrix import REPOSITORY_VARIABLE
from labstack.paths import CACHE_VARIABLE


@dataclass(frozen=True)
class Settings:
    repository: str = ""  # namespace of the framework images, e.g. HOST:PORT/labstack for a lab registry
    cache: str = ""  # wheelhouse, build contexts, bench venvs (default: ~/.cache/labstack)
    hosts: str = "local://"  # what `invoke validate` checks besides the images; `invoke deploy`'s servers
    framework: str = "torch"  # the framework of `invoke env`, `up-cpu`, `up-gpu`
    project: str = ""  # the lab's code, mounted at /work by train and notebook (default: where compose runs)
    ssh_config: str = ""  # an ssh config file for labstack's ssh (`-F FILE`); default: the user's own
    gpu_hour_price: str = ""  # what an hour on a GPU costs the lab (a cloud GPU's rate, its own server's): "2.49 USD"
    cpu_hour_price: str = ""  # what an hour on this CPU machine costs; the benchmark gives costs only with prices


DEFAULTS = {f.name: f.default for f in fields(Settings)}
NUMBERS = ("gpu_hour_price", "cpu_hour_price")  # YAML reads 2.49 as a number: taken as its text
VARIABLES = {"repository": REPOSITORY_VARIABLE, "cache": CACHE_VARIABLE, "ssh_config": SSH_CONFIG_VARIABLE}


def from_config(config: Mapping | None, environ: Mapping[str, str] = os.environ) -> Settings:
    """The `labstack:` section of invoke's configuration, with the environment variables over it."""
    values = dict(DEFAULTS)
    for key, value in (config or {}).items():
        if key not in DEFAULTS:
            raise BadInput(f"unknown setting labstack.{key} in invoke's configuration: use {', '.join(DEFAULTS)}")
        if value is not None:
            if key in NUMBERS and isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                raise BadInput(f"labstack.{key} in invoke's configuration must be text, not {value!r}")
            values[key] = value
    for key, variable in VARIABLES.items():
        if environ.get(variable):
            values[key] = environ[variable]
    return Settings(**values)


def export(settings: Settings, environ: dict[str, str] | None = None) -> Settings:
    """Make the namespace and cache the environment's, where the library and its child processes read them."""
    environ = os.environ if environ is None else environ
    for key, variable in VARIABLES.items():
        value = getattr(settings, key)
        if value:
            environ[variable] = value
    return settings
