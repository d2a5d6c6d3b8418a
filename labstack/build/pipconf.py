"""The host's pip configuration, turned into arguments for uv and for `pip download`.

Wheels are resolved and downloaded on the host because that is where the network, the proxy CA and
the package sources (e.g. a find-links folder holding the CPU torch wheel) are configured.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

CA_ENV_VARS = ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


@dataclass(frozen=True)
class PipSources:
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    cert: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def uv_args(self) -> list[str]:
        # pip looks at every source and takes the best match; uv's default stops at the first index that has
        # a package, which would hide PyPI's CUDA torch behind a local folder that holds only the CPU build.
        args = ["--index-strategy", "unsafe-best-match"]
        if self.no_index:
            args.append("--no-index")
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        return args

    def uv_env(self) -> dict[str, str]:
        """uv does not read pip's `cert`: hand the same CA bundle to it through SSL_CERT_FILE."""
        return {"SSL_CERT_FILE": self.cert} if self.cert else {}


def parse_pip_config_list(text: str) -> dict[str, str]:
    """Parse `pip config list` lines such as `global.find-links='/opt/wheels'`; later lines win."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, raw = line.partition("=")
        if not sep:
            continue
        option = key.rsplit(".", 1)[-1]
        try:
            values[option] = " ".join(shlex.split(raw))
        except ValueError:
            values[option] = raw.strip("'\"")
    return values


def find_ca_bundle(config: dict[str, str], environ: dict[str, str]) -> str | None:
    """The CA bundle the host trusts for PyPI: pip's `cert`, else PIP_CERT, SSL_CERT_FILE, REQUESTS_CA_BUNDLE."""
    candidates = [config.get("cert")] + [environ.get(name) for name in CA_ENV_VARS]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def sources_from_config(config: dict[str, str], environ: dict[str, str]) -> PipSources:
    return PipSources(
        index_url=config.get("index-url") or None,
        extra_index_urls=tuple(config.get("extra-index-url", "").split()),
        find_links=tuple(config.get("find-links", "").split()),
        no_index=config.get("no-index", "").lower() in {"1", "true", "yes", "on"},
        cert=find_ca_bundle(config, environ),
    )


def host_pip_sources() -> PipSources:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60, check=False
    )
    return sources_from_config(parse_pip_config_list(result.stdout), dict(os.environ))
