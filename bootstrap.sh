#!/usr/bin/env bash
# One entry point for a fresh machine: creates (or reuses) ./.venv, installs the suite, then
#   ./bootstrap.sh main   runs the smoke tuning study and writes its report
#   ./bootstrap.sh test   runs the test suite
#   ./bootstrap.sh env    only sets up the environment
# Environment: PYTHON (interpreter for the venv, default python3), HPO_OPENML_MIRROR (an offline
# openml-python cache; defaults to ../shared/ctr23/openml_cache when that folder exists).
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)
venv="$here/.venv"
python=${PYTHON:-python3}

setup_env() {
  local stamp="$venv/.installed"
  # Reinstall only when the project's requirements changed since the last install.
  if [[ -f "$stamp" && "$stamp" -nt pyproject.toml && "$stamp" -nt constraints.txt ]]; then
    return
  fi
  [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
  local constraints=(-c constraints.txt)
  # Without an NVIDIA GPU take the CPU build of torch (never a multi-GB CUDA build).
  local cpu_pin
  cpu_pin=$(mktemp)
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "torch==2.13.0+cpu" >"$cpu_pin"
    constraints+=(-c "$cpu_pin")
  fi
  local find_links
  find_links=$("$venv/bin/python" -m pip config get global.find-links 2>/dev/null || true)
  if "$venv/bin/python" -m pip install -q uv >/dev/null 2>&1; then
    # uv is ~10x faster than pip; it only sees locally stored wheels through --find-links.
    # --compile-bytecode: pip compiles on install, uv does not; without .pyc files (and with
    # PYTHONDONTWRITEBYTECODE set) every process, Ray workers included, recompiles torch on import.
    local uv_args=()
    [[ -n "$find_links" ]] && uv_args+=(--find-links "$find_links")
    VIRTUAL_ENV="$venv" "$venv/bin/uv" pip install --python "$venv/bin/python" -q --compile-bytecode "${uv_args[@]}" \
      "${constraints[@]}" -e ".[test,dashboard]"
  else
    "$venv/bin/python" -m pip install -q "${constraints[@]}" -e ".[test,dashboard]"
  fi
  rm -f "$cpu_pin"
  touch "$stamp"
}

default_mirror() {
  if [[ -z "${HPO_OPENML_MIRROR:-}" && -d "$here/../shared/ctr23/openml_cache" ]]; then
    export HPO_OPENML_MIRROR="$here/../shared/ctr23/openml_cache"
  fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
  env)
    setup_env ;;
  main)
    setup_env
    default_mirror
    exec "$venv/bin/python" -m hpo main "$@" ;;
  test)
    setup_env
    default_mirror
    exec "$venv/bin/python" -m pytest "$@" ;;
  *)
    echo "usage: ./bootstrap.sh {main|test|env} [args...]" >&2
    exit 2 ;;
esac
