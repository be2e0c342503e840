#!/bin/sh
# Regenerates tests/fixtures/app_password_hashes.json: app password hashes made by the tools
# that write them in mailcow — Dovecot's `doveadm pw` (what an admin pastes as a pre-hashed
# password) and PHP's password_hash()/hash() as mailcow's hash_password() calls them.
# Needs: dovecot-core, php-cli, python3. Run from the repository root.
set -eu
out=tests/fixtures/app_password_hashes.json
pw='app-Pässwort:1 "x"'
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
for scheme in BLF-CRYPT SSHA SSHA256 SSHA512 SHA512-CRYPT SHA256-CRYPT ARGON2I ARGON2ID MD5-CRYPT PLAIN CLEARTEXT; do
    printf '%s\t%s\t%s\n' "doveadm pw -s $scheme -p PASSWORD" "$pw" "$(doveadm pw -s "$scheme" -p "$pw")" >>"$tmp"
done
# mailcow's hash_password(): BLF-CRYPT (its default), SSHA* with a 16-hex-character salt.
PW="$pw" php -r '
$p = getenv("PW");
$salt = bin2hex(random_bytes(8));
$out = [
  ["php password_hash(PASSWORD_BCRYPT) (mailcow hash_password BLF-CRYPT)", "{BLF-CRYPT}" . password_hash($p, PASSWORD_BCRYPT)],
  ["php hash(sha1) + 16 hex salt (mailcow hash_password SSHA)", "{SSHA}" . base64_encode(hash("sha1", $p . $salt, true) . $salt)],
  ["php hash(sha256) + 16 hex salt (mailcow hash_password SSHA256)", "{SSHA256}" . base64_encode(hash("sha256", $p . $salt, true) . $salt)],
  ["php hash(sha512) + 16 hex salt (mailcow hash_password SSHA512)", "{SSHA512}" . base64_encode(hash("sha512", $p . $salt, true) . $salt)],
  ["php password_hash(PASSWORD_ARGON2ID)", "{ARGON2ID}" . password_hash($p, PASSWORD_ARGON2ID)],
  ["php password_hash(PASSWORD_ARGON2I)", "{ARGON2I}" . password_hash($p, PASSWORD_ARGON2I)],
];
foreach ($out as $o) { echo $o[0], "\t", $p, "\t", $o[1], "\n"; }
' >>"$tmp"
python3 - "$tmp" "$out" <<'PY'
import json, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1], encoding="utf-8")]
doc = {
    "what": "App password hashes made by real tools; each must match its password and nothing else. Regenerate with scripts/make-app-password-vectors.sh.",
    "vectors": [{"made_with": m, "password": p, "hash": h} for m, p, h in rows],
}
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump(doc, f, indent=1, ensure_ascii=False)
    f.write("\n")
PY
echo "wrote $out ($(wc -l <"$tmp") vectors)"
