#!/usr/bin/env python3
"""A stand-in for mailcow's PHP endpoint (https://nginx:9082, mailcowauth.php) in
tests/mailcow_e2e.rs: HTTPS on loopback with the test CA's server certificate, answers
mailcow's contract from a fixed table, records every request as a JSON line.

usage: mailcow_php_standin.py PORT CERT KEY TABLE_JSON RECORD_FILE
TABLE_JSON: {"user@domain": "password", ...}. 200 {"success": true} when the username and
password match, else 401 {"success": false}; 400 without username/password/real_rip.
"""
import http.server
import json
import ssl
import sys

port, cert, key, table_path, record_path = sys.argv[1:6]
with open(table_path) as f:
    table = json.load(f)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            post = json.loads(body)
        except ValueError:
            post = None
        with open(record_path, "a") as f:
            f.write(json.dumps({"path": self.path, "body": post}) + "\n")
        if not isinstance(post, dict) or not all(k in post for k in ("username", "password", "real_rip")):
            status = 400
        elif table.get(post["username"]) == post["password"]:
            status = 200
        else:
            status = 401
        answer = json.dumps({"success": status == 200}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
