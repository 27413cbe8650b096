#!/usr/bin/env bash
# Install everything histoxai needs on a fresh Debian machine (run as root, or with sudo):
# Debian packages for the browser and database tests, then a virtualenv in .venv with the
# project and its pinned dependencies. Safe to run again: each step is skipped when done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
APT_PACKAGES=(chromium chromium-driver postgresql git)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# pip -q still prints one "Location '<index>/<package>/' is ignored" warning per package
# when this machine's pip config names local index folders that lack it (~270 for a full
# install): count them instead of printing them; everything else pip says is shown.
pip_quiet() {
  local log n
  log=$(mktemp)
  if ! .venv/bin/python -m pip "$@" 2>"$log"; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  n=$(grep -c "is ignored: it is neither a file nor a directory" "$log" || true)
  # setuptools' fixed notice that every editable install uses a path finder (not a problem)
  grep -v "is ignored: it is neither a file nor a directory" "$log" |
    sed '/BuildBackendWarning: Editable installation\./,/WheelFile(wheel_path/d' >&2 || true
  rm -f "$log"
  if ((n)); then
    echo "setup: ($n pip warnings about local package-index folders from this machine's pip config not shown)"
  fi
}

stamp=.venv/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "setup: creating .venv and installing histoxai with its pinned dependencies"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  pip_quiet install -q --upgrade pip
  pip_quiet install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
echo "setup: ok ($(.venv/bin/python --version), torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
