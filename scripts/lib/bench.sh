# shellcheck shell=bash
# What the benchmarks share (source this file; it sources examples/lib/servers.sh):
#   bench_build                       installs missing packages, builds the release binary -> BIN
#   bench_servers DIR N UID GID HOME_BASE
# starts slapd in DIR/slapd with N users fb1..fbN@example.org (employeeType staff, or "other"
# for every BENCH_OTHER_EVERY-th one when that is set; password $BENCH_PW) besides
# examples/directory.ldif's base entries and service account, and MariaDB in DIR/mariadb
# with mailcow's schema, domain example.org and the StaffUI template of
# tests/fixtures/golden-provision-bob.json (tags, quota, rate limit, POP3 off); writes
# DIR/config.yml (userdb uid/gid UID/GID, homes under HOME_BASE). Sets SLAPD_PORT, MARIADB_PORT.
# The caller stops the servers (srv_stop DIR/slapd; srv_stop DIR/mariadb).

# shellcheck source=examples/lib/servers.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../examples/lib/servers.sh"

BENCH_PW=bench-pw-1

bench_build() {
  bash "$SRV_REPO/scripts/install-test-deps.sh"
  (cd "$SRV_REPO" && cargo build --release --quiet)
  BIN=${CARGO_TARGET_DIR:-$SRV_REPO/target}/release/mailcow-ldap-auth
}

bench_servers() {
  local dir=$1 n=$2 uid=$3 gid=$4 home_base=$5 hash template i kind
  mkdir -p "$dir/slapd" "$dir/mariadb"
  hash=$(slappasswd -h '{SSHA}' -s "$BENCH_PW")
  {
    awk '/^dn: uid=/{exit} {print}' "$SRV_REPO/examples/directory.ldif"
    for i in $(seq 1 "$n"); do
      printf 'dn: uid=fb%d,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: fb%d\n' "$i" "$i"
      printf 'cn: First Bench %d\nsn: Bench\ndisplayName: First Bench %d\nmail: fb%d@example.org\n' "$i" "$i" "$i"
      kind=staff
      if [ -n "${BENCH_OTHER_EVERY:-}" ] && [ $((i % BENCH_OTHER_EVERY)) = 0 ]; then kind=other; fi
      printf 'employeeType: %s\nuserPassword: %s\n\n' "$kind" "$hash"
    done
  } > "$dir/directory.ldif"
  srv_start_slapd "$dir/slapd" "$dir/directory.ldif"
  srv_start_mariadb "$dir/mariadb"
  srv_mysql "$dir/mariadb" -e "CREATE DATABASE mailcow; CREATE USER 'mailcow'@'%' IDENTIFIED BY 'pw';
    GRANT ALL ON mailcow.* TO 'mailcow'@'%';"
  srv_mysql "$dir/mariadb" mailcow < "$SRV_REPO/tests/fixtures/mailcow-schema.sql"
  template=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["template"]["attributes_text"])' \
    "$SRV_REPO/tests/fixtures/golden-provision-bob.json")
  srv_mysql "$dir/mariadb" mailcow -e "
    INSERT INTO domain (domain, description, aliases, mailboxes, defquota, maxquota, quota, active)
      VALUES ('example.org', 'bench', 400, $((n > 100000 ? n : 100000)), 3072, 10240, 1048576000, 1);
    INSERT INTO templates (template, type, attributes) VALUES ('StaffUI', 'mailbox', '$template');"
  cat > "$dir/config.yml" <<YML
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
database: { host: 127.0.0.1, port: $MARIADB_PORT, name: mailcow, user: mailcow, password: pw }
dovecot: { userdb_fields: { uid: "$uid", gid: "$gid", home: "$home_base/{domain}/{local_part}" } }
log: { syslog: false, stderr: errors }
YML
  chmod 600 "$dir/config.yml"
}
