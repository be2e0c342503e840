#!/usr/bin/env bash
# Benchmark: wall time of one checkpassword login (plain LDAP + MariaDB over TCP on loopback),
# process start to exit, the way Dovecot runs it:
#   - first login: a different LDAP user every run, so every run provisions a mailbox from a
#     template with all its side rows;
#   - existing user: the same users again (mailbox exists, template unchanged: nothing written),
#     and with a config that maps no template (no template read at all);
#   - existing user with sasl_log off (the cost of the sasl_log row every login writes);
#   - existing user logging in with an app password ({BLF-CRYPT}, bcrypt cost 10 as PHP's
#     password_hash() makes it; no LDAP traffic);
#   - wrong password (after the app password case: one bcrypt check before LDAP);
# next to the cost of spawning /bin/true the same way. Prints median and p90 of each.
#   scripts/bench-login.sh [N]   (default 100; needs root, installs packages like the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
WARMUP=5
# shellcheck source=scripts/lib/bench.sh
. scripts/lib/bench.sh
bench_build

ROOT=$(mktemp -d /tmp/mla-bench-first.XXXXXX)
trap 'srv_stop "$ROOT/slapd"; srv_stop "$ROOT/mariadb"; rm -rf "$ROOT"' EXIT
bench_servers "$ROOT" $((N + WARMUP)) 5000 5000 /var/vmail

# The same without a mapped template: the login path before provisioning existed (no template read).
grep -v -e '^attribute_mapping:' -e 'template: StaffUI' "$ROOT/config.yml" > "$ROOT/config-nomap.yml"
# The same without the sasl_log row.
sed 's/^log: { syslog: false, stderr: errors }$/log: { syslog: false, stderr: errors, sasl_log: false }/' \
  "$ROOT/config.yml" > "$ROOT/config-nosasl.yml"
chmod 600 "$ROOT/config-nomap.yml" "$ROOT/config-nosasl.yml"
APP_PW=bench-app-pw-1
APP_HASH=$(doveadm pw -s BLF-CRYPT -r 10 -p "$APP_PW")

python3 - "$BIN" "$ROOT/config.yml" "$BENCH_PW" "$N" "$WARMUP" "$APP_PW" "$APP_HASH" \
  "$ROOT/mariadb" <<'PY'
import os, statistics, subprocess, sys, time
binary, config, password = sys.argv[1:4]
n, warmup = int(sys.argv[4]), int(sys.argv[5])
app_password, app_hash, mariadb_dir = sys.argv[6:9]
env = {"SERVICE": "imap", "TCPREMOTEIP": "127.0.0.1"}
login = [binary, "checkpassword", "--config", config, "/bin/true"]

def run(argv, user, expect=0):
    request = user.encode() + b"\0" + password.encode() + b"\0\0"
    r, w = os.pipe()
    os.write(w, request)              # fits in the pipe buffer; written before the child runs
    os.close(w)
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=[(os.POSIX_SPAWN_DUP2, r, 3)])
    os.close(r)
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != expect:
        sys.exit(f"{argv[0]} for {user} exited {code}, expected {expect}")
    return elapsed * 1000

def stats(t):
    t = sorted(t)
    return statistics.median(t), t[min(len(t) - 1, int(len(t) * 0.9))]

users = [f"fb{i}@example.org" for i in range(1, n + warmup + 1)]
for u in users[:warmup]:          # warm caches (page cache, InnoDB, slapd) with throwaway users
    run(login, u)
base = stats([run(["/bin/true"], "x") for _ in range(n)])
first = stats([run(login, u) for u in users[warmup:]])
existing = stats([run(login, u) for _ in range(3) for u in users[warmup:]])
nomap = [binary, "checkpassword", "--config", config.replace("config.yml", "config-nomap.yml"), "/bin/true"]
unmapped = stats([run(nomap, u) for _ in range(3) for u in users[warmup:]])
nosasl = [binary, "checkpassword", "--config", config.replace("config.yml", "config-nosasl.yml"), "/bin/true"]
no_sasl_log = stats([run(nosasl, u) for _ in range(3) for u in users[warmup:]])
subprocess.run(["mariadb", "--no-defaults", f"--socket={mariadb_dir}/mysqld.sock", "-uroot", "mailcow", "-e",
                "INSERT INTO app_passwd (name, mailbox, domain, password) "
                f"SELECT 'bench', username, domain, '{app_hash}' FROM mailbox"], check=True)
password = app_password
app = stats([run(login, u) for u in users[warmup:]])
password = "wrong-password"
wrong = stats([run(login, u, expect=1) for u in users[warmup:]])
print(f"spawn /bin/true (baseline)               median {base[0]:6.2f} ms   p90 {base[1]:6.2f} ms")
print(f"first login (provisions the mailbox)     median {first[0]:6.2f} ms   p90 {first[1]:6.2f} ms   (n={n} distinct users)")
print(f"existing user, template unchanged        median {existing[0]:6.2f} ms   p90 {existing[1]:6.2f} ms   (n={3 * n})")
print(f"existing user, no template mapped        median {unmapped[0]:6.2f} ms   p90 {unmapped[1]:6.2f} ms   (n={3 * n})")
print(f"existing user, sasl_log off              median {no_sasl_log[0]:6.2f} ms   p90 {no_sasl_log[1]:6.2f} ms   (n={3 * n})")
print(f"app password (bcrypt cost 10, no LDAP)   median {app[0]:6.2f} ms   p90 {app[1]:6.2f} ms")
print(f"wrong password (one app password each)   median {wrong[0]:6.2f} ms   p90 {wrong[1]:6.2f} ms")
PY
