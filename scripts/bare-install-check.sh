#!/usr/bin/env bash
# Install Deputy as a user would — `pip install .`, no extras, no `-e` — into a fresh venv, and show
# that what pyproject.toml declares is enough to run it (issue 17, item 1: httpx was imported at run
# time but declared for development only, so `deputy serve` died with ModuleNotFoundError):
#   1. `deputy --help` works;
#   2. every third-party module the installed package imports, on any path, is installed and declared
#      (scripts/runtime_imports.py);
#   3. `deputy demo` comes up (answers /healthz and prints its sign-in), then stops cleanly on SIGINT.
# A missing module fails the step with its name. `.ci/run` runs this before `make test`, whose venv has
# the dev extras and would hide such a gap. Nothing outside a temporary directory is touched.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

PYTHON=${PYTHON:-python3}
START_TIMEOUT=${BARE_INSTALL_START_TIMEOUT:-60}  # seconds for `deputy demo` to answer /healthz
STOP_TIMEOUT=${BARE_INSTALL_STOP_TIMEOUT:-20}    # seconds for it to exit after SIGINT

work=$(mktemp -d "${TMPDIR:-/tmp}/deputy-bare-install.XXXXXX")
demo_pid=""
cleanup() {
  if [[ -n $demo_pid ]] && kill -0 "$demo_pid" 2>/dev/null; then kill -KILL "$demo_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

say() { echo "bare-install-check: $*"; }
fail() {
  echo "bare-install-check: FAILED: $*" >&2
  exit 1
}
# Say loudly which module a bare install lacks, if a log shows one.
name_missing_module() {
  local module
  module=$(grep -oE "ModuleNotFoundError: No module named '[^']+'" "$1" | head -1 | sed -E "s/.*'([^']+)'.*/\\1/" || true)
  if [[ -n $module ]]; then
    echo "bare-install-check: FAILED: ModuleNotFoundError: No module named '$module' —" \
      "Deputy imports it at run time but a bare install (pip install ., no extras) lacks it;" \
      "declare it in [project] dependencies of pyproject.toml" >&2
    exit 1
  fi
}
show() {  # the last lines of a log, indented
  tail -n 40 "$1" | sed 's/^/    /' >&2
}

# The source as git sees it (tracked and new files, nothing ignored), so no stale build/, .venv or
# egg-info of this checkout can stand in for what the package really ships.
mkdir "$work/src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' path; do if [[ -e $path ]]; then printf '%s\0' "$path"; fi; done \
    | tar --null -T - -cf - | tar -xf - -C "$work/src"
else
  tar --exclude=./.git --exclude=./.venv --exclude=./.cache --exclude=./.deputy --exclude=./build \
    --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -xf - -C "$work/src"
fi

say "pip install . (no extras) into a fresh venv"
"$PYTHON" -m venv "$work/venv"
bin=$work/venv/bin
if ! "$bin/python" -m pip install --quiet "$work/src" >"$work/install.log" 2>&1; then
  show "$work/install.log"
  fail "pip install . failed"
fi

# Run from outside the checkout, so only the installed package can be imported.
cd "$work"
say "deputy --help"
if ! "$bin/deputy" --help >"$work/help.log" 2>&1; then
  show "$work/help.log"
  name_missing_module "$work/help.log"
  fail "deputy --help exited with an error"
fi
grep -q "demo" "$work/help.log" || { show "$work/help.log"; fail "deputy --help does not list its commands"; }

say "every runtime import of the installed package is installed and declared"
"$bin/python" "$root/scripts/runtime_imports.py" || fail "the installed package imports what it does not declare (above)"

free_port() {
  "$bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=$(free_port)
upstream_port=$(free_port)
while [[ $upstream_port == "$port" ]]; do upstream_port=$(free_port); done
say "deputy demo on 127.0.0.1:$port (upstream on $upstream_port, data in a temporary directory)"
# No DEPUTY_* setting of the caller's may reach the demo: it runs on its embedded defaults.
mapfile -t unset_deputy < <(env | sed -n 's/^\(DEPUTY_[A-Za-z0-9_]*\)=.*/-u\n\1/p')
env "${unset_deputy[@]}" DEPUTY_PORT="$port" DEPUTY_DATA_DIR="$work/data" \
  "$bin/deputy" demo --upstream-port "$upstream_port" >"$work/demo.log" 2>&1 &
demo_pid=$!

healthy() {
  "$bin/python" -c 'import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as answer:
    sys.exit(answer.status != 200)' "http://127.0.0.1:$port/healthz" 2>/dev/null
}
started=$SECONDS
until healthy; do
  if ! kill -0 "$demo_pid" 2>/dev/null; then
    show "$work/demo.log"
    name_missing_module "$work/demo.log"
    fail "deputy demo exited before it answered /healthz"
  fi
  ((SECONDS - started < START_TIMEOUT)) || { show "$work/demo.log"; fail "deputy demo did not answer /healthz within ${START_TIMEOUT}s"; }
  sleep 0.2
done
grep -q "Sign in as alice / " "$work/demo.log" || { show "$work/demo.log"; fail "deputy demo did not print its sign-in"; }
say "deputy demo answered /healthz after $((SECONDS - started))s; stopping it with SIGINT"

kill -INT "$demo_pid"
stopping=$SECONDS
while kill -0 "$demo_pid" 2>/dev/null; do
  # wait(1) has no timeout: poll, bounded, then fail (the EXIT trap kills it).
  ((SECONDS - stopping < STOP_TIMEOUT)) || { show "$work/demo.log"; fail "deputy demo still running ${STOP_TIMEOUT}s after SIGINT"; }
  sleep 0.2
done
status=0
wait "$demo_pid" || status=$?
demo_pid=""
if ((status != 0)) || grep -q "Traceback" "$work/demo.log"; then
  show "$work/demo.log"
  name_missing_module "$work/demo.log"
  fail "deputy demo did not exit cleanly after SIGINT (exit status $status)"
fi
say "ok: a bare install runs deputy --help and deputy demo (${SECONDS}s in all)"
