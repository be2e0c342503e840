#!/usr/bin/env bash
# Benchmark: wall time of one checkpassword login of an EXISTING LDAP user (plain LDAP +
# MariaDB over TCP on loopback), process start to exit, the way Dovecot runs it. Prints the
# median and p90 over N runs, next to the cost of spawning /bin/true the same way.
#   scripts/bench-login.sh [N]        (default 300; needs root, installs packages like the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-300}
bash scripts/install-test-deps.sh
cargo build --release --quiet
BIN=$PWD/target/release/mailcow-ldap-auth
# shellcheck source=examples/lib/servers.sh
. examples/lib/servers.sh

ROOT=$(mktemp -d /tmp/mla-bench.XXXXXX)
trap 'srv_stop "$ROOT/slapd"; srv_stop "$ROOT/mariadb"; rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/slapd" "$ROOT/mariadb"
srv_start_slapd "$ROOT/slapd" examples/directory.ldif
srv_start_mariadb "$ROOT/mariadb"
srv_mysql "$ROOT/mariadb" -e "CREATE DATABASE mailcow; CREATE USER 'mailcow'@'%' IDENTIFIED BY 'pw';
  GRANT ALL ON mailcow.* TO 'mailcow'@'%';"
srv_mysql "$ROOT/mariadb" mailcow < tests/fixtures/mailcow-schema.sql

# alice of the example directory (see its header for the passwords), with an existing mailbox.
USER_MAIL=alice@example.org USER_PW=alicepw
SVC_DN=cn=mailcow,ou=services,dc=example,dc=org SVC_PW=mailcowsvc
srv_mysql "$ROOT/mariadb" mailcow -e "
  INSERT INTO domain (domain, description, aliases, mailboxes, defquota, maxquota, quota, active)
    VALUES ('${USER_MAIL#*@}', 'bench', 400, 10, 3072, 10240, 10240, 1);
  INSERT INTO mailbox (username, password, name, quota, local_part, domain, attributes, authsource, active)
    VALUES ('$USER_MAIL', '', 'Bench', 0, '${USER_MAIL%@*}', '${USER_MAIL#*@}',
            '{\"imap_access\":\"1\",\"attribute_hash\":\"\"}', 'ldap', 1);"

cat > "$ROOT/config.yml" <<YML
ldap:
  hosts: [127.0.0.1]
  port: $SLAPD_PORT
  base_dn: dc=example,dc=org
  bind_dn: $SVC_DN
  bind_password: $SVC_PW
  attribute_field: employeeType
database: { host: 127.0.0.1, port: $MARIADB_PORT, name: mailcow, user: mailcow, password: pw }
dovecot: { userdb_fields: { uid: "5000", gid: "5000", home: "/var/vmail/{domain}/{local_part}" } }
log: { syslog: false, stderr: errors }
YML
chmod 600 "$ROOT/config.yml"

python3 - "$BIN" "$ROOT/config.yml" "$USER_MAIL" "$USER_PW" "$N" <<'PY'
import os, statistics, sys, time
binary, config, user, password, n = sys.argv[1:4] + [sys.argv[4], int(sys.argv[5])]
request = user.encode() + b"\0" + password.encode() + b"\0\0"
env = {"SERVICE": "imap", "TCPREMOTEIP": "127.0.0.1"}

def run(argv, expect):
    r, w = os.pipe()
    os.write(w, request)  # fits the pipe buffer: Dovecot's write-then-close, done up front
    os.close(w)
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=[(os.POSIX_SPAWN_DUP2, r, 3)])
    os.close(r)
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != expect:
        sys.exit(f"{argv[0]} exited {code}, expected {expect}")
    return elapsed * 1000

def measure(argv, expect):
    for _ in range(10):
        run(argv, expect)
    t = sorted(run(argv, expect) for _ in range(n))
    return statistics.median(t), t[int(len(t) * 0.9)]

login = [binary, "checkpassword", "--config", config, "/bin/true"]
base = measure(["/bin/true"], 0)
ok = measure(login, 0)
request = user.encode() + b"\0wrong-password\0\0"
wrong = measure(login, 1)
print(f"spawn /bin/true (baseline)          median {base[0]:6.2f} ms   p90 {base[1]:6.2f} ms")
print(f"login existing user, plain LDAP     median {ok[0]:6.2f} ms   p90 {ok[1]:6.2f} ms   (n={n})")
print(f"wrong password                      median {wrong[0]:6.2f} ms   p90 {wrong[1]:6.2f} ms")
PY
