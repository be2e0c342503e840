#!/usr/bin/env bash
# Benchmark of `serve` (issue #10): one Dovecot 2.3 each, the same slapd, MariaDB and users, no
# auth cache, one run:
#   (a) serve via the Lua script's url transport   contrib/dovecot/2.3/10-auth-mailcow-ldap-lua.conf
#   (b) Dovecot's native passdb ldap, auth_bind = yes, static userdb (package dovecot-ldap)
#   (c) checkpassword                              contrib/dovecot/2.3/10-auth-mailcow-ldap.conf
#   (a') as (a), to serve's Unix socket (url = unix:PATH; a second serve on the same config)
#   (d) a Lua passdb that answers OK at once in an auth-worker: the floor of any Lua route
#   (e) as (a), to a stand-in for serve that answers at once (scripts/lib/instant_answer.rs): the
#       Lua route itself, before serve, LDAP or the database do anything; its CPU is in "serve"
# Every mailbox exists before the measured runs (first logins through serve). Measured:
# PLAIN authentications/s on Dovecot's auth-client socket and IMAP LOGIN+LOGOUT/s, each with
# CLIENTS clients in parallel (separate processes, one auth-client connection each, as login
# processes keep one); then POST /auth straight to serve (p50/p99, one keep-alive client), and
# serve's RSS before and after 100k requests. Prints figures; asserts nothing about speed.
#   scripts/bench-serve.sh [N] [CLIENTS]   (default 4000 authentications per measurement, 8
#   clients; needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-4000}
CLIENTS=${2:-8}
USERS=40
RSS_REQUESTS=${RSS_REQUESTS:-100000}
# shellcheck source=scripts/lib/bench.sh
. scripts/lib/bench.sh
bench_build

T=$(mktemp -d /tmp/mla-bench-serve.XXXXXX)
chmod 755 "$T"
trap 'kill $SERVE_PID $SERVE_UNIX_PID $INSTANT_PID 2>/dev/null; wait $SERVE_PID $SERVE_UNIX_PID $INSTANT_PID 2>/dev/null || true; for s in $T/url $T/unix $T/ldap $T/cp $T/floor $T/instant $T/slapd $T/mariadb; do srv_stop "$s"; done; rm -rf "$T"' EXIT
SERVE_PID=
SERVE_UNIX_PID=
INSTANT_PID=
mkdir -p "$T/bin" "$T/etc" "$T/vmail"
chown mail:mail "$T/vmail"
install -m 0755 "$BIN" "$T/bin/mailcow-ldap-auth"
install -m 0644 contrib/dovecot/lua/mailcow-ldap-auth.lua "$T/bin/"
# numeric: Dovecot resolves a user or group name on every login
bench_servers "$T" "$USERS" "$(id -u mail)" "$(id -g mail)" "$T/vmail"

# serve, on the benchmark's config plus a serve: section
SERVE_PORT=$(srv_free_port)
head -c 24 /dev/urandom | base64 > "$T/etc/token"
chown root:dovecot "$T/etc/token"
chmod 0640 "$T/etc/token"
cp "$T/config.yml" "$T/etc/config.yml"
printf 'serve: { listen: "127.0.0.1:%s", token_file: "%s", workers: 32, ldap_search_connections: 8, ldap_bind_connections: 32, database_connections: 32 }\n' \
  "$SERVE_PORT" "$T/etc/token" >> "$T/etc/config.yml"
chown root:dovecot "$T/etc/config.yml"
chmod 0640 "$T/etc/config.yml"
"$T/bin/mailcow-ldap-auth" --config "$T/etc/config.yml" serve 2> "$T/serve.log" &
SERVE_PID=$!
srv_wait_for "serve (port $SERVE_PORT)" "$T/serve.log" srv_tcp_open "$SERVE_PORT"

# (a) the shipped Lua snippet switched to url mode, as its comment says
sed -e 's/^import_environment = /#&/' \
    -e "s#^\#\(import_environment = .*MAILCOW_LDAP_AUTH_URL=\)http://127.0.0.1:9077/\(.*MAILCOW_LDAP_AUTH_TOKEN_FILE=\)/etc/mailcow-ldap-auth/token#\1http://127.0.0.1:$SERVE_PORT/\2$T/etc/token#" \
    contrib/dovecot/2.3/10-auth-mailcow-ldap-lua.conf > "$T/url.conf"
grep -q "^import_environment = .*MAILCOW_LDAP_AUTH_URL=http://127.0.0.1:$SERVE_PORT/" "$T/url.conf"
srv_start_dovecot "$T/url" "$T/bin/mailcow-ldap-auth" "$T/etc/config.yml" "$T/url.conf" \
  "$T/bin/mailcow-ldap-auth.lua"
PORT_URL=$IMAP_PORT

# (a') the same to a second serve on a Unix socket
sed -e "s#^serve: { listen: \"127.0.0.1:$SERVE_PORT\"#serve: { listen: \"$T/serve.sock\"#" \
  "$T/etc/config.yml" > "$T/etc/config-unix.yml"
chown root:dovecot "$T/etc/config-unix.yml"
chmod 0640 "$T/etc/config-unix.yml"
"$T/bin/mailcow-ldap-auth" --config "$T/etc/config-unix.yml" serve 2> "$T/serve-unix.log" &
SERVE_UNIX_PID=$!
srv_wait_for "serve ($T/serve.sock)" "$T/serve-unix.log" test -S "$T/serve.sock"
sed -e "s#MAILCOW_LDAP_AUTH_URL=http://127.0.0.1:$SERVE_PORT/#MAILCOW_LDAP_AUTH_URL=unix:$T/serve.sock#" \
  "$T/url.conf" > "$T/unix.conf"
grep -q "MAILCOW_LDAP_AUTH_URL=unix:" "$T/unix.conf"
srv_start_dovecot "$T/unix" "$T/bin/mailcow-ldap-auth" "$T/etc/config.yml" "$T/unix.conf" \
  "$T/bin/mailcow-ldap-auth.lua"
PORT_UNIX=$IMAP_PORT

# (b) Dovecot's own LDAP passdb: search as the service account, bind as the user
cat > "$T/dovecot-ldap.conf.ext" <<CONF
hosts = 127.0.0.1:$SLAPD_PORT
dn = cn=mailcow,ou=services,dc=example,dc=org
dnpass = mailcowsvc
auth_bind = yes
base = ou=people,dc=example,dc=org
scope = subtree
pass_filter = (&(objectClass=inetOrgPerson)(mail=%u))
pass_attrs = mail=user
CONF
# the userdb of (b) and (d): no lookup, as neither passdb hands fields on
STATIC_USERDB="userdb {
  driver = static
  args = uid=mail gid=mail home=$T/vmail/%d/%n
}"
cat > "$T/ldap.conf" <<CONF
passdb {
  driver = ldap
  args = $T/dovecot-ldap.conf.ext
}
$STATIC_USERDB
CONF
srv_start_dovecot "$T/ldap" "$T/bin/mailcow-ldap-auth" "$T/etc/config.yml" "$T/ldap.conf"
PORT_LDAP=$IMAP_PORT

# (c) checkpassword
srv_start_dovecot "$T/cp" "$T/bin/mailcow-ldap-auth" "$T/etc/config.yml" \
  contrib/dovecot/2.3/10-auth-mailcow-ldap.conf
PORT_CP=$IMAP_PORT

# (d) the floor: a Lua passdb (auth-worker, as the snippet's) that answers OK at once
cat > "$T/bin/ok.lua" <<'LUA'
function auth_password_verify(req, password)
  return dovecot.auth.PASSDB_RESULT_OK, ""
end
LUA
chmod 0644 "$T/bin/ok.lua"
sed -e "s#file=[^ ]*/mailcow-ldap-auth.lua#file=$T/bin/ok.lua#" -e '/^passdb {/,/^}/!d' \
  "$T/url.conf" > "$T/floor.conf"
grep -q "ok.lua blocking=yes" "$T/floor.conf"
echo "$STATIC_USERDB" >> "$T/floor.conf"
srv_start_dovecot "$T/floor" "$T/bin/mailcow-ldap-auth" "$T/etc/config.yml" "$T/floor.conf"
PORT_FLOOR=$IMAP_PORT

# (e) the Lua route to a stand-in that answers at once, with the fields serve's answer carries
rustc -O --edition 2021 -o "$T/bin/instant-answer" scripts/lib/instant_answer.rs
INSTANT_PORT=$(srv_free_port)
"$T/bin/instant-answer" "$INSTANT_PORT" "$(printf 'OK\nuserdb_home=%s\nuserdb_uid=%s\nuserdb_gid=%s\nuserdb_quota_rule=*:bytes=1073741824\n' \
  "$T/vmail/example.org/fb1" "$(id -u mail)" "$(id -g mail)")" &
INSTANT_PID=$!
srv_wait_for "instant-answer (port $INSTANT_PORT)" /dev/null srv_tcp_open "$INSTANT_PORT"
sed -e "s#MAILCOW_LDAP_AUTH_URL=http://127.0.0.1:$SERVE_PORT/#MAILCOW_LDAP_AUTH_URL=http://127.0.0.1:$INSTANT_PORT/#" \
  "$T/url.conf" > "$T/instant.conf"
grep -q "MAILCOW_LDAP_AUTH_URL=http://127.0.0.1:$INSTANT_PORT/" "$T/instant.conf"
srv_start_dovecot "$T/instant" "$T/bin/mailcow-ldap-auth" "$T/etc/config.yml" "$T/instant.conf" \
  "$T/bin/mailcow-ldap-auth.lua"
PORT_INSTANT=$IMAP_PORT

echo "Dovecot $(dovecot --version | cut -d' ' -f1); $USERS users; $N per measurement; $CLIENTS clients;" \
  "$(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"

SERVE_UNIX_PID=$SERVE_UNIX_PID INSTANT_PID=$INSTANT_PID python3 - "$BENCH_PW" "$USERS" "$N" "$CLIENTS" "$SERVE_PORT" "$(cat "$T/etc/token")" "$SERVE_PID" \
  "$RSS_REQUESTS" "$(cat "$T/slapd/pid")" "$(cat "$T/mariadb/pid")" \
  "a) serve via Lua url" "$PORT_URL" "$T/url/run/auth-client" "$(cat "$T/url/pid")" \
  "b) native passdb ldap" "$PORT_LDAP" "$T/ldap/run/auth-client" "$(cat "$T/ldap/pid")" \
  "c) checkpassword" "$PORT_CP" "$T/cp/run/auth-client" "$(cat "$T/cp/pid")" \
  "a') serve via Lua unix:" "$PORT_UNIX" "$T/unix/run/auth-client" "$(cat "$T/unix/pid")" \
  "d) Lua floor (OK at once)" "$PORT_FLOOR" "$T/floor/run/auth-client" "$(cat "$T/floor/pid")" \
  "e) Lua url, instant stand-in" "$PORT_INSTANT" "$T/instant/run/auth-client" "$(cat "$T/instant/pid")" <<'PY'
import base64, http.client, imaplib, json, multiprocessing, os, socket, statistics, sys, time
from concurrent.futures import ProcessPoolExecutor
password, users, n, clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
serve_port, token, serve_pid, rss_requests = int(sys.argv[5]), sys.argv[6], sys.argv[7], int(sys.argv[8])
slapd_pid, mariadb_pid = int(sys.argv[9]), int(sys.argv[10])
kinds = [(sys.argv[i], int(sys.argv[i + 1]), sys.argv[i + 2], int(sys.argv[i + 3]))
         for i in range(11, len(sys.argv), 4)]
serve_unix_pid = int(os.environ["SERVE_UNIX_PID"])
instant_pid = int(os.environ["INSTANT_PID"])
sys.path.insert(0, "scripts/lib")
from benchcpu import cpu

def cpu_all(pgid):
    # the idle ones add ~0
    serve = cpu(pid=int(serve_pid)) + cpu(pid=serve_unix_pid) + cpu(pid=instant_pid)
    return [cpu(pgid=pgid), serve, cpu(pid=slapd_pid), cpu(pid=mariadb_pid)]
names = [f"fb{i}@example.org" for i in range(1, users + 1)]
ROUNDS = 5

def auth_client(path, k, count, ready, results):
    """One auth-client connection (as a login process keeps one), `count` PLAIN AUTHs, sent
    once every client is connected; the requests are encoded beforehand, so that the client's
    own CPU (on the same two cores) weighs as little as it can. Reports (start, end, CPU s)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(f"VERSION\t1\t2\nCPID\t{os.getpid()}\n".encode())
    buf = b""
    while b"DONE\n" not in buf:
        buf += s.recv(4096)
    buf = buf.split(b"DONE\n", 1)[1]
    requests = []
    for i in range(count):
        resp = base64.b64encode(f"\0{names[(k + i * clients) % users]}\0{password}".encode()).decode()
        requests.append(f"AUTH\t{i + 1}\tPLAIN\tservice=imap\tsecured\tresp={resp}\n".encode())
    ready.wait()
    cpu, start = time.process_time(), time.perf_counter()
    for request in requests:
        s.sendall(request)
        while b"\n" not in buf:
            buf += s.recv(4096)
        answer, _, buf = buf.partition(b"\n")
        if not answer.startswith(b"OK\t"):
            results.put(f"auth on {path}: {answer!r}")
            return
    results.put((start, time.perf_counter(), time.process_time() - cpu))
    s.close()

def auth_rate(path, total):
    """AUTHs/s of `clients` auth-client connections together, from the first request sent to
    the last answer, and the clients' CPU ms per AUTH."""
    per = total // clients
    ready, results = multiprocessing.Barrier(clients), multiprocessing.Queue()
    workers = [multiprocessing.Process(target=auth_client, args=(path, k, per, ready, results))
               for k in range(clients)]
    for w in workers:
        w.start()
    done = [results.get() for _ in workers]
    for w in workers:
        w.join()
    for d in done:
        if isinstance(d, str):
            sys.exit(d)
    seconds = max(d[1] for d in done) - min(d[0] for d in done)
    return per * clients / seconds, sum(d[2] for d in done) * 1000 / (per * clients)

def imap_worker(args):
    port, k, count = args
    for i in range(count):
        c = imaplib.IMAP4("127.0.0.1", port)
        typ, _ = c.login(names[(k + i * clients) % users], password)
        c.logout()
        if typ != "OK":
            sys.exit(f"login on {port}: {typ}")

def parallel(worker, target, total):
    per = total // clients
    start = time.perf_counter()
    with ProcessPoolExecutor(clients) as pool:
        list(pool.map(worker, [(target, k, per) for k in range(clients)]))
    return per * clients / (time.perf_counter() - start)

def post(conn, user):
    body = json.dumps({"username": user, "password": password, "service": "imap"})
    conn.request("POST", "/auth", body, {"Authorization": f"Bearer {token}",
                                         "Content-Type": "application/json"})
    answer = json.loads(conn.getresponse().read())
    if answer["result"] != "ok":
        sys.exit(f"POST /auth {user}: {answer}")

def post_worker(args):
    _, k, count = args
    conn = http.client.HTTPConnection("127.0.0.1", serve_port)
    for i in range(count):
        post(conn, names[(k + i * clients) % users])

def rss_kib():
    for line in open(f"/proc/{serve_pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

conn = http.client.HTTPConnection("127.0.0.1", serve_port)
for u in names:                   # first logins: every mailbox exists from here on
    post(conn, u)
for _, port, path, _ in kinds:    # warm up each Dovecot (auth-workers, LDAP connections)
    auth_rate(path, clients * 20)

auth = {name: [] for name, _, _, _ in kinds}
imap = {name: [] for name, _, _, _ in kinds}
cpu_ms = {name: [0.0] * 5 for name, _, _, _ in kinds}
# Per round, the auth-client runs of every kind back to back (so that (a) and (b) of a round
# see the machine in the same state: a shared VM's speed drifts by tens of per cent over a
# minute), then the IMAP runs.
for _round in range(ROUNDS):
    for name, port, path, pgid in kinds:
        before = cpu_all(pgid)
        rate, client_ms = auth_rate(path, n)
        auth[name].append(rate)
        used = [(b - a) * 1000 / n / ROUNDS for a, b in zip(before, cpu_all(pgid))]
        used.append(client_ms / ROUNDS)
        cpu_ms[name] = [x + y for x, y in zip(cpu_ms[name], used)]
    for name, port, path, pgid in kinds:
        imap[name].append(parallel(imap_worker, port, n // 4))
print(f"{'':26} {'auth-client AUTH/s':>24} {'IMAP LOGIN+LOGOUT/s':>24}   ({clients} clients, {ROUNDS} rounds)")
for name, _, _, _ in kinds:
    a = " ".join(f"{r:8.0f}" for r in auth[name])
    i = " ".join(f"{r:8.0f}" for r in imap[name])
    print(f"  {name:24} {a:>24} {i:>24}")
print("CPU ms per authentication (auth-client runs):  Dovecot   serve   slapd  MariaDB   total   (client)")
for name, _, _, _ in kinds:
    d, sv, sl, db, cl = cpu_ms[name]
    print(f"  {name:44} {d:6.3f}  {sv:6.3f}  {sl:6.3f}  {db:6.3f}  {d + sv + sl + db:6.3f}   ({cl:.3f})")
ratio = max(auth[kinds[0][0]]) / max(auth[kinds[1][0]])
print(f"  (a)/(b) authentications/s, best rounds: {ratio:.2f}")
for kind in (kinds[0][0], kinds[3][0]):
    rounds = [a / b for a, b in zip(auth[kind], auth[kinds[1][0]])]
    print(f"  ({kind.split(')')[0]})/(b) round by round: " + ", ".join(f"{r:.2f}" for r in rounds)
          + f"; median {statistics.median(rounds):.2f}")

conn = http.client.HTTPConnection("127.0.0.1", serve_port)   # the first one idled out
times = []
for i in range(2000):
    start = time.perf_counter()
    post(conn, names[i % users])
    times.append(time.perf_counter() - start)
times.sort()
print(f"POST /auth, existing user, one keep-alive client: p50 {times[len(times) // 2] * 1000:.2f} ms,"
      f" p99 {times[int(len(times) * 0.99)] * 1000:.2f} ms")

before = rss_kib()
rates = []
for _part in range(4):
    rates.append(parallel(post_worker, None, rss_requests // 4))
    print(f"  serve RSS after {(_part + 1) * rss_requests // 4} more requests: {rss_kib()} KiB"
          f" ({rates[-1]:.0f} POST /auth/s, {clients} keep-alive clients)")
print(f"serve RSS: {before} KiB before, {rss_kib()} KiB after {rss_requests} requests")
PY
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
