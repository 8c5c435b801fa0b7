"""Starting or joining Ray, the optional local dashboard, and refusing resource requests the
cluster cannot meet (a GPU request on a cluster without GPUs would leave trials pending forever).

Joining a cluster (``--address HOST:PORT``): the driver records the cluster's nodes, masks any
storage password in the command line Ray records as the job's entrypoint, explains a refused
authentication token, and finds out which nodes see the run directory (see
:meth:`ClusterInfo.nodes_not_seeing`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from hpo.spec import AUTO, AUTO_GPU_FRACTION


class ResourceError(RuntimeError):
    """Resources per trial that the Ray cluster cannot provide."""


@dataclass
class ClusterInfo:
    """The Ray cluster a driver uses."""

    address: str | None
    num_cpus: float
    num_gpus: float
    max_node_cpus: float
    max_node_gpus: float
    dashboard_url: str | None
    started_here: bool
    nodes: list[dict] = field(default_factory=list)  # alive nodes: node_id, ip, cpus, gpus, head
    _blind: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def describe(self) -> dict:
        return {
            "address": self.address,
            "cpus": self.num_cpus,
            "gpus": self.num_gpus,
            "dashboard": self.dashboard_url,
            "joined": not self.started_here,
            "nodes": self.nodes,
        }

    def nodes_not_seeing(self, directory: str | Path, echo=None) -> list[str]:
        """Addresses of the nodes that cannot see ``directory`` (a folder of the driver): there
        is no shared filesystem between them and the driver. Checked once per folder, by a
        zero-CPU Ray task on every node; a Ray this driver started itself shares everything.

        Nothing the search needs goes through that folder (trial data travel through Ray's object
        store, results back to the driver), but Ray Tune can keep trial checkpoints only in a
        folder every node sees; ``echo`` (if given) says so once.
        """
        key = str(Path(directory).resolve())
        if key not in self._blind:
            self._blind[key] = [] if self.started_here and not self.address else _nodes_not_seeing(Path(key), self.nodes)
            if self._blind[key] and echo is not None:
                echo(
                    f"note: node(s) {', '.join(self._blind[key])} do not see {key} (no shared filesystem): trial "
                    f"data reach them through Ray's object store and every result comes back to this driver, "
                    f"but a trial lost with its node restarts from its first epoch (Ray Tune keeps trial "
                    f"checkpoints only in a folder every node sees)"
                )
        return list(self._blind[key])


def _quiet_ray_environment() -> None:
    """Keep Ray's console output readable (set only what the user has not set)."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Tune's classic reporter: silent at verbose=0 (our own lines), a status table at -v.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "60")


def quiet_tune_logs(verbose: int) -> None:
    """Below -v, keep Ray Tune's per-failure tracebacks off the console: each failed trial gets
    one line of ours, and its traceback stays in Ray's experiment folder (error.txt)."""
    level = logging.INFO if verbose >= 2 else logging.CRITICAL
    for name in ("ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(level)


LOOPBACK = "127.0.0.1"


def start_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    dashboard: bool = False,
    echo=print,
    dashboard_host: str | None = None,
    dashboard_auth: bool = True,
) -> ClusterInfo:
    """Join the cluster at ``address``, or start a local one (``num_cpus`` CPUs; all if None).

    A Ray already initialised in this process (tests) is reused and left running. With
    ``dashboard`` the local dashboard listens on ``dashboard_host`` (default 127.0.0.1 only), with
    Ray's token authentication on (``RAY_AUTH_MODE=token``) unless ``dashboard_auth`` is False
    (``RAY_AUTH_MODE=disabled``, with a warning).
    """
    import ray

    _quiet_ray_environment()
    started_here = False
    dashboard_url = None
    host = dashboard_host or LOOPBACK
    if not ray.is_initialized():
        if not address:
            if not dashboard_auth:
                os.environ["RAY_AUTH_MODE"] = "disabled"
                echo(
                    f"warning: token authentication is off (--no-dashboard-auth): anyone who can reach this "
                    f"Ray{f' or its dashboard on {host}' if dashboard else ''} can run code as you"
                )
            elif os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
                echo("warning: RAY_AUTH_MODE=disabled is set: Ray and its dashboard accept anyone who reaches them")
            # else: left unset, Ray turns token authentication on for a new local Ray itself
            # (RAY_AUTH_MODE=token set here, after Ray was imported, would miss Ray's cached
            # config: the driver would then present no token to its own Ray and fail to start)
        kwargs: dict = dict(logging_level=logging.WARNING, log_to_driver=True)
        if address:
            if dashboard:
                echo(f"note: --dashboard starts a local dashboard only; the cluster at {address} serves its own")
            if num_cpus:
                echo("note: --num-cpus sizes a local Ray only; ignored with --address")
            dashboard = False
            context = _init(address=address, **kwargs)
        else:
            kwargs["include_dashboard"] = bool(dashboard)
            if dashboard:
                kwargs["dashboard_host"] = host
            context = _init(num_cpus=num_cpus, **kwargs)
        started_here = True
        dashboard_url = getattr(context, "dashboard_url", None) or None
        if dashboard and dashboard_url and host not in ("0.0.0.0", "::"):
            # Ray reports the node's address for a host other than 127.0.0.1; show where it listens
            dashboard_url = f"{host if ':' not in host else f'[{host}]'}:{dashboard_url.rsplit(':', 1)[-1]}"
        if dashboard:
            if dashboard_url:
                url = dashboard_url if "://" in dashboard_url else f"http://{dashboard_url}"
                where = "127.0.0.1 only" if host == LOOPBACK else f"{host} (--dashboard-host)"
                echo(f"Ray dashboard: {url} (listening on {where})")
                if os.environ.get("RAY_AUTH_MODE", "").lower() != "disabled":
                    echo(
                        "  token authentication is on: print the token with `ray get-auth-token` and paste it "
                        "when the page asks; API clients send `Authorization: Bearer <token>`."
                        + (" From another machine, tunnel first: ssh -L 8265:127.0.0.1:8265 <this host>" if host == LOOPBACK else "")
                    )
            else:
                echo("Ray dashboard: not available (install ray[default]: pip install 'ray[default]')")
    resources = ray.cluster_resources()
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    return ClusterInfo(
        address=address,
        num_cpus=float(resources.get("CPU", 0)),
        num_gpus=float(resources.get("GPU", 0)),
        max_node_cpus=max((float(n.get("Resources", {}).get("CPU", 0)) for n in nodes), default=0.0),
        max_node_gpus=max((float(n.get("Resources", {}).get("GPU", 0)) for n in nodes), default=0.0),
        dashboard_url=dashboard_url,
        started_here=started_here,
        nodes=[_node_summary(n) for n in nodes],
    )


def _node_summary(node: dict) -> dict:
    resources = node.get("Resources", {})
    return {
        "node_id": node.get("NodeID"),
        "ip": node.get("NodeManagerAddress"),
        "cpus": float(resources.get("CPU", 0)),
        "gpus": float(resources.get("GPU", 0)),
        "head": "node:__internal_head__" in resources,
    }


@contextlib.contextmanager
def _redacted_entrypoint():
    """Ray records the driver's command line as its job's entrypoint (GCS, dashboard, logs):
    mask the password of a storage URL in it."""
    from hpo.storage import redact_text

    try:
        import ray._private.utils as ray_utils

        original = ray_utils.get_entrypoint_name
    except (ImportError, AttributeError):  # another Ray version: nothing to mask
        yield
        return
    ray_utils.get_entrypoint_name = lambda: redact_text(original())
    try:
        yield
    finally:
        ray_utils.get_entrypoint_name = original


def _init(address: str | None = None, **kwargs):
    """``ray.init`` with the entrypoint masked; a refused token says how to pass one."""
    import ray

    with _redacted_entrypoint():
        try:
            return ray.init(address=address, **kwargs)
        except ConnectionError as error:
            cause = f"{error} {error.__cause__ or ''}"
            if "AuthenticationError" in cause or "InvalidAuthToken" in cause or "Authentication token" in cause:
                raise ConnectionError(
                    "the cluster requires its authentication token: set RAY_AUTH_MODE=token and the head's "
                    "token (RAY_AUTH_TOKEN=<output of `ray get-auth-token` on the head>, or the same "
                    "~/.ray/auth_token file) in this shell"
                ) from None
            raise


def _nodes_not_seeing(directory: Path, nodes: list[dict], timeout: float = 120.0) -> list[str]:
    """Run ``os.path.exists`` on a fresh marker in ``directory`` on every node; the nodes that
    answer False (or not at all) cannot see the folder."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = directory / f".node-check-{uuid.uuid4().hex}"
    marker.write_text("")
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(os.path.exists)
        refs = {
            node["ip"]: probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["node_id"], soft=False)
            ).remote(str(marker))
            for node in nodes
        }
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
        blind = []
        for ip, ref in refs.items():
            try:
                seen = ref in ready and bool(ray.get(ref, timeout=1))
            except Exception:
                seen = False
            if not seen:
                blind.append(ip)
        return blind
    finally:
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()


def stop_ray(info: ClusterInfo | None) -> None:
    """Shut Ray down if this driver started it."""
    if info is not None and info.started_here:
        import ray

        ray.shutdown()


def resolve_gpu(requested: float | str, num_gpus: float) -> float:
    """GPUs per trial: ``"auto"`` packs four trials per GPU when the cluster has GPUs, else 0."""
    if requested == AUTO:
        return AUTO_GPU_FRACTION if num_gpus > 0 else 0.0
    return float(requested)


def check_resources(cpu: float, gpu: float, cluster: ClusterInfo) -> None:
    """Refuse per-trial resources that no node of the cluster has (instead of pending forever)."""
    if gpu > 0 and cluster.num_gpus <= 0:
        raise ResourceError(
            f"resources.gpu = {gpu:g} asks for a GPU per trial, but the Ray cluster has no GPU "
            f"({cluster.num_cpus:g} CPUs, 0 GPUs); set resources.gpu = 0 (or \"auto\"), pass --gpu 0, "
            f"or join a cluster with GPUs with --address"
        )
    if gpu > cluster.max_node_gpus:
        raise ResourceError(
            f"resources.gpu = {gpu:g} per trial, but no node of the Ray cluster has more than "
            f"{cluster.max_node_gpus:g} GPUs; lower resources.gpu"
        )
    if cpu > cluster.max_node_cpus:
        raise ResourceError(
            f"resources.cpu = {cpu:g} per trial, but no node of the Ray cluster has more than "
            f"{cluster.max_node_cpus:g} CPUs; lower resources.cpu (or start Ray with more, --num-cpus)"
        )
