"""Throwaway services on this machine's loopback addresses, for the cluster tests and the
cluster-overhead benchmark: a Ray cluster of several nodes and a PostgreSQL server.

Each Ray node is its own ``ray start --block`` process group on its own loopback address
(127.0.0.2 for the head, 127.0.0.3, ... for workers) with its own temporary directory, its own
free ports and token authentication with a token of its own; a PostgreSQL server runs from a
throwaway data directory as an unprivileged user, listening on 127.0.0.1 with password
authentication. Stopping either ends exactly the processes started here — never ``ray stop``,
which would end every Ray on the machine. Nothing here is needed to run a sweep on a real cluster
(see the README's "Running on a cluster").
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HEAD_IP = "127.0.0.2"  # Ray turns 127.0.0.1 into the machine's outward address; 127.0.0.2.. it keeps


class ServiceError(RuntimeError):
    """A throwaway service that could not be started; the message says what to do."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _ray_executable() -> str:
    path = Path(sys.executable).with_name("ray")
    return str(path) if path.exists() else (shutil.which("ray") or "ray")


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (a temp dir only our nodes use)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


def _kill_group(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group of ``process`` (started with its own session), SIGKILL after ``grace`` s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


# --------------------------------------------------------------------------- Ray


@dataclass
class RayNode:
    """One ``ray start --block`` process group."""

    name: str
    ip: str
    cpus: int
    resources: dict[str, float]
    temp_dir: Path
    log_file: Path
    process: subprocess.Popen
    node_id: str | None = None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole node at once (as a machine that dies), and whatever it left behind."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self._kill_leftovers()

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the node's process group, then SIGKILL what is left (only this node's processes)."""
        if self.alive:
            _kill_group(self.process, grace)
        self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        # Ray workers that left the node's process group still name its temp dir.
        for pid in _pids_mentioning(str(self.temp_dir)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@dataclass
class LocalRayCluster:
    """A Ray cluster on loopback addresses of this machine: a head, then workers.

    Drivers join it with ``--address`` :attr:`address` and the environment :attr:`env` (its token).
    """

    root: Path
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    object_store_bytes: int = 150 * 1024 * 1024
    nodes: list[RayNode] = field(default_factory=list)
    port: int | None = None

    @property
    def address(self) -> str:
        if self.port is None:
            raise ServiceError("the cluster has no head yet; call start_head() first")
        return f"{HEAD_IP}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for drivers and nodes: token authentication with this cluster's token."""
        env = dict(os.environ)
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=self.token,
            RAY_USAGE_STATS_ENABLED="0",
        )
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        env.pop("RAY_ADDRESS", None)
        return env

    def start_head(self, cpus: int = 1, resources: dict[str, float] | None = None, timeout: float = 120) -> RayNode:
        self.port = free_port(HEAD_IP)
        args = [
            "--head",
            f"--port={self.port}",
            "--include-dashboard=false",
            f"--dashboard-port={free_port(HEAD_IP)}",
            f"--ray-client-server-port={free_port(HEAD_IP)}",
        ]
        return self._start("head", HEAD_IP, cpus, resources or {"head_node": 1}, args, timeout)

    def add_worker(
        self,
        cpus: int = 1,
        resources: dict[str, float] | None = None,
        hidden: tuple[str | Path, ...] = (),
        timeout: float = 120,
    ) -> RayNode:
        """Start a worker node. ``hidden`` folders (e.g. the runs directory, the data cache) are
        covered by an empty tmpfs in the node's own mount namespace (needs root): the node sees
        them as a separate machine would, without a shared filesystem."""
        index = len(self.nodes) + 1  # head 127.0.0.2, workers 127.0.0.3, ...
        ip = f"127.0.0.{index + 1}"
        name = f"worker{index - 1}"
        args = [f"--address={self.address}"]
        return self._start(name, ip, cpus, resources or {f"{name}_node": 1}, args, timeout, hidden)

    def _start(
        self, name: str, ip: str, cpus: int, resources: dict, args: list[str], timeout: float, hidden: tuple = ()
    ) -> RayNode:
        temp_dir = Path(tempfile.mkdtemp(prefix=f"r{name[0]}", dir=self.root))  # short: socket paths ≤ 107 chars
        log_file = self.root / f"{name}.log"
        command = [
            _ray_executable(),
            "start",
            *args,
            f"--node-ip-address={ip}",
            f"--num-cpus={cpus}",
            "--num-gpus=0",
            f"--resources={json.dumps(resources)}",
            f"--temp-dir={temp_dir}",
            f"--object-store-memory={self.object_store_bytes}",
            f"--dashboard-agent-listen-port={free_port(ip)}",
            "--disable-usage-stats",
            "--block",
        ]
        if hidden:
            if os.geteuid() != 0 or shutil.which("unshare") is None:
                raise ServiceError("hiding folders from a node needs root and unshare (util-linux)")
            mounts = " && ".join(f"mount -t tmpfs -o size=64m tmpfs '{Path(p).resolve()}'" for p in hidden)
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{mounts} && exec "$@"', "sh", *command]
        with open(log_file, "ab") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True, cwd=self.root
            )
        node = RayNode(name, ip, cpus, resources, temp_dir, log_file, process)
        self.nodes.append(node)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not node.alive:
                raise ServiceError(f"ray start for the {name} node exited ({process.returncode}):\n{self._tail(log_file)}")
            if b"Ray runtime started" in log_file.read_bytes():
                return node
            time.sleep(0.5)
        raise ServiceError(f"the {name} node did not start within {timeout:.0f} s:\n{self._tail(log_file)}")

    @staticmethod
    def _tail(path: Path, lines: int = 30) -> str:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def list_nodes(self, timeout: float = 120) -> list[dict]:
        """``ray.nodes()`` of the cluster, read by a short-lived driver (NodeID, NodeManagerAddress, Alive, Resources)."""
        script = (
            "import json, ray\n"
            f"ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False)\n"
            "keys = ('NodeID', 'NodeManagerAddress', 'Alive', 'Resources')\n"
            "print('NODES=' + json.dumps([{k: n.get(k) for k in keys} for n in ray.nodes()]))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.root
        )
        line = next((l for l in result.stdout.splitlines() if l.startswith("NODES=")), None)
        if result.returncode != 0 or line is None:
            raise ServiceError(f"could not list the cluster's nodes:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
        return json.loads(line[len("NODES="):])

    def wait_for_nodes(self, timeout: float = 120) -> None:
        """Wait until every started node is alive in the cluster; record each node's Ray node id."""
        deadline = time.time() + timeout
        while True:
            by_ip = {n["NodeManagerAddress"]: n["NodeID"] for n in self.list_nodes() if n["Alive"]}
            if all(node.ip in by_ip for node in self.nodes if node.alive):
                for node in self.nodes:
                    node.node_id = by_ip.get(node.ip, node.node_id)
                return
            if time.time() > deadline:
                raise ServiceError(f"nodes {sorted(by_ip)} alive, expected {[n.ip for n in self.nodes]}")
            time.sleep(1.0)

    def stop(self) -> None:
        """Stop the workers, then the head (only the processes of this cluster)."""
        for node in reversed(self.nodes):
            node.stop()

    def __enter__(self) -> "LocalRayCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bin_dir() -> Path:
    """The newest PostgreSQL server binaries (Debian's layout, else on PATH)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise ServiceError(
        "PostgreSQL's server programs (initdb, pg_ctl) are not installed; on Debian/Ubuntu: "
        "sudo apt-get install -y postgresql"
    )


@dataclass
class LocalPostgres:
    """A PostgreSQL server from a throwaway data directory on 127.0.0.1, with password auth."""

    root: Path
    port: int
    user: str
    password: str
    database: str
    run_as: str | None
    bin_dir: Path

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the database, password included."""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @classmethod
    def start(cls, user: str = "hpo", database: str = "hpo_studies", timeout: float = 90) -> "LocalPostgres":
        """initdb + pg_ctl start as an unprivileged user (PostgreSQL refuses root), then create the database."""
        bin_dir = postgres_bin_dir()
        root = Path(tempfile.mkdtemp(prefix="hpo-pg-", dir="/tmp"))  # short: the socket lives here
        run_as = None
        if os.geteuid() == 0:
            run_as = next((name for name in ("postgres", "nobody") if _user_exists(name)), None)
            if run_as is None:
                raise ServiceError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")
        password = secrets.token_urlsafe(18)
        server = cls(root, free_port(), user, password, database, run_as, bin_dir)
        (root / "socket").mkdir()
        password_file = root / "password"
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            for path in (root, root / "socket", password_file):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        try:
            server._run(
                "initdb",
                "-D", str(server.data_dir),
                "-U", user,
                f"--pwfile={password_file}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "-E", "UTF8",
                "--no-sync",
                timeout=timeout,
            )
            password_file.unlink()
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={server.port} -c unix_socket_directories={root / 'socket'} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60 "
                "-c shared_buffers=32MB"
            )
            server._run(
                "pg_ctl", "-D", str(server.data_dir), "-l", str(server.log_file), "-w", "-t", str(int(timeout)),
                "-o", options, "start", timeout=timeout + 10,
            )
            server._create_database()
        except BaseException:
            server.stop()
            raise
        return server

    def _run(self, program: str, *args: str, timeout: float) -> None:
        command = [str(self.bin_dir / program), *args]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if result.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise ServiceError(
                f"{program} failed ({result.returncode}): {result.stderr.strip()[-2000:] or result.stdout.strip()[-2000:]}\n{log}"
            )

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self) -> None:
        """Stop the server (immediate shutdown) and delete its data directory."""
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(ServiceError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalPostgres":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
