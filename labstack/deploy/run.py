"""A deploy: every host in parallel, each through connect -> preflight -> plan -> transfer -> verify -> tag ->
smoke, and one host's failure is that host's row, never the others'.

Transports. *registry*: the images are pushed once to a registry server labstack runs here on loopback (Debian's
docker-registry, a child process of this deploy), each host gets an ssh reverse tunnel to it, and pulls by
digest through that tunnel, so only the layers it lacks move. *ssh*: `docker save ID | ssh HOST docker load`,
the whole image each time, needing nothing but ssh. *auto*: registry, and ssh for a host whose sshd refuses
the tunnel (said in its row).

A host is never reported done before its verify: the ID the host holds after the transfer must be the image's
ID (or its manifest digest, which Docker's containerd image store reports as the ID). Only then does the tag
move, keeping what it pointed at as `<ref>-previous`.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from labstack import payload
from labstack.children import Children
from labstack.deploy.plan import (
    Action,
    LocalImage,
    PreflightFailure,
    containerd_store,
    layer_sizes,
    plan_host,
    same_image,
)
from labstack.deploy.registry import LocalRegistry, push, split_ref
from labstack.deploy.ssh import Connection, HostFailure, kill
from labstack.errors import LabstackError, first_line
from labstack.hosts import Host

VIAS = ("auto", "registry", "ssh")
FACTS_TIMEOUT_S = 120
TRANSFER_TIMEOUT_S = 3 * 3600
SMOKE_TIMEOUT_S = 300
CHUNK = 1 << 20
MANIFEST_TYPES = ", ".join(
    f"application/vnd.{kind}+json"
    for kind in (
        "docker.distribution.manifest.v2", "oci.image.manifest.v1",
        "docker.distribution.manifest.list.v2", "oci.image.index.v1",
    )
)  # fmt: skip
# Tag the new image, keeping what the name pointed at as -previous; the script is fixed, the IDs and names are
# its arguments (never shell text).
RETAG = 'set -e; if [ -n "$1" ]; then docker tag "$1" "$3"; fi; docker tag "$2" "$4"'


@dataclass
class HostResult:
    host: Host
    actions: list[Action] = field(default_factory=list)
    status: str = "pending"  # done | checked | FAILED | interrupted
    stage: str = ""
    reason: str = ""
    transport: str = ""
    tunnel_port: int | None = None  # the registry tunnel's port on the host (registry transport)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("done", "checked") and all(a.ok for a in self.actions)

    def fail(self, stage: str, reason: str) -> None:
        self.status, self.stage, self.reason = "FAILED", stage, reason


def local_images(client, refs: list[str]) -> list[LocalImage]:
    """What deploy needs to know of each image here: ID, labels, layers and their sizes, known digests."""
    images = []
    for ref in refs:
        attrs = client.images.get(ref).attrs
        layers = (attrs.get("RootFS") or {}).get("Layers") or []
        images.append(
            LocalImage(
                ref=ref,
                id=attrs["Id"],
                labels=(attrs.get("Config") or {}).get("Labels") or {},
                layers=tuple(layers),
                layer_sizes=layer_sizes(layers, client.api.history(attrs["Id"]), attrs.get("Size", 0)),
                size=attrs.get("Size", 0),
                digests=frozenset(d.rpartition("@")[2] for d in attrs.get("RepoDigests") or []),
                created=attrs.get("Created", ""),
            )
        )
    return images


def pulled_bytes(output: str, manifest: dict) -> int:
    """What a pull moved: the config and the layers docker downloaded (not those it says 'Already exists')."""
    fetched = {m.group(1) for m in re.finditer(r"^([0-9a-f]{12}): (?:Download|Pull) complete", output, re.M)}
    layers = manifest.get("layers") or []
    moved = sum(layer.get("size", 0) for layer in layers if layer.get("digest", "")[7:19] in fetched)
    return moved + (manifest.get("config") or {}).get("size", 0) if fetched else moved


def fetch_manifest(address: str, repository: str, digest: str) -> dict:
    """The image manifest (its layers and their sizes) of what was pushed; a containerd image store pushes an
    index, whose first entry for a real platform (not an attestation's `unknown`) is the image."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"http://{address}/v2/{repository}/manifests/{digest}", headers={"Accept": MANIFEST_TYPES}
    )
    with opener.open(request, timeout=30) as answer:
        manifest = json.loads(answer.read())
    for entry in manifest.get("manifests") or []:
        if (entry.get("platform") or {}).get("os") != "unknown":
            return fetch_manifest(address, repository, entry["digest"])
    return manifest


class Deploy:
    """One `invoke deploy`: the images, the options, the registry (started when a host first needs it) and the
    children to stop on Ctrl-C."""

    def __init__(self, client, images: list[LocalImage], via: str, check: bool, rollback: bool, named: bool, say):
        self.client, self.images, self.via = client, images, via
        self.check, self.rollback, self.named = check, rollback, named
        self.say = say
        self.children = Children()
        self.folder = Path(tempfile.mkdtemp(prefix="lsd-", dir="/tmp"))  # ssh control sockets: short paths
        self.lock = threading.Lock()
        self.registry_lock = threading.Lock()
        self.registry: LocalRegistry | None = None
        self.pushed: dict[str, tuple[str, str]] = {}  # ref -> (registry ref without tag, digest)
        self.manifests: dict[str, dict] = {}
        self.containerd: dict[Host, bool] = {}  # hosts whose Docker uses the containerd image store

    # --- the registry, shared by every host

    def start_registry(self) -> LocalRegistry:
        with self.registry_lock:  # not the push's lock: a host opens its tunnel while another host's push runs
            if self.registry is None:
                registry = LocalRegistry()
                registry.__enter__()
                self.registry = registry
                self.say(f"deploy registry on {registry.address} (storage {registry.storage})")
            return self.registry

    def pushed_image(self, image: LocalImage) -> tuple[str, str]:
        """(repository in the deploy registry, manifest digest): the image pushed once, whoever asks first."""
        registry = self.start_registry()
        with self.lock:
            if image.ref not in self.pushed:
                self.say(f"pushing {image.ref} to the deploy registry")
                started = time.monotonic()
                digest = push(self.client, image.ref, registry.address)
                repository = split_ref(image.ref)[0]
                self.pushed[image.ref] = (repository, digest)
                self.manifests[image.ref] = fetch_manifest(registry.address, repository, digest)
                self.say(f"pushed {image.ref} in {time.monotonic() - started:.1f} s: {digest[:19]}")
            return self.pushed[image.ref]

    def close(self) -> None:
        if self.registry is not None:
            with contextlib.suppress(Exception):
                self.registry.__exit__(None, None, None)
        with contextlib.suppress(OSError):
            for leftover in self.folder.iterdir():
                leftover.unlink()
            self.folder.rmdir()

    # --- one host

    def host(self, host: Host) -> HostResult:
        result = HostResult(host)
        started = time.monotonic()
        connection = Connection(host, self.folder, self.children)
        try:
            connection.open()
            facts = self.facts(connection)
            self.containerd[host] = containerd_store(facts)
            try:
                result.actions = plan_host(facts, self.images, host.label, self.named, self.rollback)
            except PreflightFailure as err:
                raise HostFailure("preflight", str(err)) from None
            if self.check:
                result.status = "checked"
                return result
            result.transport = self.via if self.via != "auto" else "registry"
            gpus = bool((facts.get("nvml") or {}).get("devices"))
            for action in result.actions:
                if action.kind in ("transfer", "rollback"):
                    self.apply(connection, result, action, gpus)
            result.status = "done"
        except HostFailure as err:
            if self.children.stopping:
                result.status = "interrupted"
            else:
                result.fail(err.stage, str(err))
        except KeyboardInterrupt:
            result.status = "interrupted"
        except LabstackError as err:  # here, not on the host: the registry or the push (its message has the fix)
            result.fail("registry", str(err))
        except Exception as err:  # a fault of labstack's own is this host's row too, never a traceback for all
            if self.children.stopping:
                result.status = "interrupted"
                return result
            result.fail("labstack", f"{type(err).__name__}: {first_line(err)} (a labstack bug: please report it)")
        finally:
            connection.close()
            result.seconds = round(time.monotonic() - started, 1)
        return result

    def facts(self, connection: Connection) -> dict:
        return self.hostfacts(connection, "preflight", *(image.ref for image in self.images))

    def hostfacts(self, connection: Connection, stage: str, *args: str):
        """payload/hostfacts.py run on the host from source (`python3 -`, the program on stdin): its JSON line."""
        done = connection.run(["python3", "-", *args], stage, FACTS_TIMEOUT_S, stdin=payload.standalone("hostfacts"))
        if done.returncode == 127:
            host = connection.host.label
            raise HostFailure(stage, f"no python3 on {host}: install it there (deploy's checks run with it)")
        try:
            return json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            reason = last_line(done.stderr, done.returncode)
            raise HostFailure(stage, f"the {stage} on {connection.host.label} failed: {reason}") from None

    def apply(self, connection: Connection, result: HostResult, action: Action, gpus: bool) -> None:
        """Transfer (or roll back), verify, tag, smoke-run one image; a failure fails this image on this host."""
        started = time.monotonic()
        try:
            if action.kind == "rollback":
                self.retag(connection, action.held_id, action.previous_id, action.image)
                action.done = "rolled back"
            else:
                self.transfer(connection, result, action)
            self.smoke(connection, action.image, gpus)
            action.seconds = round(time.monotonic() - started - action.waited, 1)
            self.say(f"{result.host.label}: {action.image.ref} {action.cell()}")
        except HostFailure as err:
            if self.children.stopping:  # its ssh was stopped by Ctrl-C or SIGTERM: not this host's failure
                raise KeyboardInterrupt from None
            action.fail(err.stage, str(err))
            self.say(f"{result.host.label}: {action.image.ref} FAILED ({err.stage}): {err}")

    def transfer(self, connection: Connection, result: HostResult, action: Action) -> str:
        """By the registry, or by ssh: from the start (--via ssh), or under --via auto for a host whose sshd
        refuses the tunnel, or for every host when the deploy registry cannot start here."""
        if result.transport == "registry":
            try:
                return self.pull(connection, result, action)
            except HostFailure as err:
                if err.stage != "tunnel" or self.via != "auto":
                    raise
                self.fall_back(result, f"{err}; sent by ssh instead (--via auto)")
            except LabstackError as err:  # the registry here: not started, or the push failed
                if self.via != "auto":
                    raise HostFailure("registry", str(err)) from None
                self.fall_back(result, f"the deploy registry failed here ({err}); sent by ssh instead (--via auto)")
        return self.load(connection, action)

    def fall_back(self, result: HostResult, note: str) -> None:
        result.transport = "ssh"
        result.notes.append(note)
        self.say(f"{result.host.label}: {note}")

    def pull(self, connection: Connection, result: HostResult, action: Action) -> str:
        image = action.image
        if connection.tunnel_port is None:  # one tunnel per host, opened before anything is pushed for it
            connection.tunnel_port = result.tunnel_port = connection.forward(self.start_registry().port)
        waiting = time.monotonic()
        repository, digest = self.pushed_image(image)
        action.waited = round(time.monotonic() - waiting, 1)  # the push, shared by every host: not this host's time
        remote = f"127.0.0.1:{connection.tunnel_port}/{repository}@{digest}"
        pulled = connection.run(["docker", "pull", remote], "transfer", TRANSFER_TIMEOUT_S)
        if pulled.returncode:
            raise HostFailure("transfer", f"docker pull on {result.host.label} failed: {said(pulled)}")
        action.sent_bytes = pulled_bytes(pulled.stdout, self.manifests[image.ref])
        action.done = "pulled"
        try:
            held = self.verify(connection, image, remote, digest)
            self.retag(connection, action.held_id, held, image)
        finally:
            connection.run(["docker", "image", "rm", remote], "tag")  # the tunnel's name only; the image stays
        return held

    def load(self, connection: Connection, action: Action) -> str:
        """`docker save ID | ssh HOST docker load`, counting the bytes; then verify and tag."""
        image, host = action.image, connection.host.label
        with contextlib.ExitStack() as stack:
            save = stack.enter_context(
                self.children.start(["docker", "save", image.id], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            )
            load = stack.enter_context(
                self.children.start(
                    connection.command(["docker", "load"]), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )  # fmt: skip
            sent = 0
            try:
                while chunk := save.stdout.read(CHUNK):
                    load.stdin.write(chunk)
                    sent += len(chunk)
                load.stdin.close()
            except BrokenPipeError:
                pass  # docker load stopped reading: its exit code and stderr say why
            load.stdin = None  # closed: communicate() must not flush it
            out, err = load.communicate(timeout=TRANSFER_TIMEOUT_S)
            save_err = save.stderr.read()
            save.wait()
            if load.returncode < 0 or save.returncode < 0:
                raise KeyboardInterrupt
        if save.returncode:
            reason = last_line(save_err, save.returncode)
            raise HostFailure("transfer", f"docker save {image.ref} failed here: {reason}")
        if load.returncode:
            raise HostFailure("transfer", f"docker load on {host} failed: {last_line(err, load.returncode)}")
        action.sent_bytes, action.done = sent, "loaded"
        found = re.search(r"Loaded image(?: ID)?: (\S+)", out.decode(errors="replace"))
        held = self.verify(connection, image, found.group(1) if found else image.id)
        self.retag(connection, action.held_id, held, image)
        return held

    def verify(self, connection: Connection, image: LocalImage, name: str, digest: str = "") -> str:
        """The ID the host holds under `name` after the transfer, if it is this image; else a HostFailure."""
        held = self.hostfacts(connection, "verify", "--image", name)  # what the host holds under that name
        if not same_image(image, held, containerd=self.containerd.get(connection.host, False), digest=digest):
            have = (held or {}).get("id", "")[:19] or "nothing"
            raise HostFailure(
                "verify", f"{connection.host.label} holds {have} after the transfer, not {image.id[:19]}: deploy again"
            )
        return held["id"]

    def retag(self, connection: Connection, held_id: str | None, new_id: str, image: LocalImage) -> None:
        """Point the name at the new image; what it pointed at before becomes -previous. Then check the name."""
        keep = held_id if held_id and held_id != new_id else ""
        done = connection.run(["sh", "-c", RETAG, "retag", keep, new_id, image.previous, image.ref], "tag")
        if done.returncode:
            raise HostFailure("tag", f"docker tag on {connection.host.label} failed: {said(done)}")
        named = connection.run(["docker", "image", "inspect", "--format", "{{.Id}}", image.ref], "tag")
        if named.stdout.strip() != new_id:
            raise HostFailure("tag", f"{image.ref} on {connection.host.label} does not point at {new_id[:19]}")

    def smoke(self, connection: Connection, image: LocalImage, gpus: bool) -> None:
        """Start the image on the host: the framework probe for a labstack image (on the GPUs for a CUDA image on
        a GPU host), `true` for any other."""
        framework = image.labels.get("labstack.framework")
        command = ["docker", "run", "--rm", "--network", "none"]
        if gpus and image.cuda:
            command += ["--gpus", "all"]
        if framework:
            command += ["--entrypoint", "python3", image.ref, payload.in_image("probe"), framework]
        else:
            command += ["--entrypoint", "true", image.ref]
        done = connection.run(command, "smoke", SMOKE_TIMEOUT_S)
        if done.returncode:
            raise HostFailure("smoke", f"{image.ref} did not start on {connection.host.label}: {said(done)}")
        if framework:
            try:
                probe = json.loads(done.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                probe = {"available": False, "reason": "the probe printed no JSON"}
            if not probe.get("available"):
                raise HostFailure("smoke", f"{framework} does not import in {image.ref} there: {probe.get('reason')}")
            if gpus and image.cuda and not probe.get("devices"):
                raise HostFailure(
                    "smoke", f"{framework} in {image.ref} sees no GPU on {connection.host.label}: {probe.get('reason')}"
                )


def last_line(output: str | bytes, code: int) -> str:
    """What a command said last (its stderr's last line, say), or its exit status when it said nothing."""
    text = (output.decode(errors="replace") if isinstance(output, bytes) else output or "").strip()
    return text.splitlines()[-1] if text else f"exit {code}"


def said(done: subprocess.CompletedProcess) -> str:
    return last_line(done.stderr or done.stdout, done.returncode)


def deploy_all(deploy: Deploy, hosts: list[Host], jobs: int) -> tuple[list[HostResult], BaseException | None]:
    """Every host, `jobs` at a time. Ctrl-C or SIGTERM stops every child (ssh masters, pulls, loads): the hosts
    not finished are `interrupted`, and the signal is returned so the report is written before it ends the run."""
    results = {host: HostResult(host, status="interrupted") for host in hosts}
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    futures = {pool.submit(deploy.host, host): host for host in hosts}
    stopped = None
    try:
        for future in as_completed(futures):
            result = future.result()
            results[result.host] = result
    except BaseException as err:  # KeyboardInterrupt, Terminated
        stopped = err
        deploy.children.stop_all()
        pool.shutdown(wait=False, cancel_futures=True)
        for future, host in futures.items():  # the running ones end within seconds once their ssh is gone
            with contextlib.suppress(BaseException):
                results[host] = future.result(timeout=10)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        with deploy.children.lock:
            leftovers = list(deploy.children.processes)
        for process in leftovers:
            kill(process)
    return [results[host] for host in hosts], stopped
