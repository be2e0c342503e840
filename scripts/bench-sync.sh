#!/usr/bin/env bash
# Benchmark: `sync` at N users in one domain (plain LDAP + MariaDB over TCP on loopback,
# release build). For each N and each innodb_flush_log_at_trx_commit value:
#   - first import (every mailbox created from its template, with all its side rows);
#   - a full sync with nothing to change;
#   - the template of 2/3 of the users changed, then a full sync that re-applies it;
# prints wall time and peak RSS (/usr/bin/time -v) of each run as a Markdown table, then how
# long a second MariaDB client waits for the domain row lock (SELECT … FOR UPDATE, as a first
# login or a template update takes it), every 10 ms: with the servers idle, during the first
# import and during the re-apply; and how long the read of the domain's usage (mailbox count
# and quota sum, which a creation makes under the lock) takes once N mailboxes exist.
#   scripts/bench-sync.sh [N...]   (default 10000 50000 100000; FLUSH="0 1" by default;
#                                   needs root, installs packages like the tests; BIN=path
#                                   measures that binary instead of a fresh release build)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(10000 50000 100000)
read -r -a FLUSH <<< "${FLUSH:-0 1}"
# shellcheck source=scripts/lib/bench.sh
. scripts/lib/bench.sh
# BIN=path: measure that binary (e.g. an older build, for a before/after) instead of building
if [ -z "${BIN:-}" ]; then bench_build; fi

ROOT=$(mktemp -d /tmp/mla-bench-sync.XXXXXX)
LOCKS=$(mktemp /tmp/mla-bench-sync-locks.XXXXXX)
stop() { srv_stop "$ROOT/slapd" 2>/dev/null || true; srv_stop "$ROOT/mariadb" 2>/dev/null || true; }
trap 'stop; rm -rf "$ROOT" "$LOCKS"' EXIT

# measure LABEL N FLUSH: one forced sync, wall time and peak RSS
measure() {
  /usr/bin/time -v -o "$ROOT/time.txt" "$BIN" --config "$ROOT/config.yml" sync --force \
    --state-dir "$ROOT/state" --json > "$ROOT/summary.json" 2> "$ROOT/sync.err" ||
    { cat "$ROOT/sync.err" >&2; exit 1; }
  python3 - "$@" "$ROOT/time.txt" "$ROOT/summary.json" <<'PY'
import json, re, sys
label, n, flush, time_txt, summary = sys.argv[1:]
t = open(time_txt).read()
wall = re.search(r"Elapsed \(wall clock\) time.*: (.*)", t).group(1)
secs = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":"))))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) / 1024
s = json.load(open(summary))
counts = " ".join(f"{k}={s[k]}" for k in ("created", "reapplied", "unchanged", "failed"))
print(f"| {int(n):>7,} | {flush} | {label:<26} | {secs:6.1f} s | {rss:5.1f} MB | {counts} |", flush=True)
PY
}

# lock_probe OUT: in the background, times the domain row lock from a second client every
# 10 ms (microseconds per line in OUT) until stop_probe; PROBE is the client's PID.
lock_probe() {
  python3 -c '
for _ in range(60000):
    print("SET @t = SYSDATE(6); BEGIN; SELECT TIMESTAMPDIFF(MICROSECOND, @t, SYSDATE(6)) "
          "FROM domain WHERE domain = \x27example.org\x27 FOR UPDATE; ROLLBACK; DO SLEEP(0.01);")
' > "$ROOT/probe.sql"
  mariadb --no-defaults --socket="$ROOT/mariadb/mysqld.sock" -uroot mailcow -N -B -n \
    < "$ROOT/probe.sql" > "$1" 2>/dev/null &
  PROBE=$!
}
stop_probe() { kill "$PROBE" 2>/dev/null || true; wait "$PROBE" 2>/dev/null || true; }
# lock_stats LABEL N FLUSH OUT: p50/p99/max of the waits in OUT
lock_stats() {
  python3 - "$@" >> "$LOCKS" <<'PY'
import sys
label, n, flush, out = sys.argv[1:]
w = sorted(int(x) / 1000 for x in open(out).read().split())
q = lambda p: w[min(len(w) - 1, int(p * len(w)))] if w else float("nan")
print(f"| {int(n):>7,} | {flush} | {label:<15} | {len(w):6} | {q(0.5):6.2f} ms | {q(0.99):7.2f} ms | {max(w or [0]):7.2f} ms |")
PY
}

echo "|   users | flush | run                        |     wall | peak RSS | counts |"
echo "|---|---|---|---|---|---|"
for n in "${SIZES[@]}"; do
  for flush in "${FLUSH[@]}"; do
    stop
    rm -rf "$ROOT"/*
    # a third of the users map to a second template, Other
    BENCH_OTHER_EVERY=3 bench_servers "$ROOT" "$n" 5000 5000 /var/vmail > "$ROOT/servers.log"
    srv_mysql "$ROOT/mariadb" mailcow -e "SET GLOBAL innodb_flush_log_at_trx_commit = $flush;
      SET GLOBAL innodb_buffer_pool_size = 268435456;
      INSERT INTO templates (template, type, attributes)
        VALUES ('Other', 'mailbox', '{\"quota\":\"1024\",\"tags\":[\"other\"]}');"
    sed -i 's/^  - { attribute: staff, template: StaffUI }$/&\n  - { attribute: other, template: Other }/' \
      "$ROOT/config.yml"
    echo "sync: { import_users: true, periodic_full_sync: true }" >> "$ROOT/config.yml"
    lock_probe "$ROOT/idle.txt"; sleep 3; stop_probe
    lock_stats "idle" "$n" "$flush" "$ROOT/idle.txt"
    lock_probe "$ROOT/import.txt"
    measure "first import" "$n" "$flush"
    stop_probe
    lock_stats "during import" "$n" "$flush" "$ROOT/import.txt"
    # what a creation reads under the lock: the domain's mailbox count and quota sum
    for _ in 1 2 3 4 5; do
      echo "SET @t = SYSDATE(6); SELECT COUNT(*), SUM(quota) INTO @count, @quota FROM mailbox
        WHERE kind = '' AND domain = 'example.org';
        SELECT TIMESTAMPDIFF(MICROSECOND, @t, SYSDATE(6));"
    done | srv_mysql "$ROOT/mariadb" mailcow -N -B > "$ROOT/usage.txt"
    lock_stats "usage read" "$n" "$flush" "$ROOT/usage.txt"
    measure "full sync, nothing changed" "$n" "$flush"
    # StaffUI gets one more tag: re-applied to the 2/3 of the users mapped to it
    srv_mysql "$ROOT/mariadb" mailcow -e "UPDATE templates
      SET attributes = JSON_SET(attributes, '$.tags', JSON_ARRAY('staff', 'bench'))
      WHERE template = 'StaffUI'"
    lock_probe "$ROOT/reapply.txt"
    measure "template changed for 2/3" "$n" "$flush"
    stop_probe
    lock_stats "during re-apply" "$n" "$flush" "$ROOT/reapply.txt"
  done
done
echo
echo "Domain row lock wait of a second client (SELECT … FOR UPDATE every 10 ms):"
echo
echo "|   users | flush | while           | probes |      p50 |       p99 |       max |"
echo "|---|---|---|---|---|---|---|"
cat "$LOCKS"
