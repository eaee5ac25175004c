#!/usr/bin/env bash
# One entry point that installs what it needs on first use, then runs:
#   ./run.sh ui [launch_ui.py flags]     the Gradio chat UI on the built-in default
#   ./run.sh chat [assistant.chat flags] a command-line chat
#   ./run.sh serve [launch_server.py flags] the OpenAI-compatible HTTP server
#   ./run.sh test [pytest args]          the test suite
#   ./run.sh bench                       the benchmarks
set -euo pipefail
cd "$(dirname "$0")"

VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.installed-$(cat pyproject.toml run.sh | sha256sum | cut -c1-16)"

llama_cmake_args() {
  local args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF"
  args="$args -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  local flag
  for flag in AVX512:avx512f AVX512_VNNI:avx512_vnni AVX512_BF16:avx512_bf16; do
    if grep -qw "${flag#*:}" /proc/cpuinfo 2>/dev/null; then args="$args -DGGML_${flag%%:*}=ON"; else args="$args -DGGML_${flag%%:*}=OFF"; fi
  done
  echo "$args"
}

install_python() {
  [ -f "$STAMP" ] && return
  echo "[run.sh] creating $VENV and installing dependencies (first run only)..." >&2
  python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --upgrade pip
  # torch first and pinned: on the project's CPU machines this is a local CPU wheel.
  "$PY" -m pip install --quiet "torch==2.13.0"
  "$PY" -m pip install --quiet -e ".[test]"
  # llama.cpp decodes the default ~7x faster than PyTorch here (assistant.llama_cpp_engine). It builds from source
  # (~8 min on 2 cores); without it the default decodes with PyTorch. Built for this CPU's instruction sets, never from a
  # wheel cached on another machine (--no-cache-dir): AMX off (a native build with it crashed), AVX-512 only where the CPU
  # has it (an AVX-512 build dies with "Illegal instruction" on an AVX2-only AMD EPYC).
  CMAKE_ARGS="${LLAMA_CMAKE_ARGS:-$(llama_cmake_args)}" \
    "$PY" -m pip install --quiet --no-cache-dir -e ".[llama]" \
    || echo "[run.sh] llama-cpp-python did not build: the default decodes with PyTorch (serving 'auto')" >&2
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
}

install_debian() {
  # chromium + chromedriver for the browser test; espeak-ng speaks the audio tests' (and the recipe's) questions.
  command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v espeak-ng >/dev/null && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[run.sh] installing Debian chromium, chromium-driver and espeak-ng for the tests..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver espeak-ng >/dev/null
  else
    echo "[run.sh] chromium/chromedriver/espeak-ng missing and cannot apt-get: the browser and speech tests will be skipped" >&2
  fi
}

command="${1:-ui}"
shift || true
export HF_HUB_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1
case "$command" in
  ui) install_python; exec "$PY" launch_ui.py "$@" ;;
  chat) install_python; exec "$PY" -m assistant.chat "$@" ;;
  serve) install_python; exec "$PY" launch_server.py "$@" ;;
  test) install_python; install_debian; exec "$PY" -m pytest "$@" ;;
  bench) install_python; for script in benchmarks/*.py; do "$PY" "$script"; done ;;
  *) echo "usage: ./run.sh {ui|chat|serve|test|bench} [args]" >&2; exit 2 ;;
esac
