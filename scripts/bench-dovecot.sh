#!/usr/bin/env bash
# Benchmark: IMAP logins per second through real Dovecots, one run, the same users, slapd and
# MariaDB for all of them:
#   - Dovecot 2.3 (Debian 12), checkpassword   contrib/dovecot/2.3/10-auth-mailcow-ldap.conf
#   - Dovecot 2.3 (Debian 12), Lua             contrib/dovecot/2.3/10-auth-mailcow-ldap-lua.conf
#   - Dovecot 2.4.1 (trixie root), Lua         contrib/dovecot/2.4/10-auth-mailcow-ldap.conf
# Every user logged in once before the measured runs (its mailbox exists), so each login is the
# steady-state path: a new IMAP connection, LOGIN (LDAP bind, the mailbox read, nothing
# written), LOGOUT. Then the passdb alone: PLAIN authentications on Dovecot's auth-client
# socket (what a login process sends), without the IMAP process. Each measured with one client
# (latency) and with 4 clients in parallel (throughput), two rounds in turn; for one client
# also the CPU time Dovecot's whole process tree (the program and its shell included, slapd
# and MariaDB not) spent per login, which a busy machine disturbs far less than the rates.
# Also: what the extra /bin/sh of the Lua script's io.popen costs (spawning
# `sh -c 'exec true'` against spawning `true`).
#   scripts/bench-dovecot.sh [N]   (default 200 logins per measurement; needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
USERS=50
# shellcheck source=scripts/lib/bench.sh
. scripts/lib/bench.sh
bench_build
ROOT=$(bash scripts/dovecot24-root.sh)

# The files every Dovecot reads lie inside the root, so the chrooted Dovecot 2.4 reaches them
# ($F as it sees them: $IN); the servers' own directories lie in /tmp (Unix socket paths are
# short there), except Dovecot 2.4's, which must be inside the root too.
T=$(mktemp -d /tmp/mla-bench-dovecot.XXXXXX)
F=$(mktemp -d "$ROOT/srv/mla-bench-dovecot.XXXXXX")
IN=${F#"$ROOT"}
chmod 755 "$T" "$F"
trap 'for s in $T/dovecot23 $T/dovecot23lua $F/dovecot24 $T/slapd $T/mariadb; do srv_stop "$s"; done; rm -rf "$T" "$F"' EXIT
mkdir -p "$F/bin" "$F/etc" "$F/vmail"
chown 8:8 "$F/vmail"                     # mail, on the host and in the root
install -m 0755 "$BIN" "$F/bin/mailcow-ldap-auth"
install -m 0644 contrib/dovecot/lua/mailcow-ldap-auth.lua "$F/bin/"

# numeric: Dovecot resolves a user or group name on every login
bench_servers "$T" "$USERS" "$(id -u mail)" "$(id -g mail)" "$F/vmail"
# one config per Dovecot: the homes as each one sees them
sed "s#home: \"$F/vmail/#home: \"$IN/vmail/#" "$T/config.yml" > "$F/etc/config24.yml"
cp "$T/config.yml" "$F/etc/config23.yml"
chown root:"$(id -gn dovecot)" "$F/etc/config23.yml"
chroot "$ROOT" chown root:dovecot "$IN/etc/config24.yml"
chmod 0640 "$F/etc/config23.yml" "$F/etc/config24.yml"

srv_start_dovecot "$T/dovecot23" "$F/bin/mailcow-ldap-auth" "$F/etc/config23.yml" \
  contrib/dovecot/2.3/10-auth-mailcow-ldap.conf
PORT_CP=$IMAP_PORT
srv_start_dovecot "$T/dovecot23lua" "$F/bin/mailcow-ldap-auth" "$F/etc/config23.yml" \
  contrib/dovecot/2.3/10-auth-mailcow-ldap-lua.conf "$F/bin/mailcow-ldap-auth.lua"
PORT_LUA23=$IMAP_PORT
srv_start_dovecot24 "$ROOT" "$F/dovecot24" "$F/bin/mailcow-ldap-auth" "$F/etc/config24.yml" \
  contrib/dovecot/2.4/10-auth-mailcow-ldap.conf "$F/bin/mailcow-ldap-auth.lua"
PORT_LUA24=$IMAP_PORT
echo "Dovecot $(dovecot --version | cut -d' ' -f1) and $(chroot "$ROOT" dovecot --version | cut -d' ' -f1);" \
  "$USERS users, $N logins per measurement, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$BENCH_PW" "$USERS" "$N" "$PORT_CP" "$PORT_LUA23" "$PORT_LUA24" \
  "$T/dovecot23/run/auth-client" "$T/dovecot23lua/run/auth-client" "$F/dovecot24/run/auth-client" \
  "$(cat "$T/dovecot23/pid")" "$(cat "$T/dovecot23lua/pid")" "$(cat "$F/dovecot24/pid")" <<'PY'
import base64, imaplib, os, socket, statistics, sys, time
from concurrent.futures import ThreadPoolExecutor
password, users, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
kinds = ["2.3 checkpassword", "2.3 Lua", "2.4.1 Lua"]
ports = dict(zip(kinds, map(int, sys.argv[4:7])))
sockets = dict(zip(kinds, sys.argv[7:10]))
groups = dict(zip(kinds, map(int, sys.argv[10:13])))
sys.path.insert(0, "scripts/lib")
from benchcpu import cpu

def group_cpu(pgid):
    """CPU seconds of every process Dovecot's master (own process group) ran so far; slapd
    and MariaDB are not in it."""
    return cpu(pgid=pgid)

def with_cpu(name, measure):
    before = group_cpu(groups[name])
    rate, median = measure()
    return rate, median, (group_cpu(groups[name]) - before) / n * 1000
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

def auth_only(path, clients):
    """The passdb alone: PLAIN authentications on Dovecot's auth-client socket, one
    connection per client (as a login process keeps one), no IMAP process."""
    def worker(k):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        f = s.makefile("rwb", buffering=0)
        f.write(f"VERSION\t1\t2\nCPID\t{os.getpid() * 10 + k}\n".encode())
        while f.readline() != b"DONE\n":
            pass
        times = []
        for i in range(k, n, clients):
            resp = base64.b64encode(f"\0{names[i % users]}\0{password}".encode()).decode()
            start = time.perf_counter()
            f.write(f"AUTH\t{i + 1}\tPLAIN\tservice=imap\tsecured\tresp={resp}\n".encode())
            answer = f.readline()
            times.append(time.perf_counter() - start)
            if not answer.startswith(b"OK\t"):
                sys.exit(f"auth on {path}: {answer!r}")
        s.close()
        return times
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        times = [t for part in pool.map(worker, range(clients)) for t in part]
    return n / (time.perf_counter() - start), statistics.median(times) * 1000

for name, port in ports.items():      # provision every mailbox (first logins), warm caches
    for u in names:
        login(port, u)
imap = {name: [] for name in kinds}
auth = {name: [] for name in kinds}
for _round in range(2):
    for name in kinds:
        imap[name].append((with_cpu(name, lambda: run(ports[name], 1)), run(ports[name], 4)))
        auth[name].append((with_cpu(name, lambda: auth_only(sockets[name], 1)),
                           auth_only(sockets[name], 4)))
for title, results in [("IMAP LOGIN+LOGOUT, existing mailbox", imap),
                       ("auth only (auth-client socket, PLAIN)", auth)]:
    print(f"{title:38} {'1 client (median)':>22} {'CPU/login':>10} {'4 clients':>11}")
    for name, rounds in results.items():
        for (rate1, med1, cpu), (rate4, _) in rounds:
            print(f"  Dovecot {name:28} {rate1:7.1f}/s ({med1:5.1f} ms) {cpu:7.2f} ms {rate4:9.1f}/s")

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
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
