#!/usr/bin/env bash
# mailcow-ldap-auth live demo: one command on a fresh Debian 12 (as root).
#
#   ./examples/demo.sh                 run the demo, then stop everything and remove the temp dir
#   ./examples/demo.sh --keep          leave slapd, MariaDB and Dovecot running afterwards
#   ./examples/demo.sh --dovecot 2.4   the same on Dovecot 2.4.1 through Lua (default: 2.3)
#
# It installs the missing Debian packages (scripts/install-test-deps.sh) and, if there is no
# Rust toolchain, rustup; builds the binary (cargo build --release); starts a throwaway
# slapd (examples/directory.ldif), MariaDB (mailcow's real schema, domain example.org, a
# "Staff" template next to the built-in "Default") and Dovecot on loopback high ports in a
# temp dir, with examples/config.yml as the helper's config; then logs in over IMAP and shows
# each step. Dovecot 2.3 is Debian 12's, with passdb/userdb from
# contrib/dovecot/2.3/10-auth-mailcow-ldap.conf (checkpassword); Dovecot 2.4.1 runs chrooted in the
# cached Debian 13 root of scripts/dovecot24-root.sh, with contrib/dovecot/2.4/ and the Lua
# script. Nothing touches the system's own slapd/MariaDB/Dovecot or /etc.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=examples/lib/servers.sh
source "$REPO/examples/lib/servers.sh"

KEEP=0
DOVECOT=2.3
while [ $# -gt 0 ]; do
  case $1 in
    --keep) KEEP=1 ;;
    --dovecot) DOVECOT=${2:-}; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
case $DOVECOT in 2.3|2.4) ;; *) echo "demo: --dovecot takes 2.3 or 2.4" >&2; exit 2 ;; esac

if [ -t 1 ]; then B=$'\e[1m'; G=$'\e[32m'; R=$'\e[31m'; Y=$'\e[33m'; N=$'\e[0m'; else B= G= R= Y= N=; fi
STEP=0
step() { STEP=$((STEP + 1)); printf '\n%s== %d. %s%s\n' "$B" "$STEP" "$*" "$N"; }
say() { printf '   %s\n' "$*"; }
indent() { sed 's/^/     | /'; }
die() { printf '%sdemo: %s%s\n' "$R" "$*" "$N" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (Dovecot needs it to switch to its dovecot/mail users): sudo $0 $*"

# --------------------------------------------------------------------------- prerequisites
step "Install what is missing (slapd, MariaDB, Dovecot 2.3, a Dovecot 2.4 root, Postfix, python3, build tools)"
bash "$REPO/scripts/install-test-deps.sh"
# ROOT: where Dovecot's files live ("" = the host); in_root runs a command there.
ROOT=
if [ "$DOVECOT" = 2.4 ]; then
  ROOT=$(bash "$REPO/scripts/dovecot24-root.sh")
  in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
else
  in_root() { "$@"; }
  dovecot --version | grep -q '^2\.3\.' ||
    die "Dovecot $(dovecot --version) found; the checkpassword driver exists only in Dovecot 2.3 (Debian 12)"
fi
say "packages: ok ($(in_root dovecot --version | cut -d' ' -f1) dovecot${ROOT:+ in $ROOT}, $(slapd -VV 2>&1 | grep -o 'slapd [0-9.]*' | head -1))"

ensure_rust() {
  [ -x "$HOME/.cargo/bin/cargo" ] && PATH="$HOME/.cargo/bin:$PATH"
  local v
  if v=$(cargo --version 2>/dev/null); then
    # edition 2024 needs Rust 1.85 or later (Debian 12's own cargo is too old)
    if python3 -c 'import sys; v=tuple(map(int, sys.argv[1].split()[1].split("-")[0].split(".")[:2])); sys.exit(v < (1, 85))' "$v"; then
      say "rust: $v"
      return
    fi
    command -v rustup >/dev/null ||
      die "$v is too old (need 1.85+); install rustup (https://rustup.rs) or remove Debian's cargo/rustc"
    say "rust: $v is too old, running: rustup update stable"
    rustup update stable
    return
  fi
  say "rust: no toolchain found; installing rustup (https://rustup.rs) into $HOME/.cargo"
  command -v curl >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl ca-certificates >/dev/null
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  PATH="$HOME/.cargo/bin:$PATH"
}
ensure_rust

step "Build the binary (cargo build --release)"
cd "$REPO"
BIN_BUILT=$(cargo build --release --message-format=json-render-diagnostics |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "mailcow-ldap-auth":
        print(m["executable"])')
[ -x "$BIN_BUILT" ] || die "cargo build did not produce the mailcow-ldap-auth binary"
say "built: $BIN_BUILT"

# --------------------------------------------------------------------------- servers
# Inside the root for Dovecot 2.4 (the chrooted Dovecot sees it as $IN), else in /tmp.
T=$(mktemp -d "${ROOT:-/tmp}${ROOT:+/srv}/mailcow-ldap-demo.XXXXXX")
IN=${T#"$ROOT"}
chmod 755 "$T"      # Dovecot's auth process (user dovecot) must reach the binary and config
mkdir -p "$T/bin" "$T/etc" "$T/slapd" "$T/mariadb" "$T/dovecot" "$T/vmail"
in_root chown mail:mail "$IN/vmail"

stop_all() {
  srv_stop "$T/dovecot"
  srv_stop "$T/slapd"
  srv_stop "$T/mariadb"
}
on_exit() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    printf '%sdemo failed (exit %s).%s\n' "$R" "$rc" "$N" >&2
    [ -f "$T/dovecot/dovecot.log" ] && { echo "last Dovecot log lines:" >&2; tail -n 15 "$T/dovecot/dovecot.log" >&2; }
  fi
  if [ "$KEEP" = 1 ] && [ "$rc" = 0 ]; then return; fi
  stop_all
  rm -rf "$T"
}
trap on_exit EXIT

step "Start throwaway servers in $T"
srv_start_slapd "$T/slapd" "$REPO/examples/directory.ldif"
say "slapd     127.0.0.1:$SLAPD_PORT  (examples/directory.ldif loaded: 4 people, 1 service account)"

srv_start_mariadb "$T/mariadb"
srv_mysql "$T/mariadb" <<'SQL'
CREATE DATABASE mailcow CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
CREATE USER 'mailcow'@'%' IDENTIFIED BY 'mailcowdb';
CREATE USER 'mailcow'@'localhost' IDENTIFIED BY 'mailcowdb';
GRANT ALL PRIVILEGES ON mailcow.* TO 'mailcow'@'%';
GRANT ALL PRIVILEGES ON mailcow.* TO 'mailcow'@'localhost';
SQL
srv_mysql "$T/mariadb" mailcow < "$REPO/tests/fixtures/mailcow-schema.sql"
# What a mailcow admin would have set up in the UI: the domain and a "Staff" mailbox
# template (1 GiB, tag "staff", POP3 off, 10 mails/hour) next to the built-in "Default".
srv_mysql "$T/mariadb" mailcow <<'SQL'
INSERT INTO domain (domain, description, aliases, mailboxes, defquota, maxquota, quota, active)
  VALUES ('example.org', 'demo domain', 400, 10, 3072, 10240, 10240, 1);
INSERT INTO templates (template, type, attributes) VALUES ('Staff', 'mailbox',
  '{"quota":1073741824,"tags":["staff"],"tagged_mail_handler":"none","quarantine_notification":"hourly","quarantine_category":"reject","rl_frame":"h","rl_value":"10","force_pw_update":0,"force_tfa":0,"sogo_access":1,"active":1,"tls_enforce_in":0,"tls_enforce_out":0,"imap_access":1,"pop3_access":0,"smtp_access":1,"sieve_access":1,"eas_access":1,"dav_access":1,"acl_spam_alias":1,"acl_tls_policy":1,"acl_spam_score":1,"acl_spam_policy":1,"acl_delimiter_action":1,"acl_syncjobs":0,"acl_eas_reset":1,"acl_sogo_profile_reset":0,"acl_pushover":1,"acl_quarantine":1,"acl_quarantine_attachments":1,"acl_quarantine_notification":1,"acl_quarantine_category":1,"acl_app_passwds":1,"acl_pw_reset":0}');
SQL
say "MariaDB   127.0.0.1:$MARIADB_PORT  (database mailcow: real mailcow schema, domain example.org, templates Default + Staff)"

# The helper and its config, where the "dovecot" user can read them. The config is
# examples/config.yml with only its "demo:" values filled in.
install -m 0755 "$BIN_BUILT" "$T/bin/mailcow-ldap-auth"
sed -e "s#^\(  port:\) 389 .*#\1 $SLAPD_PORT#" \
    -e "s#^\(  port:\) 3306 .*#\1 $MARIADB_PORT#" \
    -e "s#^\(    uid:\) \"5000\".*#\1 \"mail\"#" \
    -e "s#^\(    gid:\) \"5000\".*#\1 \"mail\"#" \
    -e "s#^\(    home:\) \"/var/vmail/#\1 \"$IN/vmail/#" \
    -e "s#^\(  bind_password:\) CHANGE-ME .*#\1 mailcowsvc#" \
    -e "s#^\(  password:\) CHANGE-ME .*#\1 mailcowdb#" \
    -e "s#^\(  syslog:\) true .*#\1 false#" \
    -e "s#^\(  stderr:\) errors .*#\1 all#" \
    "$REPO/examples/config.yml" > "$T/etc/config.yml"
grep -q "port: $SLAPD_PORT" "$T/etc/config.yml" && grep -q "port: $MARIADB_PORT" "$T/etc/config.yml" &&
  grep -q "home: \"$IN/vmail/" "$T/etc/config.yml" && ! grep -q "^ *[a-z_]*: CHANGE-ME" "$T/etc/config.yml" &&
  grep -q "stderr: all" "$T/etc/config.yml" || die "could not adapt examples/config.yml"
in_root chown root:dovecot "$IN/etc/config.yml"
chmod 0640 "$T/etc/config.yml"

if [ "$DOVECOT" = 2.4 ]; then
  SNIPPET=contrib/dovecot/2.4/10-auth-mailcow-ldap.conf
  install -m 0644 "$REPO/contrib/dovecot/lua/mailcow-ldap-auth.lua" "$T/etc/"
  srv_start_dovecot24 "$ROOT" "$T/dovecot" "$T/bin/mailcow-ldap-auth" "$T/etc/config.yml" \
    "$REPO/$SNIPPET" "$T/etc/mailcow-ldap-auth.lua"
  say "Dovecot   $(in_root dovecot --version | cut -d' ' -f1), chrooted in $ROOT"
  say "          127.0.0.1:$IMAP_PORT (IMAP), $POP3_PORT (POP3)"
  say "          passdb + userdb: $SNIPPET -> contrib/dovecot/lua/mailcow-ldap-auth.lua -> $IN/bin/mailcow-ldap-auth"
else
  SNIPPET=contrib/dovecot/2.3/10-auth-mailcow-ldap.conf
  srv_start_dovecot "$T/dovecot" "$T/bin/mailcow-ldap-auth" "$T/etc/config.yml" "$REPO/$SNIPPET"
  say "Dovecot   127.0.0.1:$IMAP_PORT (IMAP), $POP3_PORT (POP3), $SIEVE_PORT (ManageSieve)"
  say "          passdb + userdb: $SNIPPET -> $T/bin/mailcow-ldap-auth"
fi

# --------------------------------------------------------------------------- helpers
DOVECOT_LOG=$T/dovecot/dovecot.log
sql() { srv_mysql "$T/mariadb" mailcow "$@"; }

# imap_login USER PASSWORD: prints the server's answer to LOGIN, as a mail client sees it.
imap_login() {
  python3 - "$IMAP_PORT" "$1" "$2" <<'EOF'
import imaplib, sys
c = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
try:
    typ, data = c.login(sys.argv[2], sys.argv[3])
    print("OK", data[0].decode())
    c.select("INBOX")
    c.logout()
except imaplib.IMAP4.error as e:
    msg = e.args[0]
    if isinstance(msg, bytes):
        msg = msg.decode(errors="replace")
    print("NO", msg)
EOF
}

# helper_log_since LINE USER: the helper's log line for USER written after line LINE of the
# Dovecot log (the log process writes asynchronously: wait up to 5 s for it).
helper_log_since() {
  local from=$1 user=$2 i line
  for i in $(seq 100); do
    line=$(tail -n +"$((from + 1))" "$DOVECOT_LOG" | grep -F "mailcow-ldap-auth: login user=$user " | tail -n 1 || true)
    [ -n "$line" ] && { echo "${line#*Error: }"; return; }
    sleep 0.05
  done
  echo "(no log line from mailcow-ldap-auth)"
}
log_mark() { wc -l < "$DOVECOT_LOG"; }

show_login() {   # show_login USER PASSWORD WHAT
  local mark answer color
  mark=$(log_mark)
  answer=$(imap_login "$1" "$2")
  case $answer in OK*) color=$G ;; *"[UNAVAILABLE]"*) color=$Y ;; *) color=$R ;; esac
  say "IMAP  a1 LOGIN $1 $3"
  say "      ${color}${answer}${N}"
  say "log   $(helper_log_since "$mark" "$1")"
}

# --------------------------------------------------------------------------- the story
USER_ADDR=alice@example.org
step "The LDAP entry of $USER_ADDR (as the helper's service account sees it)"
ldapsearch -x -LLL -o ldif-wrap=no -H "ldap://127.0.0.1:$SLAPD_PORT" \
  -D cn=mailcow,ou=services,dc=example,dc=org -w mailcowsvc -b ou=people,dc=example,dc=org \
  "(&(objectClass=inetOrgPerson)(mail=$USER_ADDR))" mail displayName employeeType | grep -v '^$' | indent
say "config.yml: attribute_field employeeType; mapping staff -> Staff, employee -> Default;"
say "            anything else -> default_template Default"
say "mailcow has no mailbox for $USER_ADDR yet: $(sql -N -e "SELECT COUNT(*) FROM mailbox WHERE username='$USER_ADDR'") rows"

step "First IMAP login as $USER_ADDR: LDAP bind, then the mailbox is created from template Staff"
show_login "$USER_ADDR" alicepw "alicepw"

step "The mailbox row mailcow-ldap-auth created (and its side rows)"
sql -t -e "SELECT username, name, quota DIV 1048576 AS quota_mib, authsource, active,
  JSON_VALUE(attributes, '$.imap_access') AS imap, JSON_VALUE(attributes, '$.pop3_access') AS pop3,
  created, modified FROM mailbox WHERE username='$USER_ADDR'" | indent
sql -t -e "SELECT
  (SELECT COUNT(*) FROM alias WHERE address='$USER_ADDR') AS alias,
  (SELECT COUNT(*) FROM quota2 WHERE username='$USER_ADDR') AS quota2,
  (SELECT COUNT(*) FROM user_acl WHERE username='$USER_ADDR') AS user_acl,
  (SELECT GROUP_CONCAT(tag_name) FROM tags_mailbox WHERE username='$USER_ADDR') AS tags,
  (SELECT COUNT(*) FROM _sogo_static_view WHERE c_uid='$USER_ADDR') AS sogo_view" | indent
say "Dovecot's userdb lookup (what LMTP delivery uses) now finds it:"
in_root doveadm -c "$IN/dovecot/dovecot.conf" user "$USER_ADDR" | indent

step "Second login: nothing changes (template unchanged -> no write)"
MODIFIED_BEFORE=$(sql -N -e "SELECT modified FROM mailbox WHERE username='$USER_ADDR'")
sleep 1   # a rewrite would now show a different 'modified' second
show_login "$USER_ADDR" alicepw "alicepw"
MODIFIED_AFTER=$(sql -N -e "SELECT modified FROM mailbox WHERE username='$USER_ADDR'")
if [ "$MODIFIED_BEFORE" = "$MODIFIED_AFTER" ]; then
  say "mailbox.modified: $MODIFIED_AFTER ${G}(unchanged)${N}"
else
  say "mailbox.modified: $MODIFIED_BEFORE -> $MODIFIED_AFTER ${R}(changed!)${N}"
fi

step "Other users: the template follows employeeType"
for u in bob:bobpw dave:davepw; do
  show_login "${u%%:*}@example.org" "${u#*:}" "${u#*:}"
done

step "Wrong password: an authentication failure"
show_login "$USER_ADDR" not-her-password "not-her-password"

step "LDAP outage (slapd stopped): a TEMPORARY failure, not 'wrong password'"
srv_stop "$T/slapd"
show_login "$USER_ADDR" alicepw "alicepw"
say "(mail clients retry later and do not ask the user for a new password; fail2ban-style"
say " filters that count 'Authentication failed' do not ban anyone)"

if [ "$KEEP" = 1 ]; then
  srv_start_slapd "$T/slapd" "$REPO/examples/directory.ldif" "$SLAPD_PORT" >/dev/null
  cat > "$T/stop.sh" <<EOF
#!/usr/bin/env bash
# Stops the mailcow-ldap-auth demo servers and removes $T
source "$REPO/examples/lib/servers.sh"
srv_stop "$T/dovecot"; srv_stop "$T/slapd"; srv_stop "$T/mariadb"
rm -rf "$T"
EOF
  chmod 755 "$T/stop.sh"
  step "Everything keeps running (--keep); slapd is back up"
  cat <<EOF
   IMAP:         curl -v imap://127.0.0.1:$IMAP_PORT/ -u carol@example.org:carolpw
   POP3:         curl -v pop3://127.0.0.1:$POP3_PORT/ -u bob@example.org:bobpw
   by hand:      printf 'carolpw\\n' | $T/bin/mailcow-ldap-auth --config $T/etc/config.yml login carol@example.org
   check config: $T/bin/mailcow-ldap-auth --config $T/etc/config.yml test-connection
   userdb:       ${ROOT:+chroot $ROOT }doveadm -c $IN/dovecot/dovecot.conf user alice@example.org
   Dovecot log:  tail -f $T/dovecot/dovecot.log
   database:     mariadb --no-defaults -S $T/mariadb/mysqld.sock -uroot mailcow
   LDAP:         ldapsearch -x -H ldap://127.0.0.1:$SLAPD_PORT -D cn=mailcow,ou=services,dc=example,dc=org -w mailcowsvc -b dc=example,dc=org
   config:       $T/etc/config.yml   (users and passwords: examples/directory.ldif)
   stop:         $T/stop.sh
EOF
else
  step "Done: servers stopped, $T removed (run with --keep to play with them)"
fi
