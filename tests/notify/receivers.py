#!/usr/bin/env python3
"""Receivers the notification tests start: nobody on the project wrote the SMTP server.

  receivers.py smtp    PORT OUT CERT KEY   aiosmtpd on 127.0.0.1:PORT, STARTTLS required
  receivers.py webhook PORT OUT CERT KEY SECRET_FILE
                                           HTTPS on 127.0.0.1:PORT, checks X-Portcullis-Signature

Each message received is one JSON line appended to OUT (flushed at once). Prints "ready" on stdout
once listening. Runs until killed.
"""
import hashlib
import hmac
import http.server
import json
import ssl
import sys
import time


def append(out, record):
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def smtp(port, out, cert, key):
    from email import message_from_bytes
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            msg = message_from_bytes(envelope.original_content or envelope.content)
            body = msg.get_payload(decode=True) or b""
            append(out, {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "subject": str(msg["Subject"]),
                "to": str(msg["To"]),
                "body": body.decode("utf-8", "replace"),
                "tls": session.ssl is not None,
            })
            return "250 OK"

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    controller = Controller(Handler(), hostname="127.0.0.1", port=port,
                            tls_context=ctx, require_starttls=True)
    controller.start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def webhook(port, out, cert, key, secret_file):
    secret = open(secret_file, "rb").read().strip()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            ts = self.headers.get("X-Portcullis-Timestamp", "")
            sig = self.headers.get("X-Portcullis-Signature", "")
            want = "v1=" + hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
            fresh = ts.isdigit() and abs(time.time() - int(ts)) <= 300
            valid = hmac.compare_digest(want, sig) and fresh
            append(out, {
                "valid": valid,
                "event": self.headers.get("X-Portcullis-Event"),
                "delivery": self.headers.get("X-Portcullis-Delivery"),
                "body": json.loads(body or b"null"),
            })
            self.send_response(204 if valid else 401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    kind, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if kind == "smtp":
        smtp(port, out, sys.argv[4], sys.argv[5])
    elif kind == "webhook":
        webhook(port, out, sys.argv[4], sys.argv[5], sys.argv[6])
    else:
        sys.exit(f"unknown receiver {kind}")
