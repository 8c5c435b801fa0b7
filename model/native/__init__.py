"""The CPU build of the fused solver (``liquid.cpp``), compiled on first use and cached.

:func:`load` compiles the extension with ``torch.utils.cpp_extension`` (a C++ compiler and ninja
are needed; the build takes under a minute once per machine and Python/torch version, then loads
from the cache in well under a second). When it cannot be built, the suite runs the Python version
of the same kernel (``model.kernels``) and says why once. ``LIQUID_MEMORY_NATIVE=0`` turns the
native build off; ``TORCH_EXTENSIONS_DIR`` moves its cache (default ``~/.cache/torch_extensions``,
one folder per Python and torch version).

Many processes load the build at once (every trial worker) and any of them may be killed at any
moment (a cancelled sweep, a lost node). So a build takes an ``fcntl`` lock, which the operating
system releases when its holder dies, and once the library has loaded writes a marker with its
checksum; a later process whose library matches the marker imports it straight away and never
runs ``cpp_extension.load``, whose own lock file, left behind by a process killed inside it, makes
every later load wait forever. A library that does not match (cut short) is built again.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import threading
import warnings
from pathlib import Path
from types import ModuleType

NATIVE_ENVIRONMENT_VARIABLE = "LIQUID_MEMORY_NATIVE"
SOURCE = Path(__file__).with_name("liquid.cpp")
BUILT_MARKER = "built"  # in the build directory, once the library has been built and loaded
_lock = threading.Lock()


def enabled() -> bool:
    """False when ``LIQUID_MEMORY_NATIVE`` is 0, false, off or no."""
    return os.environ.get(NATIVE_ENVIRONMENT_VARIABLE, "").strip().lower() not in ("0", "false", "off", "no")


def _flags() -> tuple[str, list[str]]:
    """A name suffix and compiler flags for this CPU: AVX2 + FMA where torch found them, so that a
    cache shared between machines never hands one a build for instructions it lacks."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    flags = ["-O3"]
    if capability in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    else:
        capability = "DEFAULT"
    return capability.lower(), flags


def _find_ninja() -> None:
    """Put the ``ninja`` of the installed Python package on PATH when none is there (a venv that
    is used without being activated)."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


def _name() -> str:
    """One name per source and compiler flags (a change to either builds anew)."""
    suffix, flags = _flags()
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(flags).encode()).hexdigest()[:10]
    return f"liquid_memory_native_{suffix}_{digest}"


def _build_directory() -> Path:
    """Where the build lives: one folder per Python, torch version and source (a torch upgrade
    never loads a library built against the previous one)."""
    import sys

    import torch
    from torch.utils import cpp_extension

    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root())
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    return root / f"{python}_torch{torch.__version__.replace('+', '_')}" / _name()


def _vouched_library(directory: Path) -> Path | None:
    """The library the build marker names, if it is still the file that was built and loaded."""
    try:
        marker = json.loads((directory / BUILT_MARKER).read_text())
        library = directory / marker["library"]
        if hashlib.sha256(library.read_bytes()).hexdigest() == marker["sha256"]:
            return library
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def is_built() -> bool:
    """Whether this machine's cache already holds the build (so :func:`load` takes well under a
    second rather than a minute)."""
    return _vouched_library(_build_directory()) is not None


def describe() -> str:
    """Which build trains on CPU here, for provenance records and benchmark tables."""
    if not enabled():
        return f"python (model.kernels; {NATIVE_ENVIRONMENT_VARIABLE}=0)"
    extension = load()
    if extension is None:
        return "python (model.kernels; the C++ build failed)"
    return f"c++ (model.native, products {'straight into BLAS' if extension.blas_in_use() else 'through ATen'})"


@contextlib.contextmanager
def _exclusive(directory: Path):
    """One builder per build directory at a time, across processes; released by the operating
    system when the holder dies, however it dies."""
    with open(directory / "build.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _import(name: str, library: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compile(name: str, directory: Path, flags: list[str]) -> ModuleType:
    """Build (or bring up to date) and load; only ever called holding :func:`_exclusive`."""
    from torch.utils import cpp_extension

    _find_ninja()
    (directory / "lock").unlink(missing_ok=True)  # cpp_extension's own lock, left by a process killed inside it
    (directory / BUILT_MARKER).unlink(missing_ok=True)
    for library in directory.glob("*.so"):  # not vouched for (cut short by a kill, damaged): ninja might keep it
        library.unlink()
    module = cpp_extension.load(
        name=name, sources=[str(SOURCE)], extra_cflags=flags, build_directory=str(directory), verbose=False
    )
    library = Path(module.__file__)  # the library that loaded
    written = directory / f"{BUILT_MARKER}.partial"
    written.write_text(json.dumps({"library": library.name, "sha256": hashlib.sha256(library.read_bytes()).hexdigest()}))
    written.replace(directory / BUILT_MARKER)  # in one step: a reader sees no marker or a whole one
    return module


@functools.cache
def _build() -> ModuleType | None:
    _, flags = _flags()
    try:
        directory = _build_directory()
        name = directory.name  # the extension's name: one per source and flags
        directory.mkdir(parents=True, exist_ok=True)
        library = _vouched_library(directory)
        if library is None:
            with _exclusive(directory):
                library = _vouched_library(directory)  # another process may have built it while this one waited
                if library is None:
                    return _compile(name, directory, flags)
        return _import(name, library)
    except Exception as error:  # no compiler, no ninja, unwritable cache: the Python kernel does the same work
        reason = str(error).strip().splitlines()
        warnings.warn(
            f"model.native: the C++ solver kernel could not be built ({type(error).__name__}: "
            f"{reason[-1] if reason else ''}); training uses the Python fused kernel (same results, slower). "
            f"Set {NATIVE_ENVIRONMENT_VARIABLE}=0 to skip the build.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def load() -> ModuleType | None:
    """The compiled extension, or None (disabled, or it could not be built)."""
    if not enabled():
        return None
    with _lock:  # two threads of one process build once
        return _build()


def available() -> bool:
    """Whether CPU training runs the C++ kernel."""
    return load() is not None


@contextlib.contextmanager
def switched_off():
    """Run the Python kernel inside this block (for comparisons; not thread-safe)."""
    previous = os.environ.get(NATIVE_ENVIRONMENT_VARIABLE)
    os.environ[NATIVE_ENVIRONMENT_VARIABLE] = "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[NATIVE_ENVIRONMENT_VARIABLE]
        else:
            os.environ[NATIVE_ENVIRONMENT_VARIABLE] = previous


__all__ = ["NATIVE_ENVIRONMENT_VARIABLE", "available", "describe", "enabled", "is_built", "load", "switched_off"]
