"""Enrolls and logs in Portcullis users through the HTTPS API for .ci/api-fuzz.

Standard library only. TOTP is RFC 6238 (HMAC-SHA1, 6 digits, 30 s steps), computed from the
secret in the otpauth URI that POST /api/v1/enroll returns.

  api_fuzz_setup.py wait BASE CA                      waits (up to 60 s) for BASE/readyz; the CA
      file appears when serve has made its development CA.
  api_fuzz_setup.py login BASE CA STATE NAME=CODE...  enrolls each user with their one-time
      code, logs in (password + TOTP) and writes secrets and session tokens to the JSON file STATE.
  api_fuzz_setup.py token STATE NAME                  prints NAME's session token.
  api_fuzz_setup.py step-up BASE CA STATE NAME        a TOTP step-up for NAME's session (waits for
      a step NAME has not used yet).
  api_fuzz_setup.py request BASE CA STATE NAME DEVICE  NAME asks for port 502 of DEVICE for an hour
      from a minute from now; prints the request's id.

The server accepts each TOTP step once per user (replay guard), and the current or the previous
step. Enrollment is confirmed with the previous step's code so that the login right after it can
use the current one without waiting.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import ssl
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

PASSWORD = "fuzzing the portcullis api carefully"
STEP = 30


def totp(secret_b32: str, step: int) -> str:
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def secret_of(uri: str) -> str:
    query = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)
    return query["secret"][0]


def current_step(margin: float = 0.0) -> int:
    """The current TOTP step, waiting out the last `margin` seconds of a step so a code computed
    here is still current (or still the previous step) when the server checks it."""
    now = time.time()
    if STEP - (now % STEP) < margin:
        time.sleep(STEP - (now % STEP) + 0.2)
        now = time.time()
    return int(now // STEP)


class Api:
    def __init__(self, base: str, ca: str):
        self.base = base.rstrip("/")
        self.ctx = ssl.create_default_context(cafile=ca)

    def post(self, path: str, body: dict, token: str | None = None) -> dict:
        req = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise SystemExit(f"POST {path}: {e.code} {e.read().decode(errors='replace')}")
        return json.loads(raw) if raw else {}


def login(api: Api, pairs: list[str]) -> dict:
    users = {}
    for pair in pairs:
        name, code = pair.split("=", 1)
        enrolled = api.post("/api/v1/enroll", {"code": code, "password": PASSWORD})
        users[name] = {"code": code, "secret": secret_of(enrolled["otpauth_uri"])}
    for user in users.values():
        # The previous step's code, so the login below can use the current step.
        step = current_step(margin=3) - 1
        api.post("/api/v1/enroll/confirm", {"code": user["code"], "totp": totp(user["secret"], step)})
    for name, user in users.items():
        mfa = api.post("/api/v1/auth/login", {"username": name, "password": PASSWORD})["mfa_token"]
        step = current_step(margin=3)
        session = api.post("/api/v1/auth/mfa", {"mfa_token": mfa, "totp": totp(user["secret"], step)})
        user["token"] = session["session_token"]
        user["last_step"] = step
    return users


def step_up(api: Api, user: dict) -> None:
    step = current_step(margin=3)
    while step <= user["last_step"]:
        time.sleep(STEP - (time.time() % STEP) + 0.2)
        step = current_step(margin=3)
    api.post("/api/v1/auth/step-up", {"totp": totp(user["secret"], step)}, user["token"])
    user["last_step"] = step


def request(api: Api, token: str, device: str) -> dict:
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    start, end = now + datetime.timedelta(minutes=1), now + datetime.timedelta(hours=1)
    body = {
        "device": device,
        "ports": [502],
        "start": start.isoformat().replace("+00:00", "Z"),
        "end": end.isoformat().replace("+00:00", "Z"),
        "reason": "schemathesis run",
    }
    return api.post("/api/v1/requests", body, token)


def wait_ready(base: str, ca: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            ctx = ssl.create_default_context(cafile=ca)
            with urllib.request.urlopen(base + "/readyz", context=ctx, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (OSError, ssl.SSLError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{base}/readyz did not answer within {timeout:.0f} s")
        time.sleep(0.3)


def main(argv: list[str]) -> None:
    cmd, args = (argv[1], argv[2:]) if len(argv) > 1 else ("", [])
    if cmd == "wait" and len(args) == 2:
        wait_ready(*args)
    elif cmd == "token" and len(args) == 2:
        print(load(args[0])[args[1]]["token"])
    elif cmd == "login" and len(args) >= 4:
        base, ca, state, pairs = args[0], args[1], args[2], args[3:]
        save(state, login(Api(base, ca), pairs))
    elif cmd == "step-up" and len(args) == 4:
        base, ca, state, name = args
        users = load(state)
        step_up(Api(base, ca), users[name])
        save(state, users)
    elif cmd == "request" and len(args) == 5:
        base, ca, state, name, device = args
        print(request(Api(base, ca), load(state)[name]["token"], device)["id"])
    else:
        raise SystemExit(__doc__)


def load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def save(path: str, users: dict) -> None:
    with open(path, "w") as f:
        json.dump(users, f)


if __name__ == "__main__":
    main(sys.argv)
