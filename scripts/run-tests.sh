#!/usr/bin/env bash
# Run the test tiers one after the other (the fast and postgres tiers side by side); exit
# non-zero when any tier fails.
#
#   tier 1 fast  2 postgres  3 redis  4 ldap  5 hypervisor  6 browser  7 netns
#
# The tiers, their markers and which tests each selects are defined once, in tests/tiers.py;
# this script adds where each tier's service is (database, broker) and sums the results.
# `scripts/run-tests.sh 1 3` runs only the given tiers; extra pytest arguments go in PYTEST_ARGS.
# JUnit reports land in artifacts/junit-tier<N>.xml; the last line reads "N passed, M failed".
set -uo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" run-tests
cd "$ROOT"

PY="$ROOT/.venv/bin/python"
ARTIFACTS="$ROOT/artifacts"
mkdir -p "$ARTIFACTS"
[ -x "$PY" ] || die "$PY is missing; run scripts/setup.sh test first"

export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1
export PYTHONHASHSEED="${PYTHONHASHSEED:-0}"
export LANG=C.UTF-8 LC_ALL=C.UTF-8
export TZ=UTC
export PORTAL_ARTIFACTS_DIR="$ARTIFACTS"  # screenshots and other test output
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 # browser tests use /usr/bin/chromium
# Each tier picks its own database and broker below; ignore whatever the caller had set.
unset DATABASE_URL REDIS_URL DJANGO_SETTINGS_MODULE

POSTGRES_URL="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/portal}"
TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
read -r -a EXTRA <<<"${PYTEST_ARGS:-}"

TIER_NAMES=("") # indexed by tier number
TIER_EXPR=("")
while IFS=$'\t' read -r _ name expr; do
  TIER_NAMES+=("$name")
  TIER_EXPR+=("$expr")
done < <("$PY" "$ROOT/tests/tiers.py")
LAST_TIER=$((${#TIER_NAMES[@]} - 1))
[ "$LAST_TIER" -ge 1 ] || die "tests/tiers.py defined no tiers"

SUMMARY=()
RESULTS=() # "tier:exit code"
FAILED_TIERS=0

tier_exec() { # number: run one tier's pytest, print its output; return its exit code
  local n="$1" name="${TIER_NAMES[$1]}" junit="$ARTIFACTS/junit-tier$1.xml"
  local tier_env=()
  case "$name" in
    postgres) tier_env=("DATABASE_URL=$POSTGRES_URL") ;;
    redis) tier_env=("REDIS_URL=$TEST_REDIS_URL") ;;
    browser) tier_env=("DJANGO_ALLOW_ASYNC_UNSAFE=true") ;; # Playwright's sync API runs a loop
  esac
  rm -f "$junit"
  echo
  echo "=== tier $n ($name): -m \"${TIER_EXPR[$n]}\" ${tier_env[*]}"
  env "${tier_env[@]}" "$PY" -m pytest -m "${TIER_EXPR[$n]}" --junitxml="$junit" \
    -o junit_family=xunit2 "${EXTRA[@]}"
}

tier_record() { # number, exit code: add the tier to the summary
  local n="$1" name="${TIER_NAMES[$1]}" rc="$2" counts
  RESULTS+=("$n:$rc")
  counts="$(junit_counts "$ARTIFACTS/junit-tier$n.xml")"
  case "$rc" in
    0) SUMMARY+=("tier $n ($name): ok ($counts)") ;;
    5) SUMMARY+=("tier $n: no tests yet") ;;
    *)
      SUMMARY+=("tier $n ($name): FAILED, pytest exit $rc ($counts)")
      FAILED_TIERS=$((FAILED_TIERS + 1))
      ;;
  esac
}

run_tier() { # number
  tier_exec "$1"
  tier_record "$1" "$?"
}

# The fast tier (SQLite in memory) and the postgres tier (the same tests on PostgreSQL) share
# nothing but the CPU: when both are asked for, the postgres tier runs beside the fast one,
# its output kept in a file and printed once the fast tier has finished.
run_fast_and_postgres() {
  local log="$ARTIFACTS/tier2.log" rc_file="$ARTIFACTS/tier2.rc"
  rm -f "$log" "$rc_file"
  (tier_exec 2 >"$log" 2>&1; echo "$?" >"$rc_file") &
  local beside=$!
  run_tier 1
  wait "$beside"
  cat "$log"
  tier_record 2 "$(cat "$rc_file" 2>/dev/null || echo 1)"
}

# Prints "P passed, F failed, S skipped" for one JUnit file (zeros when it is missing).
junit_counts() {
  "$PY" - "$1" <<'EOF'
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    root = None
if root is not None:
    suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
    for s in suites:
        tests = int(s.get("tests", 0))
        bad = int(s.get("failures", 0)) + int(s.get("errors", 0))
        skip = int(s.get("skipped", 0))
        failed += bad
        skipped += skip
        passed += tests - bad - skip
print(f"{passed} passed, {failed} failed, {skipped} skipped")
EOF
}

if [ "$#" -gt 0 ]; then
  TIERS=("$@")
else
  mapfile -t TIERS < <(seq 1 "$LAST_TIER")
fi
for n in "${TIERS[@]}"; do
  if ! [[ "$n" =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt "$LAST_TIER" ]; then
    echo "run-tests: unknown tier '$n' (1-$LAST_TIER)" >&2
    exit 2
  fi
done
BESIDE=""
if [ "${TIER_NAMES[1]}" = fast ] && [ "${TIER_NAMES[2]:-}" = postgres ] &&
  [[ " ${TIERS[*]} " == *" 1 "* ]] && [[ " ${TIERS[*]} " == *" 2 "* ]]; then
  BESIDE=yes
fi
for n in "${TIERS[@]}"; do
  if [ "$BESIDE" ] && [ "$n" = 1 ]; then
    run_fast_and_postgres
  elif [ "$BESIDE" ] && [ "$n" = 2 ]; then
    continue
  else
    run_tier "$n"
  fi
done

echo
echo "=== summary"
printf '%s\n' "${SUMMARY[@]}"
[ "${CI:-}" ] && echo "(CI=${CI}: a tier whose service is missing fails instead of skipping)"

# Sum every tier; a failed tier without any recorded failing test counts as one failure.
"$PY" - "$ARTIFACTS" "${RESULTS[@]}" <<'EOF'
import os
import sys
import xml.etree.ElementTree as ET

artifacts, results = sys.argv[1], sys.argv[2:]
passed = failed = 0
for result in results:
    tier, rc = result.split(":")
    bad = 0
    try:
        root = ET.parse(os.path.join(artifacts, f"junit-tier{tier}.xml")).getroot()
    except (OSError, ET.ParseError):
        root = None
    if root is not None:
        suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
        for s in suites:
            suite_bad = int(s.get("failures", 0)) + int(s.get("errors", 0))
            bad += suite_bad
            passed += int(s.get("tests", 0)) - suite_bad - int(s.get("skipped", 0))
    if rc not in ("0", "5") and bad == 0:
        bad = 1
    failed += bad
print(f"{passed} passed, {failed} failed")
EOF

[ "$FAILED_TIERS" -eq 0 ]
