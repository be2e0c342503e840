-- mailcow-ldap-auth: Dovecot Lua passdb + userdb (Dovecot 2.3 and 2.4, the same file).
--
-- Two transports, chosen by the settings:
--   url:     each request is an HTTP/1.1 request to `mailcow-ldap-auth serve` (pooled LDAP
--            and database connections, no process per login) over TCP or serve's Unix socket,
--            kept open across requests, through lua-socket (Debian: lua-socket; mailcow's
--            image has it). Not Dovecot's own HTTP client (dovecot.http): it cost 0.25 ms of
--            CPU per request, five times Dovecot's whole native LDAP passdb (docs/performance.md).
--            The token from token_file goes in the Authorization header.
--   process: each request runs the program once (below).
--
-- The process transport runs, per request:
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
--   or, for the url transport (2.3: MAILCOW_LDAP_AUTH_URL, MAILCOW_LDAP_AUTH_TOKEN_FILE):
--     url        where serve listens (serve.listen): http://127.0.0.1:9077/, or unix:PATH for
--                its Unix socket (unix:/run/mailcow-ldap-auth/serve.sock)
--     token_file the file holding serve's token (serve.token_file), readable by the
--                auth-worker's user; read once when the script is loaded
--     timeout_ms optional: how long to wait for serve (default 15000; serve's own deadline,
--                deadline_ms, is shorter)
--   (`dovecot` is needed by both.)
--   mailcow-dockerized (contrib/mailcow/passwd-verify.lua sets these in the global table
--   mailcow_ldap_auth_settings, then loads this file in place of mailcow's script):
--     mailcow_url  mailcow's own endpoint, https://nginx:9082: asked, exactly as mailcow's
--                  passwd-verify.lua asks it, when serve answers NEXT (mailbox not
--                  LDAP-backed, or none), so SQL passwords and their app passwords work as before
--     sogo_rip     optional: SOGo's address (IPV4_NETWORK.248); its logins carry SOGo's
--                  single sign-on secret, not a password, and go to mailcow_url only
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
  url = "MAILCOW_LDAP_AUTH_URL",
  token_file = "MAILCOW_LDAP_AUTH_TOKEN_FILE",
  timeout_ms = "MAILCOW_LDAP_AUTH_TIMEOUT_MS",
}

-- url transport: where serve is ({ host, port, path } or { unix }, and the URL path prefix),
-- the token, and the connection kept open between requests with when it was last used.
local target
local token
local connection, connection_used

-- Defined below.
local open_url_transport, parse_reply

function script_init(args)
  for key, value in pairs(mailcow_ldap_auth_settings or {}) do
    settings[key] = value
  end
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
  local needed = { "binary", "config", "dovecot" }
  if settings.url then
    needed = { "url", "token_file", "dovecot" }
  end
  for _, key in ipairs(needed) do
    if not settings[key] then
      dovecot.i_error("mailcow-ldap-auth.lua: setting '" .. key .. "' is missing")
      return 1
    end
  end
  if settings.dovecot ~= "2.3" and settings.dovecot ~= "2.4" then
    dovecot.i_error("mailcow-ldap-auth.lua: setting 'dovecot' must be 2.3 or 2.4")
    return 1
  end
  if settings.url then
    local failed = open_url_transport()
    if failed then
      dovecot.i_error("mailcow-ldap-auth.lua: " .. failed)
      return 1
    end
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

-- Where `url` points: { host, port, prefix } or { unix, prefix }; nil when it is neither.
local function parse_url(url)
  local path = url:match("^unix:(/.+)$")
  if path then
    return { unix = path, host = "localhost", prefix = "/" }
  end
  local host, port, prefix = url:match("^http://([%w%.%-]+):?(%d*)(/.*)$")
  if not host or not prefix:match("/$") then
    return nil
  end
  return { host = host, port = tonumber(port) or 80, prefix = prefix }
end

-- Reads the token and checks the settings of the url transport; returns why not, or nil.
function open_url_transport()
  target = parse_url(settings.url)
  if not target then
    return "setting 'url' must look like http://127.0.0.1:9077/ or unix:/path/to/serve.sock"
  end
  -- The C part only: Dovecot collects all garbage after every call, and what is loaded stays
  -- live (socket.lua's helpers would be marked on every login for nothing).
  local loaded, socket = pcall(require, "socket.core")
  if not loaded then
    return "the url transport needs lua-socket (Debian: apt install lua-socket): " ..
      tostring(socket)
  end
  target.socket = socket
  if target.unix then
    local unix
    loaded, unix = pcall(require, "socket.unix")
    if not loaded then
      return "lua-socket has no Unix sockets: " .. tostring(unix)
    end
    -- lua-socket 3.1 returns a table (unix.stream); 3.0-rc1 the constructor itself
    target.unix_stream = type(unix) == "function" and unix or unix.stream
    if type(target.unix_stream) ~= "function" then
      return "lua-socket's socket.unix has no stream sockets"
    end
  end
  local file, err = io.open(settings.token_file, "r")
  if not file then
    return "cannot read token_file: " .. tostring(err)
  end
  token = (file:read("a") or ""):gsub("[\r\n]+$", "")
  file:close()
  if token == "" or token:find("[%c ]") then
    return "token_file " .. settings.token_file .. " is empty or holds spaces"
  end
  local timeout = tonumber(settings.timeout_ms or "15000")
  if not timeout or timeout <= 0 then
    return "setting 'timeout_ms' must be a positive number"
  end
  target.timeout = timeout / 1000
  return nil
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

-- The request's service and remote IP, each read once (as is req.user): every read of `req`
-- runs Dovecot's C __index, and 2.3's builds the request's whole variable table for each.
local function origin_of(req)
  local service
  if settings.dovecot == "2.4" then
    service = req.protocol -- 2.4 has no req.service
  else
    service = req.service -- 2.3 has no req.protocol
  end
  -- remote_ip: both (2.3's alias of rip); real_rip only for a 2.3 without the alias
  return service or "unknown", req.remote_ip or req.real_rip or "-"
end

-- The shell command for one request; nil when a value cannot be passed.
local function command(mode, req, reply_path)
  local user = req.user
  local service, remote_ip = origin_of(req)
  local words = { "exec" }
  local values = {
    settings.binary, "--config", config_path(req), "dovecot-lua", mode,
    "--service", service, "--remote-ip", remote_ip,
    "--dovecot", settings.dovecot, "--reply-file", reply_path, "--", user,
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
  local word, fields = parse_reply(text)
  if word and (word == "OK") ~= (code == 0) then
    return nil, "malformed reply (exit " .. code .. ")"
  end
  return word, fields
end

-- The reply of `dovecot-lua` and of serve (Accept: text/plain): a result word, then
-- key=value lines. Returns the word and a table of the lines, or nil and why.
function parse_reply(text)
  local word, rest = text:match("^([A-Z_]+)\n(.*)$")
  if not word then
    return nil, "malformed reply"
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

-- A JSON string literal (the value is UTF-8 or passed through as it is).
local function json_string(value)
  return '"' .. value:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function url_encode(value)
  return (value:gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

-- The connection to serve: the one kept from the last request when it is still good, else a
-- new one; nil and why when serve cannot be reached.
local function serve_connection()
  local socket = target.socket
  if connection then
    -- Reused only while serve keeps it (serve.client_timeout_ms, 5 s, closes idle ones) and
    -- when it has nothing to read: serve never speaks first, so a readable connection is
    -- one serve closed (restarted, draining). A login is never sent twice.
    local readable = socket.select({ connection }, nil, 0)
    local idle = socket.gettime() - connection_used
    if idle >= 0 and idle < 1 and #readable == 0 then
      return connection
    end
    connection:close()
    connection = nil
  end
  local made, ok, err
  if target.unix then
    made = target.unix_stream()
    made:settimeout(target.timeout)
    ok, err = made:connect(target.unix)
  else
    made = socket.tcp()
    made:settimeout(target.timeout)
    made:setoption("tcp-nodelay", true)
    ok, err = made:connect(target.host, target.port)
  end
  if not ok then
    made:close()
    return nil, "cannot connect to " .. settings.url .. ": " .. tostring(err)
  end
  connection = made
  return connection
end

-- Sends one HTTP/1.1 request on `conn` and reads the answer: the status and the body, or nil
-- and why. timeout_ms bounds the whole exchange, though lua-socket's timeout restarts with
-- every call: it is set for the send and the answer's first line; then it is 0, as the rest
-- of serve's answer (one small write) is usually in lua-socket's buffer already, and only a
-- receive that finds it is not gets the time left.
local function exchange(conn, method, path, body)
  local gettime = target.socket.gettime
  local deadline = gettime() + target.timeout
  local function wait_within_deadline()
    conn:settimeout(math.max(deadline - gettime(), 0.001))
  end
  local function receive(pattern)
    local got, err, partial = conn:receive(pattern)
    if not got and err == "timeout" then
      wait_within_deadline()
      got, err = conn:receive(pattern, partial)
      conn:settimeout(0)
    end
    return got, err
  end
  local head = {
    method .. " " .. target.prefix .. path .. " HTTP/1.1",
    "Host: " .. target.host,
    "Authorization: Bearer " .. token,
    "Accept: text/plain",
  }
  if body then
    head[#head + 1] = "Content-Type: application/json"
    head[#head + 1] = "Content-Length: " .. #body
  end
  conn:settimeout(target.timeout)
  local sent, err = conn:send(table.concat(head, "\r\n") .. "\r\n\r\n" .. (body or ""))
  if not sent then
    return nil, "sending to " .. settings.url .. ": " .. tostring(err)
  end
  wait_within_deadline()
  local line
  line, err = conn:receive("*l")
  conn:settimeout(0)
  local status = line and tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then
    return nil, "reading from " .. settings.url .. ": " .. tostring(err or "not HTTP")
  end
  local length, close = 0, false
  while true do
    line, err = receive("*l")
    if not line then
      return nil, "reading from " .. settings.url .. ": " .. tostring(err)
    end
    if line == "" then
      break
    end
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    name = name and name:lower()
    if name == "content-length" then
      length = tonumber(value) or 0
    elseif name == "connection" and value:lower() == "close" then
      close = true
    end
  end
  local payload = ""
  if length > 0 then
    payload, err = receive(length)
    if not payload then
      return nil, "reading from " .. settings.url .. ": " .. tostring(err)
    end
  end
  return status, payload, close
end

-- One request to serve: POST /auth with the password, or GET /lookup. Same answer as ask().
local function ask_url(mode, req, password)
  local user = req.user
  -- JSON carries UTF-8 only: refused here as the process transport refuses it (not a fault)
  if utf8 and (not utf8.len(user) or (password and not utf8.len(password))) then
    if mode == "verify" then
      return "PASSWORD_MISMATCH", { reason = "login name or password is not UTF-8" }
    end
    return "USER_UNKNOWN", { reason = "login name is not UTF-8" }
  end
  local conn, err = serve_connection()
  if not conn then
    return nil, err
  end
  local status, payload, close
  if mode == "verify" then
    local service, remote_ip = origin_of(req)
    status, payload, close = exchange(conn, "POST", "auth", "{" ..
      '"username":' .. json_string(user) ..
      ',"password":' .. json_string(password) ..
      ',"service":' .. json_string(service) ..
      ',"real_rip":' .. json_string(remote_ip) ..
      ',"dovecot":' .. json_string(settings.dovecot) .. "}")
  else
    status, payload, close = exchange(conn, "GET",
      "lookup?user=" .. url_encode(user) .. "&dovecot=" .. settings.dovecot)
  end
  if not status or close then
    connection:close()
    connection = nil
  else
    connection_used = target.socket.gettime()
  end
  if not status then
    return nil, payload
  end
  if status ~= 200 then
    return nil, settings.url .. " answered " .. status .. ": " .. payload:sub(1, 200)
  end
  return parse_reply(payload)
end

-- ask() with a fresh reply file that is removed whatever happens, or ask_url().
local function ask_once(mode, req, password)
  if target then
    local ran, word, fields = pcall(ask_url, mode, req, password)
    if not ran then
      -- Halfway through an exchange: the connection's state is unknown.
      if connection then
        connection:close()
        connection = nil
      end
      return nil, tostring(word)
    end
    return word, fields
  end
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

-- mailcow's request to its PHP endpoint and its reading of the answer, as mailcow's own
-- passwd-verify.lua makes them (2.3: master at 06424670; 2.4: feat/dovecot-2.4 at
-- 816b5cdb), outages included (they stay PASSWORD_MISMATCH there). Uses the modules of
-- mailcow's image (cjson, lua-socket, lua-sec).
local function mailcow_request(req, password)
  if settings.dovecot == "2.4" then
    return { username = req.auth_user, password = password, real_rip = req.remote_ip,
      service = req.protocol }
  end
  return { username = req.user, password = password, real_rip = req.real_rip,
    service = req.service }
end

local function ask_mailcow(req, password)
  local json = require "cjson"
  local ltn12 = require "ltn12"
  local https = require "ssl.https"
  https.TIMEOUT = 30
  local body = mailcow_request(req, password)
  local req_json = json.encode(body)
  local res = {}
  local _, c = https.request {
    method = "POST",
    url = settings.mailcow_url,
    source = ltn12.source.string(req_json),
    headers = {
      ["content-type"] = "application/json",
      ["content-length"] = tostring(#req_json)
    },
    sink = ltn12.sink.table(res),
    insecure = true
  }
  if c ~= 200 and c ~= 401 then
    dovecot.i_info("HTTP request failed with " .. tostring(c) .. " for user " .. req.user)
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "Upstream error"
  end
  local response_str = table.concat(res)
  local valid, response_json = pcall(json.decode, response_str)
  if not valid then
    dovecot.i_info("Invalid JSON received: " .. response_str)
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "Invalid response format"
  end
  if response_json.success == true then
    return dovecot.auth.PASSDB_RESULT_OK, settings.dovecot == "2.4" and { msg = "" } or ""
  end
  return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "Failed to authenticate"
end

-- mailcow-dockerized: serve first; what it hands on (NEXT) and SOGo's logins go to mailcow.
local function verify_in_mailcow(req, password)
  local domain = req.domain
  if settings.dovecot == "2.4" then
    domain = req.auth_user:match("@(.+)")
  end
  if domain == nil then
    return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, "No such user"
  end
  -- SOGo as mailcow's endpoint recognises it: by the address mailcow's request carries
  if settings.sogo_rip and mailcow_request(req, password).real_rip == settings.sogo_rip then
    return ask_mailcow(req, password)
  end
  local word, fields = ask_once("verify", req, password)
  if word == "NEXT" then
    return ask_mailcow(req, password)
  end
  return answer("PASSDB_RESULT_", PASSDB_WORDS, word, fields)
end

function auth_password_verify(req, password)
  if settings.mailcow_url then
    return verify_in_mailcow(req, password)
  end
  return answer("PASSDB_RESULT_", PASSDB_WORDS, ask_once("verify", req, password))
end

-- A bind-only backend has no password to hand out (doveadm auth lookup, non-plaintext
-- mechanisms); mailcow's script answers USER_UNKNOWN.
function auth_passdb_lookup(req)
  if settings.mailcow_url then
    return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, ""
  end
  return dovecot.auth.PASSDB_RESULT_SCHEME_NOT_AVAILABLE, "mailcow-ldap-auth only verifies passwords"
end

-- LMTP delivery, doveadm user, …: the mailbox row only, no LDAP.
function auth_userdb_lookup(req)
  return answer("USERDB_RESULT_", USERDB_WORDS, ask_once("lookup", req, nil))
end
