#!/usr/bin/env bash
# Install everything the portal needs on Debian 12, idempotently.
#
#   scripts/setup.sh demo   system packages, .venv from requirements.txt, npm assets, libvirtd
#   scripts/setup.sh test   the same with requirements-dev.txt, plus chromium, slapd, ldap-utils,
#                           openssh-server (never started as a service), and PostgreSQL /
#                           Redis when they do not already answer
#
# Every step checks first and only acts when something is missing or changed, so a second
# run takes seconds. Run it as root (or as a user with sudo).
set -euo pipefail

PYTHON="${PYTHON:-python3}" # the interpreter the virtualenv is made from
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" setup
cd "$ROOT"

PROFILE="${1:-demo}"
case "$PROFILE" in
  demo | test) ;;
  *)
    echo "usage: $0 demo|test" >&2
    exit 2
    ;;
esac

VENV="$ROOT/.venv"

DONE=()
did() {
  DONE+=("$*")
  say "$*"
}

# --- system packages --------------------------------------------------------------------------

PACKAGES=(
  ca-certificates
  python3 python3-venv
  pkg-config gcc
  libvirt-daemon-system libvirt-clients libvirt-dev
  qemu-system-x86 qemu-utils dnsmasq-base iptables iproute2 dmidecode
  rrdtool librrd-dev
  libldap2-dev libsasl2-dev
  busybox-static dropbear-bin syslinux syslinux-common mtools
)

# Wheels for libvirt-python and python-ldap are built from source: the interpreter's headers
# must exist. Debian's python3 needs python3-dev; a pyenv or custom build ships its own.
if ! "$PYTHON" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
  PACKAGES+=(python3-dev)
fi

if ! command -v npm >/dev/null 2>&1; then
  PACKAGES+=(nodejs npm)
fi

if [ "$PROFILE" = test ]; then
  PACKAGES+=(chromium fonts-dejavu-core slapd ldap-utils)
  # Reuse services that already answer (a developer's own server, a CI service container).
  if ! tcp_answers 127.0.0.1 5432; then
    PACKAGES+=(postgresql)
  fi
  if ! tcp_answers 127.0.0.1 6379; then
    PACKAGES+=(redis-server)
  fi
fi

MISSING=()
for pkg in "${PACKAGES[@]}"; do
  package_installed "$pkg" || MISSING+=("$pkg")
done

if [ "${#MISSING[@]}" -gt 0 ]; then
  say "installing ${MISSING[*]}"
  apt_install "${MISSING[@]}"
  did "installed Debian packages: ${MISSING[*]}"
  if [[ " ${MISSING[*]} " == *" postgresql "* ]]; then
    # Lets start-services.sh open this fresh cluster to passwordless local TCP for the tests.
    mkdir -p "$VAR_DIR" && touch "$VAR_DIR/.postgresql-installed-by-setup"
  fi
fi

# --- OpenSSH server for the netns tier ---------------------------------------------------------
# The netns tests run their own sshd (own config, own keys) inside a throw-away network
# namespace. The package must not start or enable the system's sshd: a policy-rc.d denies the
# start during the install, and sshd_not_to_be_run keeps Debian's unit and init script off.

POLICY_RC=/usr/sbin/policy-rc.d
POLICY_MADE=0
remove_policy_rc() {
  if [ "$POLICY_MADE" = 1 ]; then
    "${SUDO[@]}" rm -f "$POLICY_RC"
    POLICY_MADE=0
  fi
}
if [ "$PROFILE" = test ] && ! package_installed openssh-server; then
  can_install || die "missing package openssh-server; run as root or install sudo"
  say "installing openssh-server (its service stays off)"
  trap remove_policy_rc EXIT
  if [ ! -e "$POLICY_RC" ]; then
    printf '#!/bin/sh\n# written by scripts/setup.sh for one apt-get install\nexit 101\n' |
      "${SUDO[@]}" tee "$POLICY_RC" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY_RC"
    POLICY_MADE=1
  fi
  "${SUDO[@]}" mkdir -p /etc/ssh
  "${SUDO[@]}" touch /etc/ssh/sshd_not_to_be_run
  apt_install openssh-server
  remove_policy_rc
  trap - EXIT
  did "installed openssh-server for the netns tests (system sshd disabled: /etc/ssh/sshd_not_to_be_run)"
fi

# --- Python virtualenv ------------------------------------------------------------------------

if [ "$PROFILE" = test ]; then
  REQUIREMENTS=(requirements-dev.txt requirements.txt)
else
  REQUIREMENTS=(requirements.txt)
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  did "created virtualenv $VENV"
fi

STAMP="$VENV/.requirements-$PROFILE.sha256"
WANT="$(cat "${REQUIREMENTS[@]}" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "${REQUIREMENTS[0]}"
  echo "$WANT" >"$STAMP"
  if [ "$PROFILE" = test ]; then # the dev set includes the runtime set
    sha256sum requirements.txt | cut -d' ' -f1 >"$VENV/.requirements-demo.sha256"
  fi
  did "installed Python packages from ${REQUIREMENTS[0]}"
fi

# --- browser assets from npm ------------------------------------------------------------------

NPM_STAMP="$ROOT/node_modules/.package-lock.sha256"
NPM_WANT="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -d "$ROOT/node_modules" ] || [ ! -f "$NPM_STAMP" ] || [ "$(cat "$NPM_STAMP")" != "$NPM_WANT" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$NPM_WANT" >"$NPM_STAMP"
  did "installed npm assets into node_modules/ (npm ci)"
fi

# --- runtime directories (portal/settings.py makes var/secret_key on first use) -------------

mkdir -p "$VAR_DIR/run" "$VAR_DIR/log" "$ROOT/artifacts"

# --- the demo guest ---------------------------------------------------------------------------
# A tiny Linux built from Debian packages (hosts/guest_image.py): the kernel .deb comes from
# apt-get download, so apt must know the kernel package. Built once per change and cached;
# the test tiers use their own cache under /var/tmp (tests/integration/guest.py).

if ! apt-cache show --no-all-versions linux-image-amd64 >/dev/null 2>&1; then
  apt_update_once
fi
if [ -n "${PORTAL_GUEST_CACHE:-}" ]; then
  GUEST_CACHES=("$PORTAL_GUEST_CACHE")
elif [ "$PROFILE" = test ]; then
  GUEST_CACHES=("$VAR_DIR/guest-cache" /var/tmp/portal-guest)
else
  GUEST_CACHES=("$VAR_DIR/guest-cache")
fi
for cache in "${GUEST_CACHES[@]}"; do
  before="$(ls "$cache"/demo-guest-*.qcow2 2>/dev/null || true)"
  image="$("$VENV/bin/python" -c 'import sys
from pathlib import Path
from hosts.guest_image import ensure_guest_image
print(ensure_guest_image(Path(sys.argv[1])))' "$cache")"
  chmod 755 "$cache"
  if ! grep -qxF "$image" <<<"$before"; then
    did "built the demo guest $image"
  fi
done

# --- libvirtd ---------------------------------------------------------------------------------

if out="$(bash "$ROOT/scripts/start-libvirtd.sh" 2>&1)"; then
  [ -n "$out" ] && printf '%s\n' "$out"
  if grep -q "^start-libvirtd: started" <<<"$out"; then
    did "started libvirt (see above)"
  fi
else
  printf '%s\n' "$out" >&2
  if [ "$PROFILE" = demo ]; then
    die "libvirtd could not be started; the demo cannot run VMs"
  fi
  # Tiers 1-4 do not need libvirt; the hypervisor tier reports the problem itself.
  warn "WARNING libvirtd could not be started; hypervisor tests will not pass"
  did "libvirtd NOT started (warning)"
fi

# --- summary ----------------------------------------------------------------------------------

if [ "${#DONE[@]}" -eq 0 ]; then
  echo "setup ($PROFILE): everything already in place, nothing to do"
else
  echo "setup ($PROFILE): done:"
  for line in "${DONE[@]}"; do
    echo "  - $line"
  done
fi
