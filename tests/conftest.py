"""Shared test set-up: an offline mirror and a fresh, writable openml-python cache per session.

The README's test command sets HPO_OPENML_MIRROR; when it is unset, the mirror beside the
checkout (../shared/ctr23/openml_cache) is used if it exists. Each test session gets its own
cache (openml-python writes pickles tied to the pandas version into it). Environment variables
are set at configure time so subprocesses and Ray workers inherit them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

# CI explores the same examples on every run (a red CI must be reproducible); locally each run
# draws new ones. HYPOTHESIS_PROFILE=ci selects the former anywhere.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI") or os.environ.get("HYPOTHESIS_PROFILE") == "ci":
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MIRROR = REPO.parent / "shared" / "ctr23" / "openml_cache"


def pytest_configure(config: pytest.Config) -> None:
    mirror = os.environ.get("HPO_OPENML_MIRROR")
    if mirror:
        os.environ["HPO_OPENML_MIRROR"] = str(Path(mirror).resolve())
    elif DEFAULT_MIRROR.is_dir():
        os.environ["HPO_OPENML_MIRROR"] = str(DEFAULT_MIRROR)
    if os.environ.get("HPO_TEST_KEEP_CACHE") != "1":  # =1 reuses HPO_OPENML_CACHE across sessions
        os.environ["HPO_OPENML_CACHE"] = tempfile.mkdtemp(prefix="hpo-test-openml-")


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The offline mirror; tests that need real data fail loudly without it."""
    path = os.environ.get("HPO_OPENML_MIRROR")
    if not path or not Path(path).is_dir():
        pytest.fail(
            "real-data tests need the CTR23 mirror: set HPO_OPENML_MIRROR to an openml-python "
            "cache (the README's test command points it at ../shared/ctr23/openml_cache)"
        )
    return Path(path)


@pytest.fixture(scope="session")
def manifest(mirror: Path) -> dict:
    """The mirror's manifest.json (one entry per CTR23 task)."""
    return json.loads((mirror.parent / "manifest.json").read_text())
