#!/usr/bin/env python3
"""Local OAuth2 token service for the `chatwoot-ingress watch` tests.

Stdlib only.  Listens on loopback only and speaks, with form-encoded POST
bodies and JSON answers, like the Microsoft identity platform v2 (and, on
Google's paths, like Google):

  POST /token, /{tenant}/oauth2/v2.0/token, /oauth2/token
       grant_type = client_credentials | refresh_token |
                    urn:ietf:params:oauth:grant-type:device_code
  POST /devicecode, /{tenant}/oauth2/v2.0/devicecode, /device/code
  POST /introspect  (RFC 7662, form field token; what Dovecot's oauth2 passdb
                    sends with introspection_mode = post), GET /introspect?token=
  GET  /userinfo    (Authorization: Bearer, for introspection_mode = auth)
  /admin/...        revoke, approve, deny, secret, expire, issue, config,
                    log, state (loopback clients only)

Usage:
  token-service.py --port PORT --state DIR [--config FILE.json] [options]

It prints one line when ready ("token-service ready http://127.0.0.1:PORT")
and never prints or logs secrets or tokens (GET /admin/state is the only
place a token is shown, on purpose: tests assert refresh-token rotation).
See README.md next to this file for the configuration and the admin API.
"""

import argparse
import base64
import copy
import hashlib
import hmac
import http.server
import ipaddress
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
import urllib.parse
import uuid

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
GOOGLE_DEVICE_GRANT = "http://oauth.net/grant_type/device/1.0"
GRANTS = ("client_credentials", "refresh_token", "device_code")
OIDC_SCOPES = {"openid", "profile", "email", "offline_access"}

DEFAULTS = {
    "access_token_lifetime": 3600,
    # rotate: a refresh returns a new refresh token, the old one is dead;
    # rotate-keep-old: a new one, and the old one still works (Microsoft);
    # none: no refresh_token in the answer, the old one keeps working (Google)
    "refresh_token_mode": "rotate",
    "token_format": "opaque",          # opaque | jwt (long JWT-shaped tokens)
    "jwt_min_length": 0,               # pad JWT-shaped tokens to this length
    "error_style": "microsoft",        # for /token and /devicecode: microsoft | google
    "tenant": "common",
    "device_code": {
        "expires_in": 900,
        "interval": 1,
        "auto_approve_after_polls": None,   # N: the Nth poll is approved
        "enforce_interval": False,          # slow_down when polled too fast
        "slow_down_on_polls": [],           # these poll numbers get slow_down
        "slow_down_increment": 5,           # seconds added to interval (RFC 8628)
    },
    "clients": [],
    "refresh_tokens": [],
}

MS_DESCRIPTIONS = {
    "unknown_client": "AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.",
    "bad_secret": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
    "no_secret": "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    "public_with_secret": "AADSTS700025: Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
    "grant_not_allowed": "The client '{client_id}' is not allowed to use the grant type '{grant_type}'.",
    "no_mailbox": "The client '{client_id}' has no user for client_credentials tokens.",
    "unsupported_grant": "AADSTS70003: The app requested an unsupported grant type '{grant_type}'.",
    "missing": "AADSTS900144: The request body must contain the following parameter: '{param}'.",
    "bad_scope": "AADSTS70011: The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid.",
    "rt_unknown": "AADSTS9002313: Invalid request. Request is malformed or invalid.",
    "rt_used": "AADSTS70008: The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
    "rt_revoked": "AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.",
    "rt_other_client": "AADSTS700005: Provided Authorization Code is intended to use against other tenant or client.",
    "pending": "AADSTS70016: OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
    "slow_down": "AADSTS70016: OAuth 2.0 device flow error. Polling too fast: slow down.",
    "device_expired": "AADSTS70019: Verification code expired.",
    "device_declined": "AADSTS70000: The user declined the sign-in.",
    "device_unknown": "AADSTS70000: Provided grant is invalid or malformed.",
    "device_used": "AADSTS54005: OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
}

GOOGLE_DESCRIPTIONS = {
    "unknown_client": "The OAuth client was not found.",
    "bad_secret": "Unauthorized",
    "no_secret": "client_secret is missing.",
    "public_with_secret": "Unauthorized",
    "grant_not_allowed": "Unauthorized",
    "no_mailbox": "Unauthorized",
    "unsupported_grant": "Invalid grant_type: {grant_type}",
    "missing": "Missing required parameter: {param}",
    "bad_scope": "Some requested scopes were invalid. {{invalid={scope}}}",
    "rt_unknown": "Bad Request",
    "rt_used": "Token has been expired or revoked.",
    "rt_revoked": "Token has been expired or revoked.",
    "rt_other_client": "Unauthorized",
    "pending": "Precondition Required",
    "slow_down": "Forbidden",
    "device_expired": "Expired device code.",
    "device_declined": "Forbidden",
    "device_unknown": "Malformed auth code.",
    "device_used": "Bad Request",
}


class OAuthError(Exception):
    def __init__(self, status, error, key, **fmt):
        super().__init__(error)
        self.status, self.error, self.key, self.fmt = status, error, key, fmt


def now():
    return time.time()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class State:
    """Everything the service knows; guarded by self.lock, saved to DIR/state.json."""

    def __init__(self, config, state_dir):
        self.lock = threading.RLock()
        self.dir = state_dir
        self.path = os.path.join(state_dir, "state.json")
        self.cfg = config
        self.clients = {}
        self.access = {}
        self.refresh = {}
        self.devices = {}
        self.log = []
        self.jwt_key = secrets.token_bytes(32)
        saved = None
        if os.path.exists(self.path):
            with open(self.path) as f:
                saved = json.load(f)
        if saved:
            self.clients = saved.get("clients", {})
            self.access = saved.get("access", {})
            self.refresh = saved.get("refresh", {})
            self.devices = saved.get("devices", {})
            self.jwt_key = bytes.fromhex(saved.get("jwt_key", self.jwt_key.hex()))
        for c in config["clients"]:
            if c["client_id"] not in self.clients:
                self.clients[c["client_id"]] = normalize_client(c)
        for r in config["refresh_tokens"]:
            tok = r["refresh_token"]
            if tok not in self.refresh:
                if r["client_id"] not in self.clients:
                    raise SystemExit("refresh token for unknown client %r" % r["client_id"])
                self.refresh[tok] = {
                    "client_id": r["client_id"], "username": r["username"],
                    "scope": r.get("scope", ""), "status": "active",
                    "family": uuid.uuid4().hex, "issued": now(), "seq": 0,
                }
        self.save()

    def save(self):
        data = {"clients": self.clients, "access": self.access, "refresh": self.refresh,
                "devices": self.devices, "jwt_key": self.jwt_key.hex()}
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, self.path)

    # --- tokens ---------------------------------------------------------
    def new_access_token(self, client_id, username, scope, grant, family=None, lifetime=None):
        life = int(self.cfg["access_token_lifetime"] if lifetime is None else lifetime)
        iat = int(now())
        if self.cfg["token_format"] == "jwt":
            tok = self.jwt(client_id, username, scope, iat, iat + life)
        else:
            tok = secrets.token_urlsafe(32)
        self.access[tok] = {"client_id": client_id, "username": username, "scope": scope,
                            "grant": grant, "iat": iat, "exp": iat + life,
                            "revoked": False, "family": family}
        return tok, life

    def jwt(self, client_id, username, scope, iat, exp):
        header = {"typ": "JWT", "alg": "HS256", "kid": "chatwoot-ingress-test"}
        claims = {"aud": "https://outlook.office365.com",
                  "iss": "https://sts.windows.net/%s/" % self.cfg["tenant"],
                  "iat": iat, "nbf": iat, "exp": exp, "appid": client_id,
                  "upn": username, "unique_name": username, "sub": b64url(username.encode()),
                  "scp": scope, "jti": uuid.uuid4().hex}
        pad = int(self.cfg.get("jwt_min_length") or 0)
        while True:
            head = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
            sig = b64url(hmac.new(self.jwt_key, head.encode(), hashlib.sha256).digest())
            tok = head + "." + sig
            if len(tok) >= pad:
                return tok
            claims["xms_pad"] = "x" * (len(claims.get("xms_pad", "")) + (pad - len(tok)) * 3 // 4 + 1)

    def new_refresh_token(self, client_id, username, scope, family=None, seq=0):
        tok = "rt." + secrets.token_urlsafe(48)
        self.refresh[tok] = {"client_id": client_id, "username": username, "scope": scope,
                             "status": "active", "family": family or uuid.uuid4().hex,
                             "issued": now(), "seq": seq}
        return tok

    def introspect(self, tok):
        rec = self.access.get(tok)
        if not rec or rec["revoked"] or rec["exp"] <= now():
            return {"active": False}, rec
        return {"active": True, "username": rec["username"], "email": rec["username"],
                "sub": rec["username"], "client_id": rec["client_id"], "scope": rec["scope"],
                "token_type": "Bearer", "iat": rec["iat"], "exp": rec["exp"]}, rec


def normalize_client(c):
    grants = c.get("grants") or list(GRANTS)
    grants = ["device_code" if g in (DEVICE_GRANT, GOOGLE_DEVICE_GRANT) else g for g in grants]
    for g in grants:
        if g not in GRANTS:
            raise SystemExit("client %s: unknown grant %r" % (c["client_id"], g))
    return {"client_id": c["client_id"], "client_secret": c.get("client_secret") or None,
            "username": c.get("username") or c.get("user"), "grants": grants,
            "scopes": c.get("scopes")}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "token-service/1"
    sys_version = ""

    # --- plumbing -------------------------------------------------------
    def log_message(self, fmt, *args):   # the default prints the URL (a token with ?token=)
        pass

    def send_json(self, status, obj, extra_headers=()):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Pragma", "no-cache")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def read_form(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype == "application/json":
            try:
                data = json.loads(raw or b"{}")
            except ValueError:
                data = {}
            return {k: ("" if v is None else v if isinstance(v, (str, list, dict)) else json.dumps(v))
                    for k, v in data.items()} if isinstance(data, dict) else {}, "json"
        form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in form.items()}, "form"

    def record(self, endpoint, result, status, **fields):
        st = self.server.state
        entry = {"time": round(now(), 3), "method": self.command, "endpoint": endpoint,
                 "path": urllib.parse.urlsplit(self.path).path, "status": status, "result": result}
        for k in ("grant_type", "client_id", "username", "client_auth", "scope", "user_code"):
            if fields.get(k):
                entry[k] = fields[k]
        with st.lock:
            entry["seq"] = len(st.log) + 1
            st.log.append(entry)
            with open(os.path.join(st.dir, "requests.jsonl"), "a") as f:
                f.write(json.dumps(entry) + "\n")
        if self.server.verbose:
            print("token-service: %s %s -> %s %s" % (self.command, entry["path"], status, result),
                  file=sys.stderr, flush=True)

    def oauth_error(self, exc, style, endpoint, **fields):
        table = MS_DESCRIPTIONS if style == "microsoft" else GOOGLE_DESCRIPTIONS
        fmt = dict(tenant=self.server.state.cfg["tenant"], client_id="", grant_type="", param="", scope="")
        fmt.update({k: v for k, v in exc.fmt.items() if v is not None})
        desc = table[exc.key].format(**fmt)
        body = {"error": exc.error, "error_description": desc}
        if style == "microsoft":
            trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
            ts = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
            body["error_description"] = "%s Trace ID: %s Correlation ID: %s Timestamp: %s" % (desc, trace, corr, ts)
            m = re.match(r"AADSTS(\d+)", desc)
            body.update({"error_codes": [int(m.group(1))] if m else [], "timestamp": ts,
                         "trace_id": trace, "correlation_id": corr})
            if m:
                body["error_uri"] = "https://login.microsoftonline.com/error?code=%s" % m.group(1)
        headers = ()
        if exc.status == 401:
            headers = (("WWW-Authenticate", 'Basic realm="token-service"'),)
        self.record(endpoint, exc.error, exc.status, **fields)
        self.send_json(exc.status, body, headers)

    def loopback_only(self):
        if not is_loopback(self.client_address[0]):
            self.send_json(403, {"error": "forbidden"})
            return False
        return True

    # --- routing --------------------------------------------------------
    def route(self):
        path = urllib.parse.urlsplit(self.path).path
        m = re.fullmatch(r"/([^/]+)/oauth2/v2\.0/(token|devicecode)", path)
        if m:
            return m.group(2), "microsoft"
        if path in ("/token", "/oauth2/token", "/oauth2/v2.0/token"):
            return "token", self.server.state.cfg["error_style"]
        if path in ("/devicecode", "/oauth2/v2.0/devicecode"):
            return "devicecode", self.server.state.cfg["error_style"]
        if path == "/device/code":
            return "devicecode", "google"
        if path in ("/introspect", "/userinfo"):
            return path[1:], None
        if path.startswith("/admin/"):
            return path[1:], None
        return None, None

    def do_GET(self):
        endpoint, _ = self.route()
        if endpoint == "introspect":
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            return self.introspect((q.get("token") or q.get("access_token") or [""])[0])
        if endpoint == "userinfo":
            return self.userinfo()
        if endpoint in ("admin/log", "admin/state"):
            if self.loopback_only():
                return self.admin(endpoint, {})
            return None
        self.send_json(404, {"error": "not_found"})
        return None

    def do_POST(self):
        endpoint, style = self.route()
        if endpoint is None:
            self.read_form()
            return self.send_json(404, {"error": "not_found"})
        form, kind = self.read_form()
        if endpoint == "introspect":
            return self.introspect(form.get("token", ""), form.get("client_id"))
        if endpoint.startswith("admin/"):
            if self.loopback_only():
                self.admin(endpoint, form)
            return None
        fields = {"grant_type": form.get("grant_type"), "client_id": form.get("client_id")}
        try:
            if kind != "form":
                raise OAuthError(400, "invalid_request", "missing", param="grant_type")
            with self.server.state.lock:
                if endpoint == "token":
                    status, body = self.token(form, style, fields)
                else:
                    status, body = self.devicecode(form, style, fields)
                self.server.state.save()
        except OAuthError as exc:
            return self.oauth_error(exc, style, endpoint, **fields)
        self.record(endpoint, "ok", status, **fields)
        return self.send_json(status, body)

    # --- client authentication -------------------------------------------
    def client(self, form, fields, secret="required"):
        """secret: required (confidential clients must send theirs) | optional."""
        st = self.server.state
        basic_id = basic_secret = None
        auth = self.headers.get("Authorization") or ""
        if auth[:6].lower() == "basic ":
            try:
                raw = base64.b64decode(auth[6:].strip()).decode()
                i, _, s = raw.partition(":")
                basic_id, basic_secret = urllib.parse.unquote_plus(i), urllib.parse.unquote_plus(s)
            except (ValueError, UnicodeDecodeError):
                raise OAuthError(401, "invalid_client", "bad_secret")
        cid = form.get("client_id") or basic_id
        fields["client_id"] = cid
        if basic_id is not None and form.get("client_id") and basic_id != form["client_id"]:
            raise OAuthError(401, "invalid_client", "bad_secret", client_id=cid)
        if not cid:
            raise OAuthError(400, "invalid_request", "missing", param="client_id")
        given = form.get("client_secret") if "client_secret" in form else basic_secret
        fields["client_auth"] = "basic" if basic_secret is not None else ("body" if "client_secret" in form else "none")
        c = st.clients.get(cid)
        if c is None:
            raise OAuthError(400, "unauthorized_client", "unknown_client", client_id=cid)
        if c["client_secret"] is None:
            if given:
                raise OAuthError(401, "invalid_client", "public_with_secret", client_id=cid)
        elif given is None or given == "":
            if secret == "required":
                raise OAuthError(401, "invalid_client", "no_secret", client_id=cid)
        elif not hmac.compare_digest(given.encode(), c["client_secret"].encode()):
            raise OAuthError(401, "invalid_client", "bad_secret", client_id=cid)
        return c

    def check_grant(self, c, grant):
        if grant not in c["grants"]:
            raise OAuthError(400, "unauthorized_client", "grant_not_allowed",
                             client_id=c["client_id"], grant_type=grant)

    def check_scope(self, c, scope):
        if c["scopes"] is None or not scope:
            return
        bad = [s for s in scope.split() if s not in c["scopes"] and s not in OIDC_SCOPES]
        if bad:
            raise OAuthError(400, "invalid_scope", "bad_scope", client_id=c["client_id"], scope=" ".join(bad))

    # --- endpoints ------------------------------------------------------------
    def token_answer(self, at, life, scope, rt=None):
        body = {"token_type": "Bearer", "scope": scope, "expires_in": life,
                "ext_expires_in": life, "access_token": at}
        if rt:
            body["refresh_token"] = rt
        return 200, body

    def token(self, form, style, fields):
        st = self.server.state
        grant = form.get("grant_type", "")
        if not grant:
            raise OAuthError(400, "invalid_request", "missing", param="grant_type")
        scope = form.get("scope", "")
        fields["scope"] = scope
        if grant == "client_credentials":
            c = self.client(form, fields)
            if c["client_secret"] is None:
                raise OAuthError(401, "invalid_client", "no_secret", client_id=c["client_id"])
            self.check_grant(c, "client_credentials")
            if not scope:
                raise OAuthError(400, "invalid_request", "missing", param="scope")
            self.check_scope(c, scope)
            if not c["username"]:
                raise OAuthError(400, "unauthorized_client", "no_mailbox", client_id=c["client_id"])
            fields["username"] = c["username"]
            at, life = st.new_access_token(c["client_id"], c["username"], scope, grant)
            return self.token_answer(at, life, scope)
        if grant == "refresh_token":
            c = self.client(form, fields)
            self.check_grant(c, "refresh_token")
            tok = form.get("refresh_token", "")
            if not tok:
                raise OAuthError(400, "invalid_request", "missing", param="refresh_token")
            rec = st.refresh.get(tok)
            if rec is None:
                raise OAuthError(400, "invalid_grant", "rt_unknown", client_id=c["client_id"])
            fields["username"] = rec["username"]
            if rec["client_id"] != c["client_id"]:
                raise OAuthError(400, "invalid_grant", "rt_other_client", client_id=c["client_id"])
            if rec["status"] == "revoked":
                raise OAuthError(400, "invalid_grant", "rt_revoked", client_id=c["client_id"])
            if rec["status"] == "used":
                raise OAuthError(400, "invalid_grant", "rt_used", client_id=c["client_id"])
            scope = scope or rec["scope"]
            self.check_scope(c, scope)
            at, life = st.new_access_token(c["client_id"], rec["username"], scope, grant, rec["family"])
            mode = st.cfg["refresh_token_mode"]
            new_rt = None
            if mode in ("rotate", "rotate-keep-old"):
                new_rt = st.new_refresh_token(c["client_id"], rec["username"], rec["scope"],
                                              rec["family"], rec.get("seq", 0) + 1)
                if mode == "rotate":
                    rec["status"] = "used"
            return self.token_answer(at, life, scope, new_rt)
        if grant in (DEVICE_GRANT, GOOGLE_DEVICE_GRANT):
            c = self.client(form, fields, secret="optional")
            self.check_grant(c, "device_code")
            code = form.get("device_code", "")
            if not code:
                raise OAuthError(400, "invalid_request", "missing", param="device_code")
            d = st.devices.get(code)
            if d is None or d["client_id"] != c["client_id"]:
                raise OAuthError(400, "invalid_grant", "device_unknown", client_id=c["client_id"])
            fields["user_code"] = d["user_code"]
            if d["status"] == "consumed":
                raise OAuthError(400, "invalid_grant", "device_used", client_id=c["client_id"])
            if d["expires"] <= now():
                raise OAuthError(400, "expired_token", "device_expired", client_id=c["client_id"])
            if d["status"] == "denied":
                err = "authorization_declined" if style == "microsoft" else "access_denied"
                raise OAuthError(400, err, "device_declined", client_id=c["client_id"])
            dc = st.cfg["device_code"]
            d["polls"] += 1
            last, d["last_poll"] = d.get("last_poll"), now()
            if d["polls"] in (dc.get("slow_down_on_polls") or []) or (
                    dc.get("enforce_interval") and last is not None and now() - last < d["interval"]):
                d["interval"] += int(dc.get("slow_down_increment", 5))
                raise OAuthError(400, "slow_down", "slow_down", client_id=c["client_id"])
            n = dc.get("auto_approve_after_polls")
            if d["status"] == "pending" and n is not None and d["polls"] >= int(n):
                d["status"], d["username"] = "approved", d["username"] or c["username"]
            if d["status"] != "approved":
                raise OAuthError(400, "authorization_pending", "pending", client_id=c["client_id"])
            if not d["username"]:
                raise OAuthError(400, "unauthorized_client", "no_mailbox", client_id=c["client_id"])
            d["status"] = "consumed"
            fields["username"] = d["username"]
            rt = st.new_refresh_token(c["client_id"], d["username"], d["scope"])
            at, life = st.new_access_token(c["client_id"], d["username"], d["scope"], "device_code",
                                           st.refresh[rt]["family"])
            return self.token_answer(at, life, d["scope"], rt)
        raise OAuthError(400, "unsupported_grant_type", "unsupported_grant", grant_type=grant)

    def devicecode(self, form, style, fields):
        st = self.server.state
        c = self.client(form, fields, secret="optional")
        self.check_grant(c, "device_code")
        scope = form.get("scope", "")
        fields["scope"] = scope
        self.check_scope(c, scope)
        dc = st.cfg["device_code"]
        code = "dc." + secrets.token_urlsafe(32)
        alphabet = "BCDFGHJKLMNPQRSTVWXZ"
        user_code = "".join(secrets.choice(alphabet) for _ in range(8))
        user_code = user_code[:4] + "-" + user_code[4:]
        fields["user_code"] = user_code
        st.devices[code] = {"client_id": c["client_id"], "user_code": user_code, "scope": scope,
                            "expires": now() + int(dc["expires_in"]), "status": "pending",
                            "polls": 0, "interval": int(dc["interval"]), "username": None}
        host = "http://%s:%d" % self.server.server_address[:2]
        body = {"device_code": code, "user_code": user_code,
                "verification_uri": host + "/device", "expires_in": int(dc["expires_in"]),
                "interval": int(dc["interval"]),
                "message": "To sign in, use a web browser to open the page %s/device and enter the code %s to authenticate." % (host, user_code)}
        if style == "google":
            body["verification_url"] = body["verification_uri"]
        return 200, body

    def introspect(self, tok, client_id=None):
        st = self.server.state
        with st.lock:
            answer, rec = st.introspect(tok)
        fields = {"client_id": client_id, "username": rec["username"] if rec else None}
        self.record("introspect", "active" if answer["active"] else "inactive", 200, **fields)
        self.send_json(200, answer)

    def userinfo(self):
        auth = self.headers.get("Authorization") or ""
        tok = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        with self.server.state.lock:
            answer, rec = self.server.state.introspect(tok)
        if not answer["active"]:
            self.record("userinfo", "inactive", 401, username=rec["username"] if rec else None)
            return self.send_json(401, {"error": {"code": "InvalidAuthenticationToken",
                                                  "message": "Access token has expired or is not yet valid."}},
                                  (("WWW-Authenticate", 'Bearer error="invalid_token"'),))
        self.record("userinfo", "active", 200, username=rec["username"])
        return self.send_json(200, {"mail": rec["username"], "email": rec["username"],
                                    "userPrincipalName": rec["username"], "username": rec["username"],
                                    "active": True})

    # --- admin ----------------------------------------------------------------
    def admin(self, endpoint, form):
        st = self.server.state
        name = endpoint[len("admin/"):]
        truthy = lambda v: str(v).lower() in ("1", "true", "yes", "on")
        with st.lock:
            if name == "log" and self.command == "GET":
                out = list(st.log)
                self.send_json(200, out)
                return
            if name == "log/clear":
                st.log.clear()
                status, body = 200, {"cleared": True}
            elif name == "state":
                body = {"users": {}, "clients": {}, "devices": []}
                for tok, r in sorted(st.refresh.items(), key=lambda kv: (kv[1]["issued"], kv[1].get("seq", 0))):
                    u = body["users"].setdefault(r["username"], {"refresh_token": None, "refresh_tokens": [],
                                                                  "access_tokens_active": 0})
                    if r["status"] == "active":
                        u["refresh_token"] = tok
                        u["refresh_tokens"].append(tok)
                        u["client_id"] = r["client_id"]
                for tok, a in st.access.items():
                    u = body["users"].setdefault(a["username"], {"refresh_token": None, "refresh_tokens": [],
                                                                  "access_tokens_active": 0})
                    if not a["revoked"] and a["exp"] > now():
                        u["access_tokens_active"] += 1
                for cid, c in st.clients.items():
                    body["clients"][cid] = {"username": c["username"], "grants": c["grants"],
                                            "public": c["client_secret"] is None, "scopes": c["scopes"]}
                for d in st.devices.values():
                    body["devices"].append({"user_code": d["user_code"], "client_id": d["client_id"],
                                            "status": d["status"], "polls": d["polls"],
                                            "interval": d["interval"], "username": d["username"]})
                body["config"] = {k: st.cfg[k] for k in ("access_token_lifetime", "refresh_token_mode",
                                                         "token_format", "device_code")}
                self.send_json(200, body)
                return
            elif name == "revoke":
                status, body = 200, self.revoke(form, truthy)
            elif name in ("approve", "deny"):
                code = re.sub(r"[^A-Z0-9]", "", str(form.get("user_code", "")).upper())
                found = [d for d in st.devices.values()
                         if re.sub(r"[^A-Z0-9]", "", d["user_code"]) == code and d["status"] == "pending"]
                if not found:
                    status, body = 404, {"error": "no pending device code with that user_code"}
                else:
                    d = found[0]
                    if name == "approve":
                        d["status"] = "approved"
                        d["username"] = form.get("username") or st.clients[d["client_id"]]["username"]
                    else:
                        d["status"] = "denied"
                    status, body = 200, {("approved" if name == "approve" else "denied"): True, "user_code": d["user_code"], "username": d["username"]}
            elif name == "secret":
                c = st.clients.get(form.get("client_id", ""))
                if c is None:
                    status, body = 404, {"error": "unknown client"}
                else:
                    c["client_secret"] = form.get("client_secret") or None
                    status, body = 200, {"changed": True, "client_id": c["client_id"]}
            elif name == "expire":
                n = 0
                for a in st.access.values():
                    if self.matches(a, form, truthy) and a["exp"] > now():
                        a["exp"] = int(now()) - 1
                        n += 1
                status, body = 200, {"expired": n}
            elif name == "issue":
                u = form.get("username", "")
                cid = form.get("client_id") or "admin"
                if not u:
                    status, body = 400, {"error": "username required"}
                else:
                    life = form.get("lifetime")
                    at, life = st.new_access_token(cid, u, form.get("scope", ""), "admin",
                                                   lifetime=int(life) if life else None)
                    body = {"access_token": at, "expires_in": life, "token_type": "Bearer"}
                    if truthy(form.get("refresh_token", "")) and cid in st.clients:
                        body["refresh_token"] = st.new_refresh_token(cid, u, form.get("scope", ""))
                    status = 200
            elif name == "config":
                for k in ("access_token_lifetime", "refresh_token_mode", "token_format", "jwt_min_length",
                          "error_style"):
                    if k in form:
                        v = form[k]
                        st.cfg[k] = int(v) if k in ("access_token_lifetime", "jwt_min_length") else v
                if "device_code" in form:
                    dcv = form["device_code"]
                    st.cfg["device_code"].update(json.loads(dcv) if isinstance(dcv, str) else dcv)
                if "clients" in form:
                    cl = form["clients"]
                    for c in (json.loads(cl) if isinstance(cl, str) else cl):
                        st.clients[c["client_id"]] = normalize_client(c)
                status, body = 200, {"config": {k: st.cfg[k] for k in ("access_token_lifetime",
                                     "refresh_token_mode", "token_format", "device_code")}}
            else:
                status, body = 404, {"error": "unknown admin endpoint"}
            st.save()
        self.record(endpoint, "ok" if status == 200 else "error", status,
                    client_id=form.get("client_id"), username=form.get("username"))
        self.send_json(status, body)

    @staticmethod
    def matches(rec, form, truthy):
        if truthy(form.get("all", "")):
            return True
        if form.get("client_id") and rec["client_id"] == form["client_id"]:
            return True
        if form.get("username") and rec["username"] == form["username"]:
            return True
        return False

    def revoke(self, form, truthy):
        st = self.server.state
        rts = ats = 0
        tok = form.get("refresh_token")
        families = set()
        if tok:
            rec = st.refresh.get(tok)
            if rec is None:
                return {"revoked_refresh_tokens": 0, "revoked_access_tokens": 0, "error": "unknown refresh token"}
            families.add(rec["family"])
            for r in st.refresh.values():     # the whole rotation chain of this grant
                if r["family"] == rec["family"] and r["status"] != "revoked":
                    r["status"] = "revoked"
                    rts += 1
            if truthy(form.get("access_tokens", "")):
                for a in st.access.values():
                    if a.get("family") in families and not a["revoked"]:
                        a["revoked"] = True
                        ats += 1
        else:
            if not (form.get("client_id") or form.get("username") or truthy(form.get("all", ""))):
                return {"error": "give refresh_token, client_id, username or all=1"}
            for r in st.refresh.values():
                if self.matches(r, form, truthy) and r["status"] != "revoked":
                    r["status"] = "revoked"
                    rts += 1
            if truthy(form.get("access_tokens", "1")):
                for a in st.access.values():
                    if self.matches(a, form, truthy) and not a["revoked"]:
                        a["revoked"] = True
                        ats += 1
        return {"revoked_refresh_tokens": rts, "revoked_access_tokens": ats}


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, state, verbose):
        import socket
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, Handler)
        self.state = state
        self.verbose = verbose


def parse_args(argv):
    p = argparse.ArgumentParser(description="Local OAuth2 token service for the IMAP watch tests.")
    p.add_argument("--port", type=int, default=None, help="TCP port on 127.0.0.1 (0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    p.add_argument("--state", required=True, help="directory for state.json, requests.jsonl, port, pid")
    p.add_argument("--config", help="JSON configuration file (see README.md)")
    p.add_argument("--access-token-lifetime", type=int, help="seconds")
    p.add_argument("--refresh-token-mode", choices=("rotate", "rotate-keep-old", "none"))
    p.add_argument("--token-format", choices=("opaque", "jwt"))
    p.add_argument("--client", action="append", default=[], metavar="ID:SECRET:USER[:GRANTS]",
                   help="add a client (empty SECRET: public client; GRANTS comma-separated)")
    p.add_argument("--refresh-token", action="append", default=[], metavar="CLIENT_ID:USER:TOKEN",
                   help="pre-issue a refresh token")
    p.add_argument("--device-interval", type=int)
    p.add_argument("--device-auto-approve", type=int, metavar="N", help="approve on the Nth poll")
    p.add_argument("--verbose", action="store_true", help="one line per request on stderr (no secrets)")
    return p.parse_args(argv)


def load_config(args):
    cfg = copy.deepcopy(DEFAULTS)
    if args.config:
        with open(args.config) as f:
            user = json.load(f)
        dc = user.pop("device_code", None) or {}
        cfg.update(user)
        cfg["device_code"] = dict(DEFAULTS["device_code"], **dc)
        if args.port is None and "port" in user:
            args.port = int(user["port"])
    if args.access_token_lifetime is not None:
        cfg["access_token_lifetime"] = args.access_token_lifetime
    if args.refresh_token_mode:
        cfg["refresh_token_mode"] = args.refresh_token_mode
    if args.token_format:
        cfg["token_format"] = args.token_format
    if args.device_interval is not None:
        cfg["device_code"]["interval"] = args.device_interval
    if args.device_auto_approve is not None:
        cfg["device_code"]["auto_approve_after_polls"] = args.device_auto_approve
    cfg["clients"] = list(cfg["clients"])
    for spec in args.client:
        parts = spec.split(":")
        if len(parts) < 3:
            raise SystemExit("--client wants ID:SECRET:USER[:GRANTS]")
        c = {"client_id": parts[0], "client_secret": parts[1] or None, "username": parts[2] or None}
        if len(parts) > 3 and parts[3]:
            c["grants"] = parts[3].split(",")
        cfg["clients"].append(c)
    cfg["refresh_tokens"] = list(cfg["refresh_tokens"])
    for spec in args.refresh_token:
        cid, user, tok = spec.split(":", 2)
        cfg["refresh_tokens"].append({"client_id": cid, "username": user, "refresh_token": tok})
    if cfg["refresh_token_mode"] not in ("rotate", "rotate-keep-old", "none"):
        raise SystemExit("refresh_token_mode must be rotate, rotate-keep-old or none")
    if args.port is None:
        raise SystemExit("--port (or \"port\" in the config file) is required")
    return cfg


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    if not is_loopback(args.host):
        raise SystemExit("token-service listens on loopback addresses only")
    cfg = load_config(args)
    os.makedirs(args.state, exist_ok=True)
    state = State(cfg, args.state)
    srv = Server((args.host, args.port), state, args.verbose)
    port = srv.server_address[1]
    with open(os.path.join(args.state, "port"), "w") as f:
        f.write("%d\n" % port)
    with open(os.path.join(args.state, "pid"), "w") as f:
        f.write("%d\n" % os.getpid())

    def stop(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    host = "[%s]" % args.host if ":" in args.host else args.host
    print("token-service ready http://%s:%d" % (host, port), flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
        try:
            os.unlink(os.path.join(args.state, "pid"))
        except OSError:
            pass


if __name__ == "__main__":
    main()
