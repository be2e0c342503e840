# shellcheck shell=bash
# Throwaway slapd, MariaDB and Dovecot instances for examples/demo.sh and the benchmarks
# (source this file).
# Every server lives in a directory under one root (mode 0755, so Dovecot's auth process,
# which runs as "dovecot", can reach the helper binary and its config), listens on a
# loopback port picked at start, and runs in its own process group (setsid), so stopping
# it also stops every child it left behind. Needs root (Dovecot drops privileges).
#
#   srv_free_port                          -> prints a free TCP port on 127.0.0.1
#   srv_start_slapd DIR LDIF [PORT]        -> SLAPD_PORT SLAPD_PID (suffix dc=example,dc=org)
#   srv_start_mariadb DIR                  -> MARIADB_PORT MARIADB_PID MARIADB_SOCKET
#   srv_mysql DIR [mariadb args...]        -> the mariadb client as root on that instance
#   srv_start_dovecot DIR BIN CONFIG SNIPPET [SCRIPT] -> IMAP_PORT POP3_PORT SIEVE_PORT DOVECOT_PID
#   srv_start_dovecot24 ROOT DIR BIN CONFIG SNIPPET SCRIPT -> IMAP_PORT POP3_PORT DOVECOT_PID
#   srv_stop DIR                           -> stops the server whose pid is in DIR/pid
#
# The Dovecot passdb/userdb blocks are a shipped contrib/dovecot/ snippet (SNIPPET) with only
# the paths of the binary, its config and the Lua script replaced.

SRV_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# where the snippets expect the installed files
SRV_INSTALLED_BIN=/usr/local/bin/mailcow-ldap-auth
SRV_INSTALLED_CONFIG=/etc/mailcow-ldap-auth/config.yml
SRV_INSTALLED_SCRIPT=/usr/local/share/mailcow-ldap-auth/mailcow-ldap-auth.lua
SRV_SUFFIX="dc=example,dc=org"
SRV_ROOTDN="cn=admin,dc=example,dc=org"

srv_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# srv_wait_for DESCRIPTION LOGFILE COMMAND... : retries COMMAND for up to 10 s.
srv_wait_for() {
  local what=$1 log=$2 i
  shift 2
  for i in $(seq 200); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.05
  done
  echo "servers.sh: $what did not come up; last lines of $log:" >&2
  tail -n 20 "$log" >&2 || true
  return 1
}

srv_tcp_open() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------------------------- slapd
srv_start_slapd() {
  local dir=$1 ldif=$2 port=${3:-}
  mkdir -p "$dir/db"
  [ -n "$port" ] || port=$(srv_free_port)
  if [ ! -f "$dir/slapd.conf" ]; then
    local rootpw
    rootpw=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    printf %s "$rootpw" > "$dir/rootpw"   # ldapwhoami -y uses the whole file, no newline
    chmod 600 "$dir/rootpw"
    cat > "$dir/slapd.conf" <<EOF
include         /etc/ldap/schema/core.schema
include         /etc/ldap/schema/cosine.schema
include         /etc/ldap/schema/inetorgperson.schema
include         /etc/ldap/schema/nis.schema
pidfile         $dir/slapd.pid
argsfile        $dir/slapd.args
modulepath      /usr/lib/ldap
moduleload      back_mdb
loglevel        none
database        mdb
maxsize         1073741824
suffix          "$SRV_SUFFIX"
rootdn          "$SRV_ROOTDN"
rootpw          $rootpw
directory       $dir/db
dbnosync
index           objectClass eq
index           uid,mail,cn eq
limits users size.prtotal=unlimited
access to attrs=userPassword
        by self write
        by anonymous auth
        by * none
access to *
        by users read
        by * none
EOF
    slapadd -q -f "$dir/slapd.conf" -l "$ldif" > "$dir/slapadd.log" 2>&1 ||
      { cat "$dir/slapadd.log" >&2; return 1; }
  fi
  setsid slapd -d none -h "ldap://127.0.0.1:$port/" -f "$dir/slapd.conf" >> "$dir/slapd.log" 2>&1 &
  SLAPD_PID=$!
  SLAPD_PORT=$port
  echo "$SLAPD_PID" > "$dir/pid"
  echo "$port" > "$dir/port"
  # identity check: only our instance knows this rootpw
  srv_wait_for "slapd on port $port" "$dir/slapd.log" \
    ldapwhoami -x -H "ldap://127.0.0.1:$port" -D "$SRV_ROOTDN" -y "$dir/rootpw"
}

# -------------------------------------------------------------------------------- MariaDB
srv_start_mariadb() {
  local dir=$1 port
  port=$(srv_free_port)
  mkdir -p "$dir/data" "$dir/tmp"
  local user_opt=()
  [ "$(id -u)" = 0 ] && user_opt=(--user=root)
  # --tmpdir per instance: mariadbd deletes every #sql* file in its tmpdir at start
  local opts=(--no-defaults --datadir="$dir/data" --tmpdir="$dir/tmp" --innodb-log-file-size=8M
              --innodb-buffer-pool-size=32M "${user_opt[@]}")
  mariadb-install-db "${opts[@]}" --auth-root-authentication-method=normal --skip-test-db \
    --skip-name-resolve --force > "$dir/install.log" 2>&1 || { cat "$dir/install.log" >&2; return 1; }
  MARIADB_SOCKET=$dir/mysqld.sock
  setsid mariadbd "${opts[@]}" --socket="$MARIADB_SOCKET" --pid-file="$dir/mariadbd.pid" \
    --log-error="$dir/error.log" --port="$port" --bind-address=127.0.0.1 --skip-name-resolve \
    --skip-log-bin --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 \
    --innodb-buffer-pool-load-at-startup=0 --innodb-buffer-pool-dump-at-shutdown=0 \
    > "$dir/mariadbd.out" 2>&1 &
  MARIADB_PID=$!
  MARIADB_PORT=$port
  echo "$MARIADB_PID" > "$dir/pid"
  echo "$port" > "$dir/port"
  srv_wait_for "MariaDB on port $port" "$dir/error.log" \
    mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P"$port" -uroot -e "SELECT @@datadir"
}

srv_mysql() {
  local dir=$1
  shift
  mariadb --no-defaults --socket="$dir/mysqld.sock" -uroot "$@"
}

# -------------------------------------------------------------------------------- Dovecot
# srv_start_dovecot DIR BIN CONFIG SNIPPET [SCRIPT]: the system's Dovecot 2.3 (SCRIPT: the Lua
# script a Lua snippet names).
srv_start_dovecot() {
  local dir=$1 bin=$2 config=$3 snippet=$4 script=${5:-}
  mkdir -p "$dir/run" "$dir/state" "$dir/conf.d"
  IMAP_PORT=$(srv_free_port)
  POP3_PORT=$(srv_free_port)
  SIEVE_PORT=$(srv_free_port)
  srv_snippet "$snippet" "$bin" "$config" "$script" > "$dir/conf.d/10-auth-mailcow-ldap.conf"
  cat > "$dir/dovecot.conf" <<EOF
# Throwaway Dovecot for the mailcow-ldap-auth demo. Never reads /etc/dovecot.
instance_name = mailcow-ldap-demo-$$
base_dir = $dir/run
state_dir = $dir/state
protocols = imap pop3 sieve
listen = 127.0.0.1
log_path = $dir/dovecot.log
info_log_path = $dir/dovecot.log
auth_verbose = yes
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# demo only: answer wrong passwords at once (production keeps the 2 s default)
auth_failure_delay = 0
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 8
first_valid_gid = 8
mail_location = maildir:~/Maildir

!include conf.d/10-auth-mailcow-ldap.conf

service imap-login {
  inet_listener imap {
    port = $IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    port = $POP3_PORT
  }
  inet_listener pop3s {
    port = 0
  }
}
service managesieve-login {
  inet_listener sieve {
    port = $SIEVE_PORT
  }
}
# demo only: no per-IP delay after failed logins
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
plugin {
  sieve = file:~/sieve;active=~/.dovecot.sieve
}
EOF
  srv_run_dovecot "$dir" dovecot -c "$dir/dovecot.conf" -F
}

# srv_start_dovecot24 ROOT DIR BIN CONFIG SNIPPET SCRIPT: Dovecot 2.4.1 inside the trixie root
# ROOT (scripts/dovecot24-root.sh), chrooted; DIR, BIN, CONFIG and the Lua SCRIPT are host
# paths inside ROOT. Settings around the snippet: tests/fixtures/dovecot24.conf.
srv_start_dovecot24() {
  local root=$1 dir=$2 bin=$3 config=$4 snippet=$5 script=$6 in mail_uid
  in=${dir#"$root"}
  mkdir -p "$dir/run" "$dir/state" "$dir/conf.d"
  IMAP_PORT=$(srv_free_port)
  POP3_PORT=$(srv_free_port)
  mail_uid=$(chroot "$root" id -u mail)
  srv_snippet "$snippet" "${bin#"$root"}" "${config#"$root"}" "${script#"$root"}" \
    > "$dir/conf.d/10-auth-mailcow-ldap.conf"
  sed -e "s#@DIR@#$in#g" -e "s#@INSTANCE@#mailcow-ldap-demo24-$$#" -e "s#@MAIL_UID@#$mail_uid#" \
      -e "s#@GREETING@#Dovecot 2.4 ready.#" -e "s#@IMAP_PORT@#$IMAP_PORT#" -e "s#@POP3_PORT@#$POP3_PORT#" \
      "$SRV_REPO/tests/fixtures/dovecot24.conf" > "$dir/dovecot.conf"
  srv_run_dovecot "$dir" chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /usr/sbin/dovecot -F -c "$in/dovecot.conf"
}

# srv_snippet SNIPPET BIN CONFIG [SCRIPT]: the shipped snippet with the installed paths of the
# binary, its config and the Lua script replaced.
srv_snippet() {
  sed -e "s#$SRV_INSTALLED_BIN#$2#g" -e "s#$SRV_INSTALLED_CONFIG#$3#g" \
      ${4:+-e "s#$SRV_INSTALLED_SCRIPT#$4#g"} "$1"
}

# srv_run_dovecot DIR COMMAND...: starts a Dovecot master in the foreground of its own session.
srv_run_dovecot() {
  local dir=$1
  shift
  setsid "$@" > "$dir/master.out" 2>&1 &
  DOVECOT_PID=$!
  echo "$DOVECOT_PID" > "$dir/pid"
  srv_wait_for "Dovecot (IMAP port $IMAP_PORT)" "$dir/dovecot.log" srv_tcp_open "$IMAP_PORT"
}

# ------------------------------------------------------------------------------- stopping
# srv_alive PID: the process exists and is not a zombie.
srv_alive() {
  local s
  read -r s 2>/dev/null < "/proc/$1/stat" || return 1
  s=${s##*) }
  [ "${s%% *}" != Z ]
}

# srv_group_alive PGID: some live (non-zombie) process is in that process group.
srv_group_alive() {
  local pgid=$1 f s state pgrp
  for f in /proc/[0-9]*/stat; do
    read -r s 2>/dev/null < "$f" || continue
    s=${s##*) }
    # fields after "(comm) ": state ppid pgrp ...
    read -r state _ pgrp _ <<< "$s"
    [ "$state" != Z ] && [ "$pgrp" = "$pgid" ] && return 0
  done
  return 1
}

# srv_stop DIR: SIGTERM to the server (Dovecot: its master first, so it shuts down its
# children), then to its whole process group; SIGKILL whatever is left after 5 s.
srv_stop() {
  local dir=$1 pid i
  [ -f "$dir/pid" ] || return 0
  pid=$(cat "$dir/pid")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do
    srv_alive "$pid" || break
    sleep 0.1
  done
  kill -TERM -- "-$pid" 2>/dev/null || true
  for i in $(seq 50); do
    srv_group_alive "$pid" || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true   # reap it when it is our child
  rm -f "$dir/pid"
}
