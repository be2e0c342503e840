#!/usr/bin/env bash
# Benchmark: IMAP logins per second through real Dovecots, one run, the same users, slapd and
# MariaDB for all of them:
#   - Dovecot 2.3 (Debian 12), checkpassword   contrib/dovecot/2.3/10-auth-mailcow-ldap.conf
#   - Dovecot 2.3 (Debian 12), Lua             contrib/dovecot/2.3/10-auth-mailcow-ldap-lua.conf
#   - Dovecot 2.4.1 (trixie root), Lua         contrib/dovecot/2.4/10-auth-mailcow-ldap.conf
# Every user logged in once before the measured runs (its mailbox exists), so each login is the
# steady-state path: a new IMAP connection, LOGIN (LDAP bind, the mailbox read, nothing
# written), LOGOUT. Measured with one client (latency) and with 4 clients in parallel
# (throughput), two rounds in turn. Also: what the extra /bin/sh of the Lua script's io.popen
# costs (spawning `sh -c 'exec true'` against spawning `true`).
#   scripts/bench-dovecot.sh [N]   (default 200 logins per measurement; needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
USERS=50
bash scripts/install-test-deps.sh
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/mailcow-ldap-auth
# shellcheck source=examples/lib/servers.sh
. examples/lib/servers.sh
# shellcheck source=scripts/lib/bench-data.sh
. scripts/lib/bench-data.sh
ROOT=$(bash scripts/dovecot24-root.sh)

# Inside the root, so the chrooted Dovecot 2.4 reaches the binary and its config ($IN); the
# host's Dovecot 2.3 uses the same files through $T.
T=$(mktemp -d "$ROOT/srv/mla-bench-dovecot.XXXXXX")
IN=${T#"$ROOT"}
chmod 755 "$T"
trap 'for s in dovecot23 dovecot23lua dovecot24 slapd mariadb; do srv_stop "$T/$s"; done; rm -rf "$T"' EXIT
mkdir -p "$T/bin" "$T/etc" "$T/vmail"
chown 8:8 "$T/vmail"                     # mail, on the host and in the root
install -m 0755 "$BIN" "$T/bin/mailcow-ldap-auth"
install -m 0644 contrib/dovecot/lua/mailcow-ldap-auth.lua "$T/bin/"

bench_servers "$T" "$USERS" mail mail "$T/vmail"
# one config per Dovecot: the homes as each one sees them
for v in 23 24; do
  home=$T/vmail
  [ "$v" = 24 ] && home=$IN/vmail
  sed "s#home: \"$T/vmail/#home: \"$home/#" "$T/config.yml" > "$T/etc/config$v.yml"
done
chown root:"$(id -gn dovecot)" "$T/etc/config23.yml"
chroot "$ROOT" chown root:dovecot "$IN/etc/config24.yml"
chmod 0640 "$T/etc/config23.yml" "$T/etc/config24.yml"

srv_start_dovecot "$T/dovecot23" "$T/bin/mailcow-ldap-auth" "$T/etc/config23.yml" \
  contrib/dovecot/2.3/10-auth-mailcow-ldap.conf
PORT_CP=$IMAP_PORT
srv_start_dovecot "$T/dovecot23lua" "$T/bin/mailcow-ldap-auth" "$T/etc/config23.yml" \
  contrib/dovecot/2.3/10-auth-mailcow-ldap-lua.conf "$T/bin/mailcow-ldap-auth.lua"
PORT_LUA23=$IMAP_PORT
srv_start_dovecot24 "$ROOT" "$T/dovecot24" "$T/bin/mailcow-ldap-auth" "$T/etc/config24.yml" \
  contrib/dovecot/2.4/10-auth-mailcow-ldap.conf "$T/bin/mailcow-ldap-auth.lua"
PORT_LUA24=$IMAP_PORT
echo "Dovecot $(dovecot --version | cut -d' ' -f1) and $(chroot "$ROOT" dovecot --version | cut -d' ' -f1);" \
  "$USERS users, $N logins per measurement, $(nproc) cores"

python3 - "$BENCH_PW" "$USERS" "$N" "$PORT_CP" "$PORT_LUA23" "$PORT_LUA24" <<'PY'
import imaplib, os, statistics, sys, time
from concurrent.futures import ThreadPoolExecutor
password, users, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ports = dict(zip(["2.3 checkpassword", "2.3 Lua", "2.4.1 Lua"], map(int, sys.argv[4:7])))
names = [f"fb{i}@example.org" for i in range(1, users + 1)]

def login(port, user):
    start = time.perf_counter()
    c = imaplib.IMAP4("127.0.0.1", port)
    typ, _ = c.login(user, password)
    c.logout()
    if typ != "OK":
        sys.exit(f"login {user} on {port}: {typ}")
    return time.perf_counter() - start

def run(port, clients):
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        times = list(pool.map(lambda i: login(port, names[i % users]), range(n)))
    return n / (time.perf_counter() - start), statistics.median(times) * 1000

for name, port in ports.items():      # provision every mailbox (first logins), warm caches
    for u in names:
        login(port, u)
results = {name: [] for name in ports}
for _round in range(2):
    for name, port in ports.items():
        results[name].append((run(port, 1), run(port, 4)))
print(f"{'IMAP LOGIN+LOGOUT, existing mailbox':38} {'1 client':>22} {'4 clients':>12}")
for name, rounds in results.items():
    for (rate1, med1), (rate4, _) in rounds:
        print(f"Dovecot {name:30} {rate1:7.1f}/s ({med1:5.1f} ms) {rate4:9.1f}/s")

def spawn(argv, k=300):
    t = []
    for _ in range(k):
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, {})
        os.waitpid(pid, 0)
        t.append(time.perf_counter() - start)
    return statistics.median(t) * 1000
true, sh = spawn(["/bin/true"]), spawn(["/bin/sh", "-c", "exec /bin/true"])
print(f"spawn /bin/true {true:.2f} ms; /bin/sh -c 'exec /bin/true' {sh:.2f} ms: the shell adds {sh - true:.2f} ms")
PY
