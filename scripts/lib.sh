# Helpers the scripts share: `source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" NAME`, where NAME
# starts every message (setup, start-services, ...). Sets LIB_NAME, ROOT (the repository),
# VAR_DIR, PYTHON (the virtualenv's when it exists, unless set) and SUDO.
# shellcheck shell=bash

LIB_NAME="${1:-script}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR_DIR="${PORTAL_VAR_DIR:-$ROOT/var}"
if [ -z "${PYTHON:-}" ]; then
  PYTHON="python3"
  [ -x "$ROOT/.venv/bin/python" ] && PYTHON="$ROOT/.venv/bin/python"
fi
export DEBIAN_FRONTEND=noninteractive

say() { echo "$LIB_NAME: $*"; }
warn() { echo "$LIB_NAME: $*" >&2; }
die() {
  echo "$LIB_NAME: ERROR: $*" >&2
  exit 1
}

# Root runs apt itself; anyone else goes through sudo when there is one.
SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo DEBIAN_FRONTEND=noninteractive)
fi

can_install() { [ "$(id -u)" -eq 0 ] || [ "${#SUDO[@]}" -gt 0 ]; }

package_installed() { # package
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    "${SUDO[@]}" apt-get update -q
    APT_UPDATED=1
  fi
}

apt_install() { # package...
  can_install || die "missing packages $*; run as root or install sudo"
  apt_update_once
  "${SUDO[@]}" apt-get install -y -q --no-install-recommends "$@"
}

has_systemd() { [ -d /run/systemd/system ]; }

wait_for() { # seconds command...: run the command every second until it succeeds
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 1
  done
}

tcp_answers() { # host port
  "$PYTHON" - "$1" "$2" <<'PY' 2>/dev/null
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
except OSError:
    sys.exit(1)
PY
}
