#!/usr/bin/env bash
# Make sure libvirtd answers at qemu:///system and the `default` network is active and
# autostarted. Uses systemctl when systemd runs, else starts virtlogd and libvirtd as daemons.
# Prints "start-libvirtd: started ..." for every thing it had to start; silent when all is up.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" start-libvirtd

URI="qemu:///system"
WAIT_SECONDS="${LIBVIRTD_WAIT_SECONDS:-30}"

command -v virsh >/dev/null 2>&1 || die "virsh is missing (apt-get install libvirt-clients)"

virsh_ok() { timeout 20 virsh -c "$URI" version >/dev/null 2>&1; }

pid_alive() { # pidfile
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# Without udev (containers, CI) /dev/kvm stays root-only, so qemu (running as libvirt-qemu)
# cannot use KVM and libvirt re-probes qemu on every call. Give it Debian's udev permissions.
if [ -c /dev/kvm ] && getent group kvm >/dev/null 2>&1; then
  if [ "$(stat -c '%G %a' /dev/kvm)" != "kvm 660" ]; then
    chgrp kvm /dev/kvm && chmod 0660 /dev/kvm && say "started: set /dev/kvm to root:kvm 0660"
  fi
fi

if ! virsh_ok; then
  if has_systemd; then
    systemctl start virtlogd.socket libvirtd.service
    say "started libvirtd with systemctl"
  else
    command -v libvirtd >/dev/null 2>&1 || die "libvirtd is missing (apt-get install libvirt-daemon-system)"
    if ! pid_alive /run/virtlogd.pid; then
      virtlogd -d
      say "started virtlogd"
    fi
    if ! pid_alive /run/libvirtd.pid; then
      libvirtd -d
      say "started libvirtd"
    fi
  fi
  wait_for "$WAIT_SECONDS" virsh_ok ||
    die "libvirtd does not answer at $URI after ${WAIT_SECONDS}s (look at /var/log/libvirt/)"
fi

# --- the `default` NAT network ------------------------------------------------------------------

if ! virsh -c "$URI" net-info default >/dev/null 2>&1; then
  xml=/usr/share/libvirt/networks/default.xml
  [ -f "$xml" ] || die "libvirt network 'default' does not exist and $xml is missing"
  virsh -c "$URI" net-define "$xml" >/dev/null
  say "started: defined libvirt network 'default' from $xml"
fi

info="$(virsh -c "$URI" net-info default)"
if ! grep -Eq '^Active:[[:space:]]+yes' <<<"$info"; then
  if ! err="$(virsh -c "$URI" net-start default 2>&1)"; then
    die "cannot start libvirt network 'default': $err"
  fi
  say "started libvirt network 'default'"
fi
if ! grep -Eq '^Autostart:[[:space:]]+yes' <<<"$info"; then
  virsh -c "$URI" net-autostart default >/dev/null
  say "started: set libvirt network 'default' to autostart"
fi
