"""Security defaults: Ray's dashboard listens on 127.0.0.1 unless a host is given, its API refuses
requests without the cluster's token unless authentication is explicitly turned off (with a
warning), and passwords of storage URLs are masked wherever the suite writes or prints them."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import pytest

from hpo import cluster

REPO = Path(__file__).resolve().parents[1]

DASHBOARD_PROBE = r"""
import ipaddress, json, sys, time, urllib.error, urllib.request
from hpo.cluster import start_ray, stop_ray

def listening_addresses(port):
    # addresses with a TCP socket listening on port (from /proc/net/tcp and tcp6)
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            ip_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(ip_hex)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # kernel byte order
            found.add(str(ipaddress.ip_address(raw)))
    return sorted(found)

lines = []
host = sys.argv[2] or None
info = start_ray(num_cpus=1, dashboard=True, dashboard_host=host, dashboard_auth=sys.argv[3] == "auth", echo=lines.append)
address = info.dashboard_url.split("://")[-1]
port = int(address.rsplit(":", 1)[1])

def status(token=None):
    request = urllib.request.Request(f"http://{host or '127.0.0.1'}:{port}/api/jobs/")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code

deadline = time.time() + 60
while True:
    try:
        anonymous = status()
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.5)
listening = listening_addresses(port)
print(json.dumps({
    "address": address, "listening": listening, "anonymous": anonymous,
    "wrong_token": status("not-the-token"), "token": status(sys.argv[1]), "lines": lines,
}))
stop_ray(info)
"""


def probe_dashboard(token: str, host: str = "", auth: bool = True) -> tuple[dict, str]:
    """Start a local Ray with its dashboard in a new process (as ``--dashboard`` does) and ask
    its job API with no token, a wrong one and the right one; its own token and temp folder."""
    temp = tempfile.mkdtemp(prefix="hpo-ray-")  # short: Ray's socket paths must stay under 108 bytes
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env.update(RAY_AUTH_TOKEN=token, RAY_TMPDIR=temp)  # nothing read from or written to ~/.ray
    try:
        probe = subprocess.run(
            [sys.executable, "-c", DASHBOARD_PROBE, token, host, "auth" if auth else "off"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    return json.loads(probe.stdout.strip().splitlines()[-1]), probe.stdout + probe.stderr


@pytest.mark.ray
def test_the_dashboard_listens_on_loopback_and_wants_the_token():
    token = secrets.token_hex(16)
    facts, output = probe_dashboard(token)
    assert facts["address"].startswith("127.0.0.1:")
    assert facts["listening"] == ["127.0.0.1"]  # nothing on another interface
    assert facts["anonymous"] == 401  # no token: refused
    assert facts["wrong_token"] == 403
    assert facts["token"] == 200
    assert any("listening on 127.0.0.1 only" in line for line in facts["lines"])
    assert any("token authentication is on" in line for line in facts["lines"])
    assert token not in output  # never printed


@pytest.mark.ray
def test_an_explicit_host_and_no_auth_are_honoured_for_real():
    """--dashboard-host 127.0.0.3 --no-dashboard-auth: it listens there only, and lets anyone in
    (which is what the warning says); another loopback address keeps the test machine closed."""
    facts, _ = probe_dashboard(secrets.token_hex(16), host="127.0.0.3", auth=False)
    assert facts["address"].startswith("127.0.0.3:") and facts["listening"] == ["127.0.0.3"]
    assert facts["anonymous"] == 200
    assert any(line.startswith("warning: token authentication is off") for line in facts["lines"])


class FakeContext:
    dashboard_url = "0.0.0.0:8265"


@pytest.fixture
def fake_ray(monkeypatch):
    """``ray.init`` replaced: what start_ray would start, without starting it."""
    import ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(cluster, "_init", lambda **kwargs: calls.append(kwargs) or FakeContext(), raising=False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs) or FakeContext())
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 2.0}}])
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    return calls


def test_the_dashboard_defaults_to_loopback_with_auth_left_to_ray(fake_ray):
    lines = []
    cluster.start_ray(num_cpus=1, dashboard=True, echo=lines.append)
    (kwargs,) = fake_ray
    assert kwargs["include_dashboard"] is True and kwargs["dashboard_host"] == "127.0.0.1"
    assert "RAY_AUTH_MODE" not in os.environ  # Ray turns token auth on for a new local Ray itself
    assert not [line for line in lines if "warning" in line]
    assert any("token authentication is on" in line for line in lines)


def test_an_explicit_host_and_no_auth_are_honoured_with_a_warning(fake_ray):
    lines = []
    cluster.start_ray(num_cpus=1, dashboard=True, dashboard_host="0.0.0.0", dashboard_auth=False, echo=lines.append)
    (kwargs,) = fake_ray
    assert kwargs["dashboard_host"] == "0.0.0.0"
    assert os.environ["RAY_AUTH_MODE"] == "disabled"
    (warning,) = [line for line in lines if line.startswith("warning:")]
    assert "token authentication is off" in warning and "0.0.0.0" in warning
    assert not [line for line in lines if "token authentication is on" in line]


def test_the_cli_passes_dashboard_host_and_auth_through(tmp_path):
    from hpo.__main__ import main
    from hpo.sweep import SweepSummary

    spec = tmp_path / "s.toml"
    spec.write_text('[study]\ntasks = ["QSAR_fish_toxicity"]\nfolds = 1\n')
    seen = {}

    def driver(spec, run_dir, **kwargs):
        seen.update(kwargs)
        return SweepSummary(run_dir.root, 0)

    with mock.patch("hpo.sweep.run", driver):
        assert main(["sweep", str(spec), "--runs-dir", str(tmp_path), "--name", "a", "-q"]) == 0
        assert (seen["dashboard"], seen["dashboard_host"], seen["dashboard_auth"]) == (False, None, True)
        assert main(["sweep", str(spec), "--runs-dir", str(tmp_path), "--name", "b", "--dashboard-host", "10.0.0.5", "--no-dashboard-auth"]) == 0
        assert (seen["dashboard"], seen["dashboard_host"], seen["dashboard_auth"]) == (True, "10.0.0.5", False)


def test_passwords_are_masked_in_what_the_suite_writes(tmp_path):
    """Without a database: the functions through which a storage URL reaches files and logs."""
    import dataclasses

    from hpo.spec import parse_spec
    from hpo.storage import redact_text, redact_url, storage_description
    from hpo.sweep import _error_of

    url = "postgresql://hpo:secret@127.0.0.1:1/optuna"
    spec = parse_spec({"study": {"tasks": ["QSAR_fish_toxicity"]}, "search": {"storage": url}})
    recorded = dataclasses.replace(spec, search=dataclasses.replace(spec.search, storage=redact_url(url)))
    assert "secret" not in recorded.to_toml() and "postgresql://hpo:***@127.0.0.1:1/optuna" in recorded.to_toml()
    assert "secret" not in storage_description(url, "optuna.journal")
    command = ["python", "-m", "hpo", "tune", "--task", "x", "--storage", url, "--set", f'search.storage="{url}"']
    assert not [part for part in command if "secret" in redact_text(part, url)]
    error = ConnectionError(f'connection to "{url}" failed: password authentication failed for user "hpo" (password secret)')
    assert "secret" not in _error_of(error, url)
