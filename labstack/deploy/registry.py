"""A lab's own registry: Debian's `docker-registry` (registry v2.8) run by labstack itself on loopback, pushing
a local image to a registry by HOST:PORT, and reading a manifest's digest back over the registry's HTTP API.

The Debian package's own service is not used: it listens on :5000 on every interface. `LocalRegistry` runs the
binary with its own config, on 127.0.0.1 and a free port, as a child process that ends with the `with` block.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors

from labstack.errors import BadInput, LabstackError
from labstack.paths import cache_dir

REGISTRY_BINARY = Path("/usr/bin/docker-registry")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
PORT_TRIES = 5
# The port a storage was last served on, tried first: Docker remembers which layers a registry holds by its
# HOST:PORT, so the same port lets a push skip compressing the layers the registry already has (measured: the
# torch CPU image's 1 GB took 50 s to push again under a new port, for a change of 62 kB).
LAST_PORT = "last-port"
LOG_TAIL_LINES = 8
HTTP_TIMEOUT = 10.0
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
# A registry host as Docker 20.10's reference grammar takes it: DNS labels or an IPv4 address (no IPv6 literal).
HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$")
REACH_HINT = (
    "is the registry running and reachable from the Docker daemon? for a plain-http lab registry that is not on "
    "loopback, add it to the daemon's insecure-registries"
)


def default_storage() -> Path:
    return cache_dir() / "registry"


def no_proxy_opener() -> urllib.request.OpenerDirector:
    """The machine's proxy variables must not route a loopback or lab registry through a proxy."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def parse_registry(text: str) -> str:
    """A registry as `--registry` takes it, HOST:PORT and nothing else (no scheme, path or spaces), normalised."""
    shown = repr(text)
    if not text:
        raise BadInput("--registry is empty: give HOST:PORT, e.g. 127.0.0.1:5000")
    if text.startswith("-"):
        raise BadInput(f"registry {shown} starts with '-': give HOST:PORT, e.g. 127.0.0.1:5000")
    if any(c.isspace() for c in text):
        raise BadInput(f"registry {shown} contains spaces: give HOST:PORT, e.g. 127.0.0.1:5000")
    if "://" in text:
        raise BadInput(f"registry {shown} has a scheme: give HOST:PORT without http:// or https://")
    if "/" in text or "@" in text or "?" in text or "#" in text:
        raise BadInput(f"registry {shown} has a path: give HOST:PORT only; the repository comes from the image")
    if text.startswith("[") or text.count(":") > 1:
        raise BadInput(f"registry {shown}: IPv6 addresses are not supported by Docker 20.10's references; use a name")
    host, colon, port = text.partition(":")
    if not colon or not port:
        raise BadInput(f"registry {shown} has no port: give HOST:PORT, e.g. {host or '127.0.0.1'}:5000")
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise BadInput(f"registry {shown}: the port must be a number from 1 to 65535")
    if not host or not all(HOST_LABEL.match(label) for label in host.split(".")):
        raise BadInput(f"registry {shown}: {host!r} is not a host name or IPv4 address")
    return f"{host}:{int(port)}"


def split_ref(ref: str) -> tuple[str, str]:
    """(repository path without any registry host, tag) of a local image reference; the tag defaults to latest."""
    if "@" in ref:
        raise BadInput(f"{ref} is pinned by digest: push takes a tagged image (REPOSITORY:TAG)")
    first, slash, rest = ref.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        ref = rest  # the host of another registry: the path under it is what moves
    repository, colon, tag = ref.rpartition(":")
    if not colon or "/" in tag:
        repository, tag = ref, "latest"
    return repository, tag


def registry_ref(ref: str, registry: str) -> str:
    """`labstack/torch:2.13.0-cpu` at `HOST:PORT` -> `HOST:PORT/labstack/torch:2.13.0-cpu` (same path and tag)."""
    repository, tag = split_ref(ref)
    return f"{registry}/{repository}:{tag}"


def pinned_ref(registry_ref_: str, digest: str) -> str:
    """`HOST:PORT/repo:tag` and `sha256:...` -> `HOST:PORT/repo@sha256:...`: what a host pulls to get exactly it."""
    return f"{registry_ref_.rpartition(':')[0]}@{digest}"


def push_failure(ref: str, registry: str, message: str) -> LabstackError:
    reason = message.strip().splitlines()[0] if message.strip() else "no reason given"
    if "unauthorized" in reason or "authentication required" in reason or "denied" in reason:
        hint = f"log in first: `docker login {registry}`"
    elif "HTTP response to HTTPS client" in reason:
        hint = f"the registry speaks plain http: add {registry} to the daemon's insecure-registries (daemon.json)"
    else:
        hint = REACH_HINT
    return LabstackError(f"pushing {ref} to {registry} failed ({reason}): {hint}")


def push(
    client: docker.DockerClient,
    ref: str,
    registry: str,
    progress: Callable[[str], None] | None = None,
    keep_tag: bool = False,
) -> str:
    """Push the local image `ref` to `registry` (HOST:PORT) under the same repository path and tag; return the
    manifest digest (sha256:...). The HOST:PORT tag this needs on the daemon is removed afterwards, only the tag."""
    say = progress or (lambda text: None)
    target = registry_ref(ref, parse_registry(registry))
    repository, tag = target.rsplit(":", 1)
    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        raise LabstackError(f"{ref} is not on this Docker daemon: build it, or name an image it has") from None
    already_tagged = target in image.tags
    try:
        image.tag(repository, tag)
        return _stream_push(client, ref, registry, repository, tag, say)
    except docker.errors.APIError as err:
        raise push_failure(ref, registry, err.explanation or str(err)) from None
    finally:
        if not keep_tag and not already_tagged:
            # APIError: nothing was tagged (the tag call itself failed), so there is nothing to remove.
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(target, noprune=True)


def _stream_push(client, ref: str, registry: str, repository: str, tag: str, say: Callable[[str], None]) -> str:
    layers: dict[str, str] = {}  # layer id -> "preparing", "pushed", "exists", "mounted"
    digest = None
    for event in client.api.push(repository, tag, stream=True, decode=True):
        if "error" in event or "errorDetail" in event:
            detail = event.get("errorDetail") or {}
            raise push_failure(ref, registry, detail.get("message") or event.get("error") or "")
        status, layer = event.get("status", ""), event.get("id")
        if layer and status == "Preparing":
            if not layers:  # the daemon reached the registry: now there is something to say
                say(f"pushing {ref} to {repository}:{tag}")
            layers.setdefault(layer, "preparing")
        elif layer and (status in ("Pushed", "Layer already exists") or status.startswith("Mounted from")):
            outcome = {"Pushed": "pushed", "Layer already exists": "exists"}.get(status, "mounted")
            layers[layer] = outcome
            done = sum(state != "preparing" for state in layers.values())
            say(f"{ref}: layer {layer} {outcome} ({done}/{len(layers)})")
        aux = event.get("aux") or {}
        if aux.get("Digest"):
            digest = aux["Digest"]
    if not digest:
        raise LabstackError(f"pushing {ref} to {registry} reported no digest: {REACH_HINT}")
    counts = {state: sum(s == state for s in layers.values()) for state in ("pushed", "exists", "mounted")}
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    say(f"{ref}: {len(layers)} layer{'s' * (len(layers) != 1)} ({summary or 'none'}), {digest}")
    return digest


def manifest_digest(registry: str, repository: str, reference: str) -> str | None:
    """The digest the registry (plain http, as a lab registry on loopback is) gives the manifest of
    `repository:reference`, from its `Docker-Content-Digest` header; None when it has no such manifest."""
    url = f"http://{parse_registry(registry)}/v2/{repository}/manifests/{reference}"
    opener = no_proxy_opener()
    for method in ("HEAD", "GET"):
        request = urllib.request.Request(url, method=method, headers={"Accept": ", ".join(MANIFEST_TYPES)})
        try:
            with opener.open(request, timeout=HTTP_TIMEOUT) as response:
                digest = response.headers.get("Docker-Content-Digest")
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise LabstackError(f"the registry {registry} answered {err.code} for {repository}:{reference}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise LabstackError(f"cannot reach the registry {registry} ({reason}): {REACH_HINT}") from None
        if digest:
            return digest
    return None  # answered without the header: a registry that does not follow the v2 API here


def registry_config(storage: Path, port: int) -> str:
    """The registry's YAML config (v0.1): filesystem storage, no deletes, loopback only, no auth, no health
    checks. Strings are JSON-quoted, which YAML reads as they are."""
    return "\n".join(
        [
            "version: 0.1",
            "log:",
            "  level: info",
            "  formatter: text",
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {json.dumps(str(storage))}",
            "  delete:",
            "    enabled: false",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            f"  addr: {json.dumps(f'127.0.0.1:{port}')}",
            # One instance, so any secret does; a fixed one only silences the registry's warning about it.
            f"  secret: {json.dumps(secrets.token_hex(16))}",
            "health:",
            "  storagedriver:",
            "    enabled: false",
            "",
        ]
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:]) or "(empty log)"


class LocalRegistry:
    """`with LocalRegistry() as registry:` a registry on `registry.address` (127.0.0.1:PORT), storing in
    `storage` (default: the cache's registry/ folder), kept after it stops; its config and log live in a private
    temporary folder that goes with it."""

    def __init__(self, storage: Path | None = None) -> None:
        self.storage = Path(storage) if storage is not None else default_storage()
        self.port = 0
        self.address = ""
        self.folder: Path | None = None
        self.log = Path()
        self.process: subprocess.Popen | None = None
        self.pid: int | None = None  # the last registry process, still known after it stopped

    def __enter__(self) -> LocalRegistry:
        if not (REGISTRY_BINARY.is_file() and os.access(REGISTRY_BINARY, os.X_OK)):
            raise LabstackError(
                "docker-registry is missing: run scripts/bootstrap.sh --full (it installs Debian's docker-registry)"
            )
        try:
            self.storage.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise LabstackError(
                f"cannot use {self.storage} as the registry's storage ({err.strerror}): give a folder"
            ) from None
        self.folder = Path(tempfile.mkdtemp(prefix="labstack-registry-"))
        self.log = self.folder / "registry.log"
        try:
            last = self.storage / LAST_PORT
            ports = [int(last.read_text())] if last.is_file() and last.read_text().strip().isdigit() else []
            for port in itertools.chain(ports, (free_port() for _ in range(PORT_TRIES))):
                if self._start(port):
                    last.write_text(f"{port}\n")
                    return self
            raise LabstackError(f"the local registry found no free port in {PORT_TRIES} tries: {log_tail(self.log)}")
        except BaseException:
            self._stop()
            raise

    def __exit__(self, *exc_info) -> None:
        self._stop()

    def _start(self, port: int) -> bool:
        """Start on `port` and wait until /v2/ answers; False when another process took the port meanwhile."""
        assert self.folder is not None
        config = self.folder / "config.yml"
        config.write_text(registry_config(self.storage, port))
        # REGISTRY_* variables override the config file (REGISTRY_HTTP_ADDR would move it off loopback).
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with self.log.open("wb") as log:  # this try's log only: an earlier port's failure is not this one's
            self.process = subprocess.Popen(
                [str(REGISTRY_BINARY), "serve", str(config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        self.pid = self.process.pid
        self.port, self.address = port, f"127.0.0.1:{port}"
        url = f"http://{self.address}/v2/"
        opener = no_proxy_opener()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "address already in use" in self.log.read_text(errors="replace"):
                    self.process = None
                    return False
                raise LabstackError(
                    f"the local registry exited at start (exit {self.process.returncode}): {log_tail(self.log)}"
                )
            try:
                with opener.open(url, timeout=2) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise LabstackError(
            f"the local registry did not answer on {url} within {START_TIMEOUT:.0f} s: {log_tail(self.log)}"
        )

    def _stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
