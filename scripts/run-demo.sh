#!/usr/bin/env bash
# Run the demo in the background: the web server, one django-q2 worker and the console proxy.
#
#   scripts/run-demo.sh start    start what is not running yet (never twice)
#   scripts/run-demo.sh stop     stop everything started here (whole process groups)
#   scripts/run-demo.sh status   show what runs
#
# PID files live in var/run, logs in var/log (PORTAL_VAR_DIR moves both). PORT picks the port.
# PORTAL_BIND picks the address the web server and the console proxy listen on: 127.0.0.1 by
# default, so only this machine reaches the demo (set e.g. 0.0.0.0, plus DJANGO_ALLOWED_HOSTS,
# to serve others; PORTAL_CONSOLE_LISTEN still overrides the proxy's host:port).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" run-demo
cd "$ROOT"

PORT="${PORT:-8000}"
BIND="${PORTAL_BIND:-127.0.0.1}"
case "$BIND" in *:*) BIND_HOST="[$BIND]" ;; *) BIND_HOST="$BIND" ;; esac
export PORTAL_CONSOLE_LISTEN="${PORTAL_CONSOLE_LISTEN:-$BIND_HOST:6080}"
RUN_DIR="$VAR_DIR/run"
LOG_DIR="$VAR_DIR/log"
PY="$ROOT/.venv/bin/python"
# Where this script checks the web server answers: the bound address, or loopback for "any".
case "$BIND" in 0.0.0.0 | ::) URL="http://127.0.0.1:$PORT/" ;; *) URL="http://$BIND_HOST:$PORT/" ;; esac

# The processes of the demo, started in this order from the repository root.
SERVICES=(web worker console)
service_argv() { # name -> sets ARGV
  case "$1" in
    web) ARGV=("$PY" manage.py runserver "$BIND_HOST:$PORT" --noreload) ;;
    worker) ARGV=("$PY" manage.py qcluster) ;;
    console) ARGV=("$PY" manage.py console_proxy) ;;
    *) return 1 ;;
  esac
}

pid_of() { # name -> prints the pid when its process is alive and still ours
  local file="$RUN_DIR/$1.pid" pid
  [ -s "$file" ] || return 1
  pid="$(cat "$file")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: the process must still be one of ours.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "manage.py" || return 1
  echo "$pid"
}

start_one() { # name
  local name="$1" pid log="$LOG_DIR/$1.log"
  if pid="$(pid_of "$name")"; then
    echo "  $name: already running (pid $pid)"
    return 0
  fi
  rm -f "$RUN_DIR/$name.pid"
  service_argv "$name"
  echo "--- $(date -Is) starting: ${ARGV[*]}" >>"$log"
  # setsid makes the process a group leader, so stop can signal the whole group.
  # shellcheck disable=SC2016 # $$ is expanded by the inner shell
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$RUN_DIR/$name.pid" "${ARGV[@]}" \
    >>"$log" 2>&1 </dev/null &
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    [ -s "$RUN_DIR/$name.pid" ] && break
    sleep 0.1
  done
  sleep 1
  if pid="$(pid_of "$name")"; then
    echo "  $name: started (pid $pid), log $log"
  else
    echo "  $name: FAILED to start; last lines of $log:" >&2
    tail -n 20 "$log" >&2 || true
    return 1
  fi
}

stop_one() { # name
  local name="$1" pid
  if ! pid="$(pid_of "$name")"; then
    rm -f "$RUN_DIR/$name.pid"
    echo "  $name: not running"
    return 0
  fi
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do # qcluster finishes its current task first
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    echo "  $name: killed (pid $pid did not stop within 10 s)"
  else
    echo "  $name: stopped (pid $pid)"
  fi
  rm -f "$RUN_DIR/$name.pid"
}

web_answers() {
  "$PY" - "$URL" <<'EOF' 2>/dev/null
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass  # any HTTP answer (302 to login, 404, ...) means the server is up
except OSError:
    sys.exit(1)
EOF
}

show_accounts() {
  local accounts="$VAR_DIR/demo-accounts.txt"
  if [ -s "$accounts" ]; then
    echo "Demo accounts (from $accounts):"
    sed 's/^/  /' "$accounts"
  else
    echo "No demo accounts yet ($accounts is missing): run 'make demo'."
  fi
}

case "${1:-}" in
  start)
    [ -x "$PY" ] || die "$PY is missing; run 'make demo' (or scripts/setup.sh demo) first"
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    echo "Starting the portal demo:"
    status=0
    for name in "${SERVICES[@]}"; do
      start_one "$name" || status=1
    done
    [ "$status" -eq 0 ] || die "something did not start; 'make stop' stops the rest"
    wait_for 15 web_answers ||
      echo "  (the web server does not answer at $URL yet; see $LOG_DIR/web.log)"
    echo "$URL" >"$RUN_DIR/url"
    echo
    echo "Portal: $URL"
    echo "Logs:   $LOG_DIR/web.log, $LOG_DIR/worker.log, $LOG_DIR/console.log"
    show_accounts
    echo "Stop with: make stop"
    ;;
  stop)
    echo "Stopping the portal demo:"
    # Reverse order: the console proxy and the worker stop before the web server.
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
      stop_one "${SERVICES[i]}"
    done
    rm -f "$RUN_DIR/url"
    ;;
  status)
    running=0
    for name in "${SERVICES[@]}"; do
      if pid="$(pid_of "$name")"; then
        echo "  $name: running (pid $pid), log $LOG_DIR/$name.log"
        running=1
      else
        echo "  $name: not running"
      fi
    done
    if [ "$running" -eq 1 ]; then
      echo "Portal: $(cat "$RUN_DIR/url" 2>/dev/null || echo "$URL")"
    fi
    exit 0
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
