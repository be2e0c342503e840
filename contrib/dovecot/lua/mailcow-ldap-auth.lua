-- mailcow-ldap-auth: Dovecot Lua passdb + userdb (Dovecot 2.3 and 2.4, the same file).
--
-- Each request runs the program once:
--   <binary> --config <config> dovecot-lua verify|lookup --service S --remote-ip IP
--            --dovecot 2.3|2.4 --reply-file <os.tmpname()> -- USER
-- through `sh -c "exec …"` (the shell replaces itself with the program: one process per
-- login). The password goes to its standard input, never into the command line or the
-- environment. The program writes its answer into the reply file (a result word, then
-- key=value lines); the file holds no secret, is 0600 (mkstemp) and is always removed here.
--
-- Settings, named once in the Dovecot config snippet:
--   Dovecot 2.4: `lua_settings { binary = …  config = …  dovecot = 2.4 }` (script_init's args);
--   Dovecot 2.3: MAILCOW_LDAP_AUTH_BINARY, MAILCOW_LDAP_AUTH_CONFIG, MAILCOW_LDAP_AUTH_DOVECOT
--   in `import_environment` (2.3.19 passes a Lua passdb no settings).
--     binary    the program, e.g. /usr/local/bin/mailcow-ldap-auth
--     config    its configuration file; Dovecot variables in it are expanded per request
--     dovecot   2.3 or 2.4: the userdb field names the program emits (2.4 ignores quota_rule)
--     cache_key optional (2.4): a cache key template; defines auth_passdb_get_cache_key()
-- Nothing in this file needs editing.

local settings = {}

local PASSDB_WORDS = {
  OK = true, PASSWORD_MISMATCH = true, USER_UNKNOWN = true, USER_DISABLED = true,
  NEXT = true, INTERNAL_FAILURE = true,
}
local USERDB_WORDS = { OK = true, USER_UNKNOWN = true, INTERNAL_FAILURE = true }

local ENVIRONMENT = {
  binary = "MAILCOW_LDAP_AUTH_BINARY",
  config = "MAILCOW_LDAP_AUTH_CONFIG",
  dovecot = "MAILCOW_LDAP_AUTH_DOVECOT",
}

function script_init(args)
  for key, value in pairs(args or {}) do
    if type(value) == "string" and value ~= "" then
      settings[key] = value
    end
  end
  for key, name in pairs(ENVIRONMENT) do
    local value = os.getenv(name)
    if not settings[key] and value and value ~= "" then
      settings[key] = value
    end
  end
  for _, key in ipairs({ "binary", "config", "dovecot" }) do
    if not settings[key] then
      dovecot.i_error("mailcow-ldap-auth.lua: setting '" .. key .. "' is missing")
      return 1
    end
  end
  if settings.dovecot ~= "2.3" and settings.dovecot ~= "2.4" then
    dovecot.i_error("mailcow-ldap-auth.lua: setting 'dovecot' must be 2.3 or 2.4")
    return 1
  end
  if settings.cache_key then
    local key = settings.cache_key
    function auth_passdb_get_cache_key()
      return key
    end
  end
  return 0
end

function script_deinit()
end

-- One shell word: '…' with every ' written as '\''. nil for a NUL, which a command line
-- cannot carry.
local function quote(value)
  if value:find("\0", 1, true) then
    return nil
  end
  return "'" .. (value:gsub("'", "'\\''")) .. "'"
end

-- The config file for this request: Dovecot variables (%d, %{user|domain}, …) expanded.
local function config_path(req)
  if settings.config:find("%", 1, true) then
    return req:var_expand(settings.config)
  end
  return settings.config
end

-- The shell command for one request; nil when a value cannot be passed.
local function command(mode, req, reply_path)
  local words = { "exec" }
  local values = {
    settings.binary, "--config", config_path(req), "dovecot-lua", mode,
    "--service", req.protocol or req.service or "unknown",
    "--remote-ip", req.remote_ip or req.real_rip or "-",
    "--dovecot", settings.dovecot, "--reply-file", reply_path, "--", req.user,
  }
  for _, value in ipairs(values) do
    local word = quote(tostring(value))
    if not word then
      return nil
    end
    words[#words + 1] = word
  end
  return table.concat(words, " ")
end

-- Runs the program; returns the result word and a table of the reply's key=value lines,
-- or nil and why.
local function ask(mode, req, password, reply_path)
  local cmd = command(mode, req, reply_path)
  if not cmd then
    return nil, "a request field holds a NUL byte"
  end
  local pipe, err = io.popen(cmd, "w")
  if not pipe then
    return nil, "cannot start " .. settings.binary .. ": " .. tostring(err)
  end
  if password then
    -- Unbuffered: a program that ended without reading fails this write, not close(),
    -- which then still reports how the program ended.
    pipe:setvbuf("no")
    pipe:write(password)
  end
  local _, how, code = pipe:close()
  if how ~= "exit" or (code ~= 0 and code ~= 1 and code ~= 3) then
    return nil, settings.binary .. " ended with " .. tostring(how) .. " " .. tostring(code)
  end
  local file = io.open(reply_path, "r")
  if not file then
    return nil, "no reply file"
  end
  local text = file:read("a")
  file:close()
  local word, rest = text:match("^([A-Z_]+)\n(.*)$")
  if not word or (word == "OK") ~= (code == 0) then
    return nil, "malformed reply (exit " .. code .. ")"
  end
  local fields = {}
  for line in rest:gmatch("([^\n]*)\n") do
    local key, value = line:match("^([^=]+)=(.*)$")
    if not key then
      return nil, "malformed reply line"
    end
    fields[key] = value
  end
  return word, fields
end

-- ask() with a fresh reply file that is removed whatever happens.
local function ask_once(mode, req, password)
  local made, reply_path = pcall(os.tmpname)
  if not made then
    return nil, "cannot create a reply file: " .. tostring(reply_path)
  end
  local ran, word, fields = pcall(ask, mode, req, password, reply_path)
  os.remove(reply_path)
  if not ran then
    return nil, tostring(word)
  end
  return word, fields
end

-- What the passdb or userdb returns for ask_once()'s answer: `prefix` .. WORD
-- (PASSDB_RESULT_ or USERDB_RESULT_) when WORD is one of `words`, else INTERNAL_FAILURE,
-- whose message Dovecot logs as an error.
local function answer(prefix, words, word, fields)
  if not word then
    return dovecot.auth[prefix .. "INTERNAL_FAILURE"], "mailcow-ldap-auth: " .. fields
  end
  if not words[word] then
    return dovecot.auth[prefix .. "INTERNAL_FAILURE"], "mailcow-ldap-auth: unexpected result " .. word
  end
  if word == "OK" then
    return dovecot.auth[prefix .. word], fields
  end
  return dovecot.auth[prefix .. word], fields.reason or word
end

function auth_password_verify(req, password)
  return answer("PASSDB_RESULT_", PASSDB_WORDS, ask_once("verify", req, password))
end

-- A bind-only backend has no password to hand out (doveadm auth lookup, non-plaintext
-- mechanisms).
function auth_passdb_lookup(req)
  return dovecot.auth.PASSDB_RESULT_SCHEME_NOT_AVAILABLE, "mailcow-ldap-auth only verifies passwords"
end

-- LMTP delivery, doveadm user, …: the mailbox row only, no LDAP.
function auth_userdb_lookup(req)
  return answer("USERDB_RESULT_", USERDB_WORDS, ask_once("lookup", req, nil))
end
