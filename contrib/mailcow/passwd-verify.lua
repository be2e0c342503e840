-- mailcow-dockerized: copied to data/conf/mailcow-ldap-auth/passwd-verify.lua, which
-- contrib/mailcow/docker-compose.override.yml mounts over /etc/dovecot/auth/passwd-verify.lua
-- in dovecot-mailcow (README "mailcow-dockerized"). mailcow's own
-- passdb blocks then run the project's script with these settings: serve first, mailcow's
-- PHP endpoint for every mailbox that is not LDAP-backed.
mailcow_ldap_auth_settings = {
  url = "http://mailcow-ldap-auth:9077/",
  token_file = "/etc/mailcow-ldap-auth/token",
  -- 2.4 on mailcow's feat/dovecot-2.4 images; then also this line (mailcow's cache key,
  -- from its passwd-verify.lua at commit 816b5cdb of that branch):
  -- cache_key = "%{protocol}:%{user | username}\t:%{password}",
  dovecot = "2.3",
  mailcow_url = "https://nginx:9082",
  -- SOGo's address: IPV4_NETWORK from mailcow.conf, then .248
  sogo_rip = "172.22.1.248",
}
dofile("/usr/local/share/mailcow-ldap-auth/mailcow-ldap-auth.lua")
