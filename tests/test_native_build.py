"""The C++ kernel's build cache under processes that die: every trial worker loads the build and
any of them may be killed at any moment (a cancelled sweep, a driver killed by the user, a lost
node). Whatever a killed process leaves behind must never make a later load wait or fail.

Each test builds into its own cache folder (``TORCH_EXTENSIONS_DIR``), in fresh processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model import native

REPO = Path(__file__).resolve().parents[1]
LOAD = "from model import native; print(native.describe())"
HANG = 600  # seconds: far above a build (under a minute), only there so that a hang fails the test

pytestmark = pytest.mark.skipif(not native.enabled(), reason=f"{native.NATIVE_ENVIRONMENT_VARIABLE}=0: no C++ build")


def _environment(cache: Path) -> dict[str, str]:
    return {**os.environ, "TORCH_EXTENSIONS_DIR": str(cache)}


def _load(cache: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", LOAD], cwd=REPO, env=_environment(cache), capture_output=True, text=True, timeout=HANG
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _directory(cache: Path) -> Path:
    (directory,) = cache.glob("*/liquid_memory_native_*")
    return directory


@pytest.fixture(scope="module")
def killed_then_built(tmp_path_factory) -> Path:
    """A cache whose first build was killed (SIGKILL, its compiler with it) while it held
    cpp_extension's lock file, then built by the next process."""
    cache = tmp_path_factory.mktemp("extensions")
    builder = subprocess.Popen(
        [sys.executable, "-c", LOAD], cwd=REPO, env=_environment(cache), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + HANG
        while time.time() < deadline and builder.poll() is None and not list(cache.glob("*/*/build.ninja")):
            time.sleep(0.05)
        time.sleep(1.0)  # the compiler is running
        assert builder.poll() is None, "the build ended before it could be killed"
    finally:
        os.killpg(builder.pid, signal.SIGKILL)
        builder.wait(timeout=60)
    directory = _directory(cache)
    assert (directory / "lock").exists(), "the killed build left no lock file: this test no longer tests that case"
    assert not (directory / native.BUILT_MARKER).exists()
    assert _load(cache).startswith("c++")
    return cache


def test_a_build_killed_midway_does_not_block_the_next_one(killed_then_built):
    directory = _directory(killed_then_built)
    assert (directory / native.BUILT_MARKER).exists()
    assert not (directory / "lock").exists()


def test_a_built_cache_loads_whatever_killed_processes_left_behind(killed_then_built):
    """A lock file of cpp_extension's, a marker half written, a builder killed while it held the build lock:
    the next process imports the built library without building again or waiting."""
    directory = _directory(killed_then_built)
    library = directory / json.loads((directory / native.BUILT_MARKER).read_text())["library"]
    built_at = library.stat().st_mtime_ns
    (directory / "lock").touch()
    (directory / f"{native.BUILT_MARKER}.partial").write_text('{"library": "liquid_mem')
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; handle = open(sys.argv[1], 'a'); "
         "fcntl.flock(handle, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)", str(directory / "build.lock")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.kill()
        holder.wait(timeout=60)
        assert _load(killed_then_built).startswith("c++")
    finally:
        holder.kill()
    assert library.stat().st_mtime_ns == built_at  # imported, not rebuilt


def test_a_damaged_library_is_built_again(killed_then_built):
    """A library cut short (a full disk, a kill while it was linked) is never loaded (dlopen of one
    dies with SIGBUS): the marker's checksum no longer matches, and the next process builds again."""
    directory = _directory(killed_then_built)
    library = directory / json.loads((directory / native.BUILT_MARKER).read_text())["library"]
    library.write_bytes(library.read_bytes()[:4096])  # cut short, as by a full disk
    assert _load(killed_then_built).startswith("c++")
    assert library.stat().st_size > 4096
