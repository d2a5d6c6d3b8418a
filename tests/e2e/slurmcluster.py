"""A real Slurm cluster on this one machine: munged, slurmctld and one slurmd per node (n1, n2, ...), all from one
slurm.conf of its own, so `sbatch`, `srun`, `squeue` and `scancel` are Debian's own tools talking to real daemons.

Debian's slurmd is built with multiple-slurmd support: every node is `slurmd -N nI` on 127.0.0.1 with its own port,
spool folder (`SlurmdSpoolDir=.../%n`) and log. Not slurm-wlm-emulator: that is a FrontEnd build, where one slurmd
stands for every node and a step cannot tell which node it is on.

Node nI is the simulated lab server gpuI (tests/e2e/labhosts.py): a TaskProlog prints `export DOCKER_HOST=...` from
the node's env file (`nodes/nI.env`), so every task of a job, batch script included, talks to that node's own Docker
daemon, and a node whose daemon lacks an image is a real case. The prolog and epilog can source the same file.

munged runs as the `munge` user with its own key, socket, pid, log and seed files, and slurm.conf points Slurm at
that socket (`AuthInfo=socket=...`); the system's /etc/munge and /etc/slurm are never read. No cgroups (containers
and CI machines seldom delegate them): processes are tracked by their parent chain, tasks are not confined, and the
scheduler's limits reach a container only through what the job passes to `docker run`. Everything lives under one
temp folder and is stopped and removed on close, also after a failed start or test.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from labstack import ROOT
from tests.e2e.labhosts import LabHost, LabHostError, free_port, log_tail, stop, wait_until

MUNGE_USER = "munge"
START_TIMEOUT = 60
COMMAND_TIMEOUT = 60
PREFIX = "lsl"
NODE_CPUS = 2  # what each node offers, whatever this machine has (config_overrides): the same on every machine
NODE_MEMORY_MB = 1024
EPILOG = ROOT / "labstack" / "cluster" / "epilog.sh"  # shipped for clusters' nodes: removes a job's containers
TOOLS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel", "sinfo", "scontrol")


class SlurmClusterError(RuntimeError):
    """The cluster did not start: the message ends with the tail of the daemon's log."""


@dataclass
class SlurmNode:
    """One node: its slurmd, the port it listens on, and the lab host whose Docker daemon its jobs use."""

    name: str  # n1
    port: int
    host: LabHost | None = None
    slurmd: subprocess.Popen | None = None


@dataclass
class SlurmCluster:
    """munged + slurmctld + one slurmd per lab host (node nI is host I), under one temp folder.

    `environ()` is the environment for the client tools (SLURM_CONF), `run(...)` runs one of them."""

    hosts: list[LabHost] = field(default_factory=list)
    count: int = 0  # nodes when there are no hosts: then jobs see no DOCKER_HOST of their own
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    nodes: list[SlurmNode] = field(default_factory=list)
    munged: subprocess.Popen | None = None
    slurmctld: subprocess.Popen | None = None
    start_s: float | None = None  # seconds from start() to every node idle

    def __post_init__(self) -> None:
        # Short (unix socket paths) and traversable by the munge user, which owns only its own subfolder.
        self.folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{self.session}-", dir="/tmp"))
        self.folder.chmod(0o755)
        self.count = len(self.hosts) or self.count or 3

    # --- paths

    @property
    def conf(self) -> Path:
        return self.folder / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.folder / "munge" / "run" / "munge.socket"

    def node_env(self, node: str) -> Path:
        """The node's `NAME=value` lines (DOCKER_HOST): read by the TaskProlog, and by a prolog or epilog."""
        return self.folder / "nodes" / f"{node}.env"

    def log(self, daemon: str) -> Path:
        """slurmctld, munged, or a node's slurmd (`n1`)."""
        return self.folder / "log" / (f"slurmd-{daemon}.log" if daemon.startswith("n") else f"{daemon}.log")

    # --- start

    def start(self) -> SlurmCluster:
        """Start munged, slurmctld and the slurmds, and wait until every node is idle; on failure close everything
        and raise SlurmClusterError with the tail of the log that says why."""
        begun = time.monotonic()
        try:
            missing = [tool for tool in TOOLS if not shutil.which(tool, path=f"{os.environ['PATH']}:/usr/sbin")]
            if missing:
                raise SlurmClusterError(
                    f"{', '.join(missing)} missing: run scripts/bootstrap.sh --full (slurm-wlm, munge)"
                )
            for sub in ("log", "state", "spool", "nodes"):
                (self.folder / sub).mkdir()
            hosts: list[LabHost | None] = list(self.hosts) or [None] * self.count
            self.nodes = [SlurmNode(f"n{i}", free_port(), host) for i, host in enumerate(hosts, 1)]
            self.start_munged()
            self.write_config()
            self.start_slurmctld()
            for node in self.nodes:
                self.start_slurmd(node)
            self.wait_idle(START_TIMEOUT)
        except LabHostError as error:  # wait_until's: a daemon exited or did not answer
            self.close()
            raise SlurmClusterError(str(error)) from None
        except BaseException:
            self.close()
            raise
        self.start_s = round(time.monotonic() - begun, 2)
        return self

    def start_munged(self) -> None:
        """munged in the foreground as the munge user, with a fresh key: it refuses a key, socket or log folder
        that another user owns or may write, so its folder is the munge user's and 0700 except the socket's."""
        munge = pwd.getpwnam(MUNGE_USER)
        root = self.folder / "munge"
        for sub, mode in (("", 0o755), ("etc", 0o700), ("run", 0o755), ("log", 0o700), ("lib", 0o700)):
            path = root / sub
            path.mkdir(mode=mode, exist_ok=True)
            path.chmod(mode)
            os.chown(path, munge.pw_uid, munge.pw_gid)
        key = root / "etc" / "munge.key"
        subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True, capture_output=True)
        os.chown(key, munge.pw_uid, munge.pw_gid)
        log = self.log("munged")
        command = [
            "munged", "--foreground", f"--socket={self.munge_socket}", f"--key-file={key}",
            f"--pid-file={root / 'run' / 'munged.pid'}", f"--log-file={root / 'log' / 'munged.log'}",
            f"--seed-file={root / 'lib' / 'munged.seed'}",
        ]  # fmt: skip
        with log.open("ab") as out:
            self.munged = subprocess.Popen(
                command, user=MUNGE_USER, group=MUNGE_USER, extra_groups=[], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        wait_until(self.munge_answers, START_TIMEOUT, "munged", self.munged, log)

    def munge_answers(self) -> bool:
        encoded = subprocess.run(["munge", "-n", "-S", str(self.munge_socket)], capture_output=True, timeout=5)
        return encoded.returncode == 0

    def write_config(self) -> None:
        """slurm.conf, the TaskProlog and the nodes' env files.

        One NodeName line per node, each with its own free port; slurmd -N picks its line. No cgroup plugin:
        proctrack/linuxproc and task/none need nothing from the machine. Not proctrack/pgid: its wait after a
        signal polls the job's process group at 1 s, then 2 s, so a cancelled job stayed COMPLETING for 3 s
        (linuxproc: 6 ms). cons_tres with CR_Core_Memory still
        schedules cores and memory (the allocation a job then hands to `docker run`); without cgroups
        nothing enforces them on the tasks themselves."""
        prolog = self.folder / "task-prolog.sh"
        prolog.write_text(
            "#!/bin/sh\n"
            "# Slurm sets a task's environment from the `export NAME=value` lines a TaskProlog prints.\n"
            f'env_file="{self.folder}/nodes/$SLURMD_NODENAME.env"\n'
            '[ -r "$env_file" ] && sed -n "s/^\\([A-Z_][A-Z0-9_]*=.*\\)/export \\1/p" "$env_file"\n'
            "exit 0\n"
        )
        prolog.chmod(0o755)
        # The node's epilog is labstack's own (what a cluster's admins install), run with the node's DOCKER_HOST.
        epilog = self.folder / "epilog.sh"
        epilog.write_text(
            "#!/bin/sh\n"
            f'env_file="{self.folder}/nodes/$SLURMD_NODENAME.env"\n'
            '[ -r "$env_file" ] && { set -a; . "$env_file"; set +a; }\n'
            f"export SLURM_CONF={self.conf}\n"
            f"exec {EPILOG}\n"
        )
        epilog.chmod(0o755)
        for node in self.nodes:
            self.node_env(node.name).write_text(f"DOCKER_HOST={node.host.docker_host}\n" if node.host else "")
        plugstack = self.folder / "plugstack.conf"  # not /etc/slurm's
        plugstack.write_text("")
        node_lines = "".join(
            f"NodeName={n.name} NodeAddr=127.0.0.1 Port={n.port} CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} "
            "State=UNKNOWN\n"
            for n in self.nodes
        )
        self.conf.write_text(
            f"ClusterName=lab{self.session}\n"
            "SlurmctldHost=localhost\n"
            f"SlurmctldPort={free_port()}\n"
            f"SlurmctldPidFile={self.folder / 'slurmctld.pid'}\n"
            f"SlurmctldLogFile={self.log('slurmctld')}\n"
            f"SlurmdPidFile={self.folder / 'spool' / 'slurmd-%n.pid'}\n"
            f"SlurmdLogFile={self.folder / 'log' / 'slurmd-%n.log'}\n"
            f"SlurmdSpoolDir={self.folder / 'spool' / '%n'}\n"
            f"StateSaveLocation={self.folder / 'state'}\n"
            "SlurmUser=root\n"
            "SlurmdUser=root\n"
            "AuthType=auth/munge\n"
            "CredType=cred/munge\n"
            f"AuthInfo=socket={self.munge_socket}\n"
            f"PlugStackConfig={plugstack}\n"
            "ProctrackType=proctrack/linuxproc\n"
            "TaskPlugin=task/none\n"
            "SelectType=select/cons_tres\n"
            "SelectTypeParameters=CR_Core_Memory\n"
            "SlurmdParameters=config_overrides\n"  # the nodes offer NODE_CPUS whatever this machine has
            "JobAcctGatherType=jobacct_gather/none\n"
            "AccountingStorageType=accounting_storage/none\n"
            "JobCompType=jobcomp/none\n"
            "MpiDefault=none\n"
            "MailProg=/bin/true\n"
            "ReturnToService=2\n"
            "KillWait=2\n"  # scancel: TERM, then KILL this many seconds later
            "SchedulerParameters=batch_sched_delay=0\n"  # a batch job starts at once, not on a 3 s batch cycle
            "MinJobAge=30\n"
            "InactiveLimit=0\n"
            "SlurmdTimeout=30\n"
            f"TaskProlog={prolog}\n"
            f"Epilog={self.folder / 'epilog.sh'}\n"
            f"{node_lines}"
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n"
        )

    def daemon_env(self) -> dict[str, str]:
        """The daemons' environment: SLURM_CONF marks every slurmstepd and task they start, which is how close()
        finds what a killed slurmd left behind."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start_slurmctld(self) -> None:
        log = self.log("slurmctld")
        with (self.folder / "log" / "slurmctld.out").open("ab") as out:
            self.slurmctld = subprocess.Popen(
                ["slurmctld", "-D", "-f", str(self.conf)], env=self.daemon_env(), stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        wait_until(lambda: self.run("scontrol", "ping", timeout=2).returncode == 0, START_TIMEOUT, "slurmctld",
                   self.slurmctld, log)  # fmt: skip

    def start_slurmd(self, node: SlurmNode) -> None:
        (self.folder / "spool" / node.name).mkdir(exist_ok=True)
        with (self.folder / "log" / f"slurmd-{node.name}.out").open("ab") as out:
            node.slurmd = subprocess.Popen(
                ["slurmd", "-D", "-N", node.name, "-f", str(self.conf)], env=self.daemon_env(), stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    # --- use

    def environ(self) -> dict[str, str]:
        """The environment for sbatch, srun, squeue, scancel, sinfo: this cluster's slurm.conf."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str, timeout: float = COMMAND_TIMEOUT, **options) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster; output captured as text, never raises on failure."""
        options.setdefault("env", self.environ())
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **options)

    def node_states(self) -> dict[str, str]:
        """{node: compact state} as sinfo reports it (idle, alloc, mix, down*, ...)."""
        listed = self.run("sinfo", "--noheader", "--Node", "--format=%N %t", timeout=10).stdout
        return dict(line.split() for line in listed.splitlines() if line.strip())

    def wait_idle(self, timeout: float = 30) -> None:
        """Wait until every node is idle (registered, no job, nothing completing); a slurmd or slurmctld that
        exits, or a timeout, is a SlurmClusterError with the logs' tails."""
        deadline = time.monotonic() + timeout
        names = {n.name for n in self.nodes}
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            for daemon, process in [("slurmctld", self.slurmctld), *((n.name, n.slurmd) for n in self.nodes)]:
                if process is not None and process.poll() is not None:
                    raise SlurmClusterError(f"{daemon} exited with {process.returncode}:\n{self.tails(daemon)}")
            with contextlib.suppress(subprocess.SubprocessError, ValueError):
                states = self.node_states()
                if set(states) == names and all(s == "idle" for s in states.values()):
                    return
            time.sleep(0.2)
        raise SlurmClusterError(f"nodes not idle after {timeout} s: {states}\n{self.tails('slurmctld')}")

    def tails(self, daemon: str) -> str:
        return "\n".join(log_tail(path) for path in (self.log(daemon), self.log(daemon).with_suffix(".out")))

    # --- stop

    def close(self) -> None:
        """Cancel every job, stop the slurmds, slurmctld and munged, kill what they left, remove the folder; each
        step runs even if one before fails."""
        for step in (self._cancel_jobs, self._stop_daemons, self._kill_leftovers):
            with contextlib.suppress(Exception):
                step()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _cancel_jobs(self) -> None:
        if not self.slurmctld or self.slurmctld.poll() is not None:
            return
        jobs = self.run("squeue", "--noheader", "--format=%i", timeout=10).stdout.split()
        if jobs:
            self.run("scancel", *jobs, timeout=10)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.run("squeue", "--noheader", timeout=10).stdout.strip():
                time.sleep(0.2)

    def _stop_daemons(self) -> None:
        for process in [*(n.slurmd for n in self.nodes), self.slurmctld, self.munged]:
            with contextlib.suppress(Exception):
                stop(process)

    def _kill_leftovers(self) -> None:
        """slurmstepd and tasks of this cluster that outlived their slurmd."""
        for pid in processes_started_by(self.conf):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def processes_started_by(conf: Path) -> list[int]:
    """Processes whose environment names this slurm.conf (SLURM_CONF): the cluster's daemons, the slurmstepds they
    started and the jobs' tasks (sbatch and srun pass it on); this process excluded."""
    marker = f"SLURM_CONF={conf}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found
