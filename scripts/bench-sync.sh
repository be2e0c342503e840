#!/usr/bin/env bash
# Benchmark: `sync` at N users in one domain (plain LDAP + MariaDB over TCP on loopback,
# release build). For each N and each innodb_flush_log_at_trx_commit value:
#   - first import (every mailbox created from its template, with all its side rows);
#   - a full sync with nothing to change;
#   - the template of 2/3 of the users changed, then a full sync that re-applies it;
# prints wall time and peak RSS (/usr/bin/time -v) of each run.
#   scripts/bench-sync.sh [N...]   (default 10000 50000 100000; FLUSH="0 1" by default;
#                                   needs root, installs packages like the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("${@:-10000 50000 100000}")
read -r -a SIZES <<< "${SIZES[*]}"
read -r -a FLUSH <<< "${FLUSH:-0 1}"
bash scripts/install-test-deps.sh
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/mailcow-ldap-auth
# shellcheck source=examples/lib/servers.sh
. examples/lib/servers.sh

ROOT=$(mktemp -d /tmp/mla-bench-sync.XXXXXX)
trap 'srv_stop "$ROOT/slapd" 2>/dev/null; srv_stop "$ROOT/mariadb" 2>/dev/null; rm -rf "$ROOT"' EXIT

# StaffUI as in tests/fixtures/golden-provision-bob.json (tags, quota, rate limit, pop3 off);
# Other: a second template for the last third of the users.
TEMPLATE=$(python3 -c 'import json; print(json.load(open("tests/fixtures/golden-provision-bob.json"))["template"]["attributes_text"])')
OTHER='{"quota":"1024","tags":["other"],"active":"1"}'

# measure LABEL N FLUSH ARGS... : one sync run, wall time and peak RSS
measure() {
  local label=$1 n=$2 flush=$3
  shift 3
  /usr/bin/time -v -o "$ROOT/time.txt" "$BIN" --config "$ROOT/config.yml" sync --force \
    --state-dir "$ROOT/state" --json "$@" > "$ROOT/summary.json" 2> "$ROOT/sync.err" ||
    { cat "$ROOT/sync.err" >&2; exit 1; }
  python3 - "$label" "$n" "$flush" "$ROOT/time.txt" "$ROOT/summary.json" <<'PY'
import json, re, sys
label, n, flush, time_txt, summary = sys.argv[1:]
t = open(time_txt).read()
wall = re.search(r"Elapsed \(wall clock\) time.*: (.*)", t).group(1)
parts = [float(p) for p in wall.split(":")]
secs = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) / 1024
s = json.load(open(summary))
counts = " ".join(f"{k}={s[k]}" for k in ("created", "reapplied", "unchanged", "failed"))
print(f"| {int(n):>7,} | {flush} | {label:<34} | {secs:8.1f} s | {rss:6.1f} MB | {counts} |", flush=True)
PY
}

echo "|   users | flush | run                                |     wall |  peak RSS | counts |"
echo "|---|---|---|---|---|---|"
for n in "${SIZES[@]}"; do
  for flush in "${FLUSH[@]}"; do
    srv_stop "$ROOT/slapd" 2>/dev/null || true
    srv_stop "$ROOT/mariadb" 2>/dev/null || true
    rm -rf "$ROOT/slapd" "$ROOT/mariadb" "$ROOT/state"
    mkdir -p "$ROOT/slapd" "$ROOT/mariadb"
    # the example directory's base entries and service account, then n users (slapadd, offline)
    python3 - "$n" > "$ROOT/directory.ldif" <<'PY'
import sys
n = int(sys.argv[1])
base = open("examples/directory.ldif").read().split("\ndn: uid=")[0]
out = [base.rstrip("\n"), ""]
for i in range(1, n + 1):
    kind = "other" if i % 3 == 0 else "staff"
    out.append(f"dn: uid=u{i},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\n"
               f"uid: u{i}\ncn: User {i}\nsn: User\ndisplayName: User {i}\n"
               f"mail: u{i}@example.org\nemployeeType: {kind}\n")
print("\n".join(out))
PY
    srv_start_slapd "$ROOT/slapd" "$ROOT/directory.ldif"
    srv_start_mariadb "$ROOT/mariadb"
    srv_mysql "$ROOT/mariadb" -e "SET GLOBAL innodb_flush_log_at_trx_commit = $flush;
      SET GLOBAL innodb_buffer_pool_size = 268435456;
      CREATE DATABASE mailcow; CREATE USER 'mailcow'@'%' IDENTIFIED BY 'pw';
      GRANT ALL ON mailcow.* TO 'mailcow'@'%';"
    srv_mysql "$ROOT/mariadb" mailcow < tests/fixtures/mailcow-schema.sql
    srv_mysql "$ROOT/mariadb" mailcow -e "
      INSERT INTO domain (domain, description, aliases, mailboxes, defquota, maxquota, quota, active)
        VALUES ('example.org', 'bench', 400, $((n + 10)), 3072, 10240, 2000000000, 1);
      INSERT INTO templates (template, type, attributes) VALUES ('StaffUI', 'mailbox', '$TEMPLATE');
      INSERT INTO templates (template, type, attributes) VALUES ('Other', 'mailbox', '$OTHER');"
    cat > "$ROOT/config.yml" <<YML
ldap:
  hosts: [127.0.0.1]
  port: $SLAPD_PORT
  base_dn: ou=people,dc=example,dc=org
  bind_dn: cn=mailcow,ou=services,dc=example,dc=org
  bind_password: mailcowsvc
  filter: "(objectClass=inetOrgPerson)"
  attribute_field: employeeType
attribute_mapping:
  - { attribute: staff, template: StaffUI }
  - { attribute: other, template: Other }
database: { host: 127.0.0.1, port: $MARIADB_PORT, name: mailcow, user: mailcow, password: pw }
dovecot: { userdb_fields: { uid: "5000", gid: "5000", home: "/var/vmail/{domain}/{local_part}" } }
log: { syslog: false, stderr: errors }
sync: { import_users: true, periodic_full_sync: true }
YML
    chmod 600 "$ROOT/config.yml"
    measure "first import" "$n" "$flush"
    measure "full sync, nothing changed" "$n" "$flush"
    # a changed StaffUI (one more tag): re-applied to the 2/3 of the users mapped to it
    srv_mysql "$ROOT/mariadb" mailcow -e "UPDATE templates
      SET attributes = JSON_SET(attributes, '$.tags', JSON_ARRAY('staff', 'bench'))
      WHERE template = 'StaffUI'"
    measure "template changed for 2/3" "$n" "$flush"
  done
done
