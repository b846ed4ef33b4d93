#!/usr/bin/env python3
"""Local Microsoft Graph mail service for the `chatwoot-ingress watch` tests.

Stdlib only.  Listens on loopback only and answers, as Microsoft documents
them (microsoftgraph/microsoft-graph-docs-contrib, cited below by path), the
calls a mail fetcher makes:

  POST /{tenant}/oauth2/v2.0/token        client credentials (Microsoft identity platform v2)
  GET  /v1.0/users/{u}/mailFolders        (+ /{id}, /{id}/childFolders), POST to create
  GET  /v1.0/users/{u}/mailFolders/{f}/messages/delta     change tracking per folder
  GET  /v1.0/users/{u}/messages/{id}      (+ /$value for the MIME bytes)
  PATCH /v1.0/users/{u}/messages/{id}     {"isRead": true}
  POST /v1.0/users/{u}/messages/{id}/move {"destinationId": ...}
  /admin/...                              mailbox contents, faults, tokens, config, log
                                          (loopback clients only)

with Outlook's throttling (4 concurrent requests and 10,000 requests per
10 minutes per app and mailbox) and faults on request.

Usage:
  graph-service.py --port PORT [--config FILE.json] [--state DIR] [options]

It prints one line when ready ("graph-service ready http://127.0.0.1:PORT")
and never prints or logs secrets or tokens (the token endpoint's answer and
POST /admin/issue are the only places a token is shown).  README.md next to
this file describes the configuration, the admin API and what each answer
follows.
"""

import argparse
import base64
import bisect
import copy
import email.header
import email.parser
import email.policy
import email.utils
import hashlib
import hmac
import http.server
import ipaddress
import json
import math
import os
import re
import secrets
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
import uuid

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"   # Microsoft Graph's application id
MAIL_READ = {"Mail.Read", "Mail.ReadWrite"}
MAIL_WRITE = {"Mail.ReadWrite"}

# Well-known folder names usable wherever a folder id is
# (api-reference/v1.0/resources/mailfolder.md, "Use well-known folder names";
# matched case-insensitively).  These are the ones every mailbox has here.
WELL_KNOWN = {
    "msgfolderroot": "Top of Information Store",
    "inbox": "Inbox",
    "drafts": "Drafts",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "junkemail": "Junk Email",
    "outbox": "Outbox",
    "archive": "Archive",
    "conversationhistory": "Conversation History",
}

DEFAULTS = {
    "access_token_lifetime": 3600,
    # the resources a client-credentials scope may name ("<resource>/.default")
    "graph_resources": ["https://graph.microsoft.com", GRAPH_APP_ID],
    # concepts/throttling-limits.md, "Outlook service limits": 4 concurrent
    # requests and 10,000 requests per 10 minutes per app ID and mailbox.
    # (One revision of that page puts the concurrency limit per app ID across
    # mailboxes: concurrency_scope "app" models that.)
    "concurrency_limit": 4,
    "concurrency_scope": "mailbox",      # mailbox | app
    "concurrency_status": 429,
    "concurrency_retry_after": 1,
    "rate_limit": 10000,
    "rate_window": 600,
    "latency": 0.0,                      # seconds added to every Graph request, in flight
    # delta (concepts/delta-query-messages.md)
    "delta_page_size": 10,               # without Prefer: odata.maxpagesize
    "max_page_size": 1000,
    "delta_order": "newest",             # newest | oldest (the doc guarantees no order)
    "delta_empty_pages": False,          # an empty page with a nextLink before the last one
    "duplicates": "none",                # none | within | replay (concepts/delta-query-overview.md)
    "delta_tokens_kept": None,           # N: only the N newest delta links of a folder stay valid
    "folder_page_size": 10,              # api-reference/v1.0/api/user-list-mailfolders.md
    "public_url": None,                  # base of @odata.nextLink/deltaLink (default: our address)
    "tenants": [],
}

# Answers of the Microsoft identity platform (the same wording as
# tests/interop/imap/token-service.py, which follows Microsoft's).
AAD = {
    "tenant": "AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.",
    "unknown_client": "AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
    "bad_secret": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
    "no_secret": "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    "missing": "AADSTS900144: The request body must contain the following parameter: '{param}'.",
    "unsupported_grant": "AADSTS70003: The app requested an unsupported grant type '{grant_type}'.",
    "scope_not_default": "AADSTS1002012: The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
    "unknown_resource": "AADSTS500011: The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
}

ID_RE = re.compile(r"^[A-Za-z0-9_=-]+$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")    # our $skiptoken/$deltatoken shape


def now():
    return time.time()


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def new_id(prefix):
    # Outlook REST ids are URL-safe base64 ('-', '_') with '=' padding;
    # case matters (concepts/outlook-immutable-id.md).
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(33)).decode() + "="


def truthy(v):
    return v is True or str(v).lower() in ("1", "true", "yes", "on")


class GraphError(Exception):
    """An answer in Graph's error format (concepts/errors.md)."""

    def __init__(self, status, code, message, headers=()):
        super().__init__(code)
        self.status, self.code, self.message, self.headers = status, code, message, list(headers)


class OAuthError(Exception):
    def __init__(self, status, error, key, **fmt):
        super().__init__(error)
        self.status, self.error, self.key, self.fmt = status, error, key, fmt


# --- the model -------------------------------------------------------------

class Folder:
    def __init__(self, fid, name, parent, well_known=None, hidden=False):
        self.id, self.name, self.parent, self.well_known, self.hidden = fid, name, parent, well_known, hidden


class Message:
    def __init__(self, imm, rest, folder, raw, is_read, received):
        self.imm, self.rest, self.folder, self.raw = imm, rest, folder, raw
        self.is_read, self.received, self.created, self.modified = is_read, received, received, received
        self.change_key = b64url(secrets.token_bytes(12))
        self.meta = headers_of(raw)


def headers_of(raw):
    """What the JSON representation shows of the MIME headers; anything goes
    (a non-email is stored and served like any other message)."""
    meta = {"subject": "", "internetMessageId": None, "from": None, "to": [], "cc": [],
            "sent": None, "multipart": False}
    try:
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw, headersonly=True)

        def text(name):
            v = msg.get(name)
            if v is None:
                return None
            try:
                return str(email.header.make_header(email.header.decode_header(str(v))))
            except Exception:
                return str(v)

        def addrs(name):
            return [{"emailAddress": {"name": n or a, "address": a}}
                    for n, a in email.utils.getaddresses([text(name) or ""]) if a]

        meta["subject"] = text("Subject") or ""
        meta["internetMessageId"] = (text("Message-ID") or "").strip() or None
        frm = addrs("From")
        meta["from"] = frm[0] if frm else None
        meta["to"], meta["cc"] = addrs("To"), addrs("Cc")
        date = text("Date")
        if date:
            meta["sent"] = email.utils.parsedate_to_datetime(date).timestamp()
        meta["multipart"] = (msg.get_content_type() or "").startswith("multipart/mixed")
    except Exception:
        pass
    return meta


class Mailbox:
    def __init__(self, tenant, upn, oid=None, apps=None):
        self.tenant, self.upn = tenant, upn
        self.id = oid or str(uuid.uuid4())
        self.apps = apps                 # client ids the app RBAC scope allows; None: every app
        self.folders = {}
        self.by_well_known = {}
        self.messages = {}               # immutable id -> Message
        self.by_rest = {}                # current REST id -> immutable id
        self.history = {}                # immutable id -> [(seq, folder id or None, REST id)]
        self.events = []                 # (seq, folder id, immutable id), seq ascending
        self.ev_seqs = []
        self.seq = 0
        root_parent = new_id("AQMkAD")   # the hidden "Root", never listed
        for wk, name in WELL_KNOWN.items():
            parent = None if wk == "msgfolderroot" else self.by_well_known["msgfolderroot"].id
            f = Folder(new_id("AQMkAD"), name, parent or root_parent, wk, hidden=(wk == "msgfolderroot"))
            self.folders[f.id] = f
            self.by_well_known[wk] = f

    # events feed the delta query
    def event(self, folder, imm, rest):
        self.seq += 1
        self.events.append((self.seq, folder, imm))
        self.ev_seqs.append(self.seq)
        return self.seq

    def place(self, msg, folder):
        """Puts msg in folder (None: deleted) and records it for delta."""
        old = msg.folder
        if old is not None:
            self.event(old, msg.imm, msg.rest)
        if folder is None:
            self.messages.pop(msg.imm, None)
            self.by_rest.pop(msg.rest, None)
        else:
            msg.folder = folder
            self.event(folder, msg.imm, msg.rest)
        self.history.setdefault(msg.imm, []).append((self.seq, folder, msg.rest))

    def touch(self, msg):
        msg.modified = now()
        msg.change_key = b64url(secrets.token_bytes(12))
        self.event(msg.folder, msg.imm, msg.rest)

    def add(self, raw, folder, is_read=False, received=None):
        imm, rest = new_id("AAkALgAA"), new_id("AAMkAG")
        msg = Message(imm, rest, None, raw, bool(is_read), received or now())
        self.messages[imm] = msg
        self.by_rest[rest] = imm
        self.place(msg, folder)
        return msg

    def move(self, msg, folder):
        if folder == msg.folder:
            return
        # concepts/outlook-immutable-id.md: the REST id changes on a move,
        # the immutable id does not.
        self.by_rest.pop(msg.rest, None)
        msg.rest = new_id("AAMkAG")
        self.by_rest[msg.rest] = msg.imm
        msg.modified = now()
        self.place(msg, folder)

    def placement_at(self, imm, seq):
        folder = rest = None
        for s, f, r in self.history.get(imm, ()):
            if s > seq:
                break
            folder, rest = f, r
        return folder, rest

    def changes_since(self, fid, since, change_type):
        """(kind, immutable id, REST id then) for what changed in folder fid
        after seq `since`: added, updated, removed."""
        start = bisect.bisect_right(self.ev_seqs, since)
        touched = {}
        for _, f, imm in self.events[start:]:
            if f == fid:
                touched[imm] = True
        out = []
        for imm in touched:
            was, rest_then = self.placement_at(imm, since)
            m = self.messages.get(imm)
            now_in = m is not None and m.folder == fid
            if was == fid and now_in:
                if rest_then != m.rest:    # moved out and back: another REST id
                    out.append(("removed", imm, rest_then))
                    out.append(("added", imm, None))
                else:
                    out.append(("updated", imm, None))
            elif now_in:
                out.append(("added", imm, None))
            elif was == fid:
                out.append(("removed", imm, rest_then))
        if change_type:
            want = {"created": "added", "updated": "updated", "deleted": "removed"}[change_type]
            out = [e for e in out if e[0] == want]
        return out

    def children(self, parent_id, hidden=False):
        return sorted((f for f in self.folders.values() if f.parent == parent_id and (hidden or not f.hidden)),
                      key=lambda f: f.name.lower())

    def path_of(self, f):
        parts = []
        root = self.by_well_known["msgfolderroot"].id
        while f is not None and f.id != root:
            parts.append(f.name)
            f = self.folders.get(f.parent)
        return "/".join(reversed(parts))


class State:
    """Everything the service knows; guarded by self.lock."""

    def __init__(self, cfg, state_dir):
        self.lock = threading.RLock()
        self.cfg = cfg
        self.dir = state_dir
        self.jwt_key = secrets.token_bytes(32)
        self.tenants = {}           # tenant id -> {"id", "domains", "apps": {client_id: app}}
        self.mailboxes = {}         # upn (lower case) -> Mailbox
        self.by_oid = {}
        self.tokens = {}            # access token -> record
        self.rounds = {}            # $skiptoken / $deltatoken -> delta state
        self.delta_links = {}       # (upn, folder id) -> [delta tokens, oldest first]
        self.faults = []
        self.inflight = {}
        self.max_inflight = {}
        self.rate = {}
        self.log = []
        for t in cfg["tenants"]:
            self.add_tenant(t)

    def add_tenant(self, t):
        tid = t["id"]
        ten = self.tenants.setdefault(tid, {"id": tid, "domains": [], "apps": {}})
        ten["domains"] = sorted(set(ten["domains"]) | {d.lower() for d in t.get("domains", [])})
        for a in t.get("apps", []):
            self.add_app(tid, a)
        for m in t.get("mailboxes", []):
            self.add_mailbox(tid, m)

    def add_app(self, tid, a):
        ten = self.tenants.setdefault(tid, {"id": tid, "domains": [], "apps": {}})
        ten["apps"][a["client_id"]] = {
            "client_id": a["client_id"], "client_secret": a.get("client_secret"),
            "roles": list(a.get("roles", ["Mail.ReadWrite"])),
            "access_token_lifetime": a.get("access_token_lifetime"),
            "display_name": a.get("display_name", a["client_id"])}

    def add_mailbox(self, tid, m):
        upn = m["upn"]
        old = self.mailboxes.get(upn.lower())
        if old is not None:
            old.apps = m.get("apps", old.apps)
            return old
        mb = Mailbox(tid, upn, m.get("id"), m.get("apps"))
        self.mailboxes[upn.lower()] = mb
        self.by_oid[mb.id.lower()] = mb
        return mb

    def tenant(self, name):
        name = name.lower()
        for t in self.tenants.values():
            if t["id"].lower() == name or name in t["domains"]:
                return t
        return None

    def issue(self, tid, app, lifetime=None, user=None, roles=None):
        life = int(lifetime if lifetime is not None else
                   app.get("access_token_lifetime") or self.cfg["access_token_lifetime"])
        iat = int(now())
        # An app-only Graph token (v1 format): aud, iss, tid, appid, roles.
        claims = {"aud": "https://graph.microsoft.com", "iss": "https://sts.windows.net/%s/" % tid,
                  "iat": iat, "nbf": iat, "exp": iat + life, "appid": app["client_id"],
                  "app_displayname": app["display_name"], "tid": tid, "ver": "1.0",
                  "uti": b64url(secrets.token_bytes(16))}
        if user is None:
            claims.update({"idtyp": "app", "roles": list(app["roles"] if roles is None else roles),
                           "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, app["client_id"])),
                           "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, app["client_id"]))})
        else:
            claims.update({"idtyp": "user", "scp": " ".join(app["roles"] if roles is None else roles),
                           "upn": user, "unique_name": user})
        header = {"typ": "JWT", "alg": "HS256", "kid": "graph-service-test"}
        head = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        tok = head + "." + b64url(hmac.new(self.jwt_key, head.encode(), hashlib.sha256).digest())
        self.tokens[tok] = {"tenant": tid, "client_id": app["client_id"], "user": user,
                            "roles": set(claims.get("roles") or claims.get("scp", "").split()),
                            "exp": iat + life, "revoked": False}
        return tok, life

    def record(self, entry):
        with self.lock:
            entry["seq"] = len(self.log) + 1
            self.log.append(entry)
            if self.dir:
                with open(os.path.join(self.dir, "requests.jsonl"), "a") as f:
                    f.write(json.dumps(entry) + "\n")


# --- HTTP --------------------------------------------------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle's algorithm a
    # kept-alive connection would wait for the client's delayed ACK (40 ms)
    # on every answer, which Graph does not.
    disable_nagle_algorithm = True
    server_version = "graph-service/1"
    sys_version = ""

    def log_message(self, fmt, *args):     # the default prints request lines
        pass

    @property
    def st(self):
        return self.server.state

    # plumbing ------------------------------------------------------------
    def read_body(self):
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, status, body, ctype, headers=(), reset_after=None, stall=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if reset_after is not None:
            self.wfile.write(body[:reset_after])
            self.wfile.flush()
            self.reset()
            return
        if stall is not None:
            cut, seconds = stall
            self.wfile.write(body[:cut])
            self.wfile.flush()
            time.sleep(seconds)
            body = body[cut:]
        # The client may send its next request as soon as this one's last
        # bytes arrive: from here it no longer counts as in flight.
        self.release()
        self.wfile.write(body)

    def release(self):
        """Ends this request's count in flight, once."""
        key, self.inflight_key = getattr(self, "inflight_key", None), None
        if key is not None:
            with self.st.lock:
                self.st.inflight[key] -= 1

    def reset(self):
        """Drops the connection with a TCP RST (SO_LINGER 0)."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def request_ids(self):
        rid = str(uuid.uuid4())
        return rid, self.headers.get("client-request-id") or rid

    def graph_headers(self, rid, crid):
        return [("request-id", rid), ("client-request-id", crid),
                ("x-ms-ags-diagnostic", json.dumps({"ServerInfo": {"DataCenter": "Loopback", "Slice": "E",
                                                                   "Ring": "0", "ScaleUnit": "000",
                                                                   "RoleInstance": "LO0PBACK"}})),
                ("Cache-Control", "no-cache"), ("Strict-Transport-Security", "max-age=31536000")]

    def send_graph_json(self, status, obj, ctx, extra=()):
        body = json.dumps(obj).encode()
        ctx["bytes"] = len(body)
        self.send(status, body, "application/json;odata.metadata=minimal;odata.streaming=true;"
                  "IEEE754Compatible=false;charset=utf-8",
                  self.graph_headers(ctx["rid"], ctx["crid"]) + list(extra))

    def send_graph_error(self, err, ctx):
        # concepts/errors.md: {"error": {"code", "message", "innerError": {...}}}
        ctx["status"], ctx["code"] = err.status, err.code
        body = {"error": {"code": err.code, "message": err.message,
                          "innerError": {"date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
                                         "request-id": ctx["rid"], "client-request-id": ctx["crid"]}}}
        self.send_graph_json(err.status, body, ctx, err.headers)

    def loopback_only(self):
        if not is_loopback(self.client_address[0]):
            self.send(403, b'{"error":"forbidden"}', "application/json")
            return False
        return True

    # dispatch ------------------------------------------------------------
    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method):
        body = self.read_body()
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        if path.startswith("/admin/"):
            if self.loopback_only():
                self.admin(method, path[len("/admin/"):], split.query, body)
            return
        m = re.fullmatch(r"/([^/]+)/oauth2/v2\.0/token", path)
        if m:
            return self.token_endpoint(method, urllib.parse.unquote(m.group(1)), body)
        if re.match(r"/(v1\.0|beta)(/|$)", path):
            return self.graph(method, path, split.query, body)
        self.send(404, b'{"error":"not_found"}', "application/json")
        return None

    # token endpoint ------------------------------------------------------------
    def token_endpoint(self, method, tenant_name, raw):
        entry = {"time": round(now(), 3), "method": method, "endpoint": "token",
                 "path": urllib.parse.urlsplit(self.path).path, "tenant": tenant_name}
        try:
            if method != "POST":
                raise OAuthError(400, "invalid_request", "missing", param="grant_type")
            form = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode("utf-8", "replace"),
                                                                keep_blank_values=True).items()}
            basic_id = basic_secret = None
            auth = self.headers.get("Authorization") or ""
            if auth[:6].lower() == "basic ":
                try:
                    i, _, s = base64.b64decode(auth[6:].strip()).decode().partition(":")
                    basic_id, basic_secret = urllib.parse.unquote_plus(i), urllib.parse.unquote_plus(s)
                except (ValueError, UnicodeDecodeError):
                    raise OAuthError(401, "invalid_client", "bad_secret")
            with self.st.lock:
                ten = self.st.tenant(tenant_name)
                if ten is None:
                    raise OAuthError(400, "invalid_request", "tenant", tenant=tenant_name)
                grant = form.get("grant_type", "")
                if not grant:
                    raise OAuthError(400, "invalid_request", "missing", param="grant_type")
                if grant != "client_credentials":
                    raise OAuthError(400, "unsupported_grant_type", "unsupported_grant", grant_type=grant)
                cid = form.get("client_id") or basic_id
                if not cid:
                    raise OAuthError(400, "invalid_request", "missing", param="client_id")
                entry["client_id"] = cid
                app = ten["apps"].get(cid)
                if app is None:
                    raise OAuthError(400, "unauthorized_client", "unknown_client", client_id=cid, tenant=ten["id"])
                given = form.get("client_secret") if "client_secret" in form else basic_secret
                if not given:
                    raise OAuthError(401, "invalid_client", "no_secret", client_id=cid)
                if not app["client_secret"] or not hmac.compare_digest(given.encode(), app["client_secret"].encode()):
                    raise OAuthError(401, "invalid_client", "bad_secret", client_id=cid)
                scope = form.get("scope", "")
                if not scope:
                    raise OAuthError(400, "invalid_request", "missing", param="scope")
                entry["scope"] = scope
                if len(scope.split()) != 1 or not scope.endswith("/.default"):
                    raise OAuthError(400, "invalid_scope", "scope_not_default", scope=scope)
                resource = scope[:-len("/.default")]
                if resource not in self.st.cfg["graph_resources"]:
                    raise OAuthError(400, "invalid_resource", "unknown_resource", resource=resource, tenant=ten["id"])
                tok, life = self.st.issue(ten["id"], app)
        except OAuthError as exc:
            return self.oauth_error(exc, tenant_name, entry)
        entry["status"] = 200
        self.st.record(entry)
        self.verbose(entry)
        body = {"token_type": "Bearer", "expires_in": life, "ext_expires_in": life, "access_token": tok}
        self.send(200, json.dumps(body).encode(), "application/json; charset=utf-8",
                  (("Cache-Control", "no-store, no-cache"), ("Pragma", "no-cache")))
        return None

    def oauth_error(self, exc, tenant_name, entry):
        fmt = dict(tenant=tenant_name, client_id="", grant_type="", param="", scope="", resource="")
        fmt.update({k: v for k, v in exc.fmt.items() if v is not None})
        desc = AAD[exc.key].format(**fmt)
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        ts = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
        code = re.match(r"AADSTS(\d+)", desc)
        body = {"error": exc.error,
                "error_description": "%s Trace ID: %s Correlation ID: %s Timestamp: %s" % (desc, trace, corr, ts),
                "error_codes": [int(code.group(1))] if code else [], "timestamp": ts,
                "trace_id": trace, "correlation_id": corr}
        if code:
            body["error_uri"] = "https://login.microsoftonline.com/error?code=%s" % code.group(1)
        entry.update({"status": exc.status, "code": exc.error})
        if code:
            entry["aadsts"] = int(code.group(1))
        self.st.record(entry)
        self.verbose(entry)
        self.send(exc.status, json.dumps(body).encode(), "application/json; charset=utf-8",
                  (("Cache-Control", "no-store, no-cache"), ("Pragma", "no-cache")))

    def verbose(self, entry):
        if self.server.verbose:
            print("graph-service: %s %s -> %s %s" % (entry["method"], entry["path"], entry.get("status"),
                                                    entry.get("code") or ""), file=sys.stderr, flush=True)

    # Graph ---------------------------------------------------------------------
    def prefer(self):
        out = {}
        for h in self.headers.get_all("Prefer") or []:
            for part in h.split(","):
                k, _, v = part.strip().partition("=")
                if k:
                    out[k.strip().lower()] = v.strip().strip('"')
        return out

    def graph(self, method, path, query, body):
        rid, crid = self.request_ids()
        arrival = now()
        prefer = self.prefer()
        ctx = {"rid": rid, "crid": crid, "status": None, "code": None, "bytes": 0}
        entry = {"time": round(arrival, 3), "method": method, "path": urllib.parse.unquote(path),
                 "endpoint": None, "mailbox": None, "app": None, "concurrency": None, "fault": None,
                 "immutable": prefer.get("idtype", "").lower() == "immutableid"}
        if "odata.maxpagesize" in prefer:
            entry["maxpagesize"] = prefer["odata.maxpagesize"]
        try:
            try:
                route = self.route(method, path)
                entry["endpoint"] = route["endpoint"]
                if "$deltatoken" in query.lower():
                    entry["delta"] = "deltatoken"
                elif "$skiptoken" in query.lower():
                    entry["delta"] = "skiptoken"
                elif route["endpoint"] == "delta":
                    entry["delta"] = "initial"
                with self.st.lock:
                    tok = self.authenticate()
                    entry["app"] = tok["client_id"]
                    mb = self.mailbox(route, tok)
                    entry["mailbox"] = mb.upn
                    self.authorize(route, tok, mb)
                    key = (tok["client_id"],) if self.st.cfg["concurrency_scope"] == "app" else (tok["client_id"], mb.upn.lower())
                    n = self.st.inflight.get(key, 0) + 1
                    self.st.inflight[key] = n
                    self.inflight_key = key
                    self.st.max_inflight[key] = max(n, self.st.max_inflight.get(key, 0))
                    entry["concurrency"] = n
                    self.limits(key, n)
                    fault = self.take_fault(method, entry, route, query)
                self.apply_fault(fault, entry, ctx)
                if self.st.cfg["latency"]:
                    time.sleep(float(self.st.cfg["latency"]))
                self.serve(method, route, query, body, tok, mb, entry, ctx, fault)
            except GraphError as err:
                self.send_graph_error(err, ctx)
        except (BrokenPipeError, ConnectionResetError, OSError) as exc:
            ctx["status"] = ctx["status"] or "aborted"
            entry["error"] = type(exc).__name__
        finally:
            self.release()
            entry.update({"status": ctx["status"], "done": round(now(), 3), "bytes": ctx["bytes"]})
            if ctx["code"]:
                entry["code"] = ctx["code"]
            self.st.record(entry)
            self.verbose(entry)

    def route(self, method, path):
        """Splits /v1.0/users/{u}/... into what is asked.  Segment names are
        matched case-insensitively; keys come as /{key} or ('{key}') (the
        form of the nextLink/deltaLink in concepts/delta-query-messages.md)."""
        segs = []
        for raw in path.split("/")[2:]:
            if raw == "":
                continue
            seg = urllib.parse.unquote(raw)
            m = re.fullmatch(r"([A-Za-z.$]+)\('(.*)'\)", seg, re.S)
            if m:
                segs.append(m.group(1))
                segs.append(m.group(2).replace("''", "'"))
            else:
                segs.append(seg)
        if not segs:
            raise GraphError(400, "BadRequest", "Invalid request.")
        r = {"endpoint": None, "user": None, "me": False}
        if segs[0].lower() == "users" and len(segs) >= 2:
            r["user"], rest = segs[1], segs[2:]
        elif segs[0].lower() == "me":
            r["me"], rest = True, segs[1:]
        else:
            raise GraphError(400, "BadRequest", "Resource not found for the segment '%s'." % segs[0])
        low = [s.lower() for s in rest]

        def unknown(i):
            raise GraphError(400, "BadRequest", "Resource not found for the segment '%s'." % rest[i])

        allowed = None
        if low[:1] == ["mailfolders"]:
            if len(rest) == 1:
                r["endpoint"], allowed = ("folders" if method == "GET" else "create_folder"), ("GET", "POST")
            elif len(rest) == 2:
                r["endpoint"], r["folder"], allowed = "folder", rest[1], ("GET",)
            elif len(rest) == 3 and low[2] == "childfolders":
                r["endpoint"], r["folder"], allowed = ("childfolders" if method == "GET" else "create_folder"), rest[1], ("GET", "POST")
            elif len(rest) == 4 and low[2] == "messages" and low[3] in ("delta", "microsoft.graph.delta", "delta()"):
                r["endpoint"], r["folder"], allowed = "delta", rest[1], ("GET",)
            else:
                unknown(min(len(rest) - 1, 4))
        elif low[:1] == ["messages"] and len(rest) >= 2:
            r["message"] = rest[1]
            if len(rest) == 2:
                r["endpoint"], allowed = ("message" if method == "GET" else "update"), ("GET", "PATCH")
            elif len(rest) == 3 and low[2] == "$value":
                r["endpoint"], allowed = "value", ("GET",)
            elif len(rest) == 3 and low[2] in ("move", "microsoft.graph.move"):
                r["endpoint"], allowed = "move", ("POST",)
            else:
                unknown(2)
        elif rest:
            unknown(0)
        else:
            raise GraphError(400, "BadRequest", "Resource not found for the segment '%s'." % segs[0])
        if method not in allowed:
            raise GraphError(405, "BadRequest", "The HTTP method '%s' is not allowed on this resource." % method)
        return r

    def authenticate(self):
        st = self.st
        auth = self.headers.get("Authorization") or ""
        challenge = [("WWW-Authenticate", 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="%s"' % GRAPH_APP_ID)]
        if auth[:7].lower() != "bearer " or not auth[7:].strip():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", challenge)
        tok = auth[7:].strip()
        rec = st.tokens.get(tok)
        if rec is None:
            if tok.count(".") != 2:
                raise GraphError(401, "InvalidAuthenticationToken", "IDX14100: JWT is not well formed, there are no dots (.).", challenge)
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.", challenge)
        if rec["revoked"]:
            # ours: Graph tells revocation only through continuous access evaluation
            raise GraphError(401, "InvalidAuthenticationToken", "Access token has been revoked.", challenge)
        if rec["exp"] <= now():
            raise GraphError(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.", challenge)
        return rec

    def mailbox(self, route, tok):
        st = self.st
        if route["me"]:
            if tok["user"] is None:
                raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
            name = tok["user"]
        else:
            name = route["user"]
        mb = st.mailboxes.get(name.lower()) or st.by_oid.get(name.lower())
        if mb is None or mb.tenant != tok["tenant"]:
            raise GraphError(404, "ErrorInvalidUser", "The requested user '%s' is invalid." % name)
        return mb

    def authorize(self, route, tok, mb):
        write = route["endpoint"] in ("create_folder", "update", "move")
        need = MAIL_WRITE if write else MAIL_READ
        denied = GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        if not (tok["roles"] & need):
            raise denied
        if tok["user"] is not None:
            if tok["user"].lower() != mb.upn.lower():
                raise denied
        elif mb.apps is not None and tok["client_id"] not in mb.apps:
            # Exchange Online RBAC for Applications: the app is not in this mailbox's scope
            raise denied

    def limits(self, key, n):
        cfg = self.st.cfg
        if n > int(cfg["concurrency_limit"]):
            # concepts/throttling-limits.md, Outlook service limits
            raise GraphError(int(cfg["concurrency_status"]), "ApplicationThrottled",
                             "Application is over its MailboxConcurrency limit.",
                             [("Retry-After", str(cfg["concurrency_retry_after"]))])
        window = float(cfg["rate_window"])
        q = self.st.rate.setdefault(key, [])
        t = now()
        while q and q[0] <= t - window:
            q.pop(0)
        if len(q) >= int(cfg["rate_limit"]):
            wait = max(1, math.ceil(q[0] + window - t))
            raise GraphError(429, "ApplicationThrottled", "Application is over its MailboxRequestRate limit.",
                             [("Retry-After", str(wait))])
        q.append(t)

    # faults ----------------------------------------------------------------------
    def take_fault(self, method, entry, route, query):
        for f in self.st.faults:
            if f["count"] <= 0:
                continue
            if f.get("method") and f["method"].upper() != method:
                continue
            if f.get("path") and not re.search(f["path"], entry["path"]):
                continue
            if f.get("mailbox") and f["mailbox"].lower() not in (entry["mailbox"].lower(), self.st.mailboxes[entry["mailbox"].lower()].id.lower()):
                continue
            if f.get("app") and f["app"] != entry["app"]:
                continue
            endpoint = f.get("endpoint") or {"gone": "delta", "reset": "value"}.get(f["kind"])
            if endpoint and endpoint != route["endpoint"]:
                continue
            if f.get("delta") and f["delta"] != entry.get("delta"):
                continue
            if f["kind"] == "gone" and not f.get("initial") and entry.get("delta") == "initial":
                continue
            f["count"] -= 1
            f["used"] = f.get("used", 0) + 1
            self.st.faults = [x for x in self.st.faults if x["count"] > 0]
            entry["fault"] = f["kind"]
            return dict(f)
        return None

    def apply_fault(self, f, entry, ctx):
        if f is None:
            return
        kind = f["kind"]
        ra = f.get("retry_after")
        ra_hdr = [("Retry-After", str(ra))] if ra is not None else []
        if kind == "delay":
            time.sleep(float(f.get("seconds", 1)))
        elif kind == "throttle":
            raise GraphError(int(f.get("status", 429)), f.get("code", "ApplicationThrottled"),
                             f.get("message", "Application is over its MailboxConcurrency limit."),
                             ra_hdr if "retry_after" in f else [("Retry-After", "3")])
        elif kind == "unavailable":
            raise GraphError(int(f.get("status", 503)), f.get("code", "serviceNotAvailable"),
                             f.get("message", "The service is temporarily unavailable. Try again later."), ra_hdr)
        elif kind == "expired":
            raise GraphError(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.",
                             [("WWW-Authenticate", 'Bearer realm="", error="invalid_token"')])
        elif kind == "gone":
            raise GraphError(410, f.get("code", "SyncStateNotFound"),
                             f.get("message", "The sync state generation is not found; generation=1;[highest=2][2]."))
        elif kind == "status":
            raise GraphError(int(f.get("status", 500)), f.get("code", "generalException"),
                             f.get("message", "An unspecified error has occurred."), ra_hdr)
        elif kind == "close":
            ctx["status"] = "closed"
            self.reset()
            raise ConnectionResetError("fault: close")
        # reset and stall act when the body is written (serve)

    # the calls ---------------------------------------------------------------------
    def serve(self, method, route, query, body, tok, mb, entry, ctx, fault):
        q = {k.lower(): v[-1] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}
        immutable = entry["immutable"]
        ep = route["endpoint"]
        if ep == "value":
            with self.st.lock:
                msg = self.find_message(mb, route["message"])
                raw = msg.raw
            ctx["status"], ctx["bytes"] = 200, len(raw)
            reset = stall = None
            if fault and fault["kind"] == "reset":
                reset = int(fault.get("after_bytes", len(raw) // 2))
            if fault and fault["kind"] == "stall":
                stall = (int(fault.get("after_bytes", len(raw) // 2)), float(fault.get("seconds", 1)))
            # concepts/outlook-get-mime-message.md: the MIME content as it is stored
            self.send(200, raw, "text/plain", self.graph_headers(ctx["rid"], ctx["crid"]), reset, stall)
            if reset is not None:
                ctx["status"] = "reset"
            return
        with self.st.lock:
            status, obj, extra = self.answer(method, route, q, body, tok, mb, immutable, entry)
        ctx["status"] = status
        if fault and fault["kind"] in ("reset", "stall"):
            data = json.dumps(obj).encode()
            ctx["bytes"] = len(data)
            cut = int(fault.get("after_bytes", len(data) // 2))
            hdrs = self.graph_headers(ctx["rid"], ctx["crid"]) + list(extra)
            ctype = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
            if fault["kind"] == "reset":
                ctx["status"] = "reset"
                self.send(status, data, ctype, hdrs, reset_after=cut)
            else:
                self.send(status, data, ctype, hdrs, stall=(cut, float(fault.get("seconds", 1))))
            return
        self.send_graph_json(status, obj, ctx, extra)

    def answer(self, method, route, q, body, tok, mb, immutable, entry):
        ep = route["endpoint"]
        base = self.base_url()
        user_seg = "users('%s')" % urllib.parse.quote(route["user"] or mb.upn, safe="@").replace("'", "''")
        if ep in ("folders", "childfolders"):
            parent = mb.by_well_known["msgfolderroot"] if ep == "folders" else self.find_folder(mb, route["folder"])
            return 200, self.folder_page(mb, parent, q, user_seg, ep), ()
        if ep == "folder":
            return 200, self.folder_json(mb, self.find_folder(mb, route["folder"])), ()
        if ep == "create_folder":
            parent = mb.by_well_known["msgfolderroot"] if route.get("folder") is None else self.find_folder(mb, route["folder"])
            data = self.json_body(body)
            name = data.get("displayName")
            if not isinstance(name, str) or not name.strip():
                raise GraphError(400, "ErrorInvalidRequest", "The request is invalid: displayName is required.")
            # user-post-mailfolders.md / mailfolder-post-childfolders.md: 201 Created;
            # a sibling with that name (Exchange compares names case-insensitively): 409
            if any(f.name.lower() == name.lower() for f in mb.folders.values() if f.parent == parent.id):
                raise GraphError(409, "ErrorFolderExists", "A folder with the specified name already exists.")
            f = Folder(new_id("AAMkAD"), name, parent.id, hidden=bool(data.get("isHidden", False)))
            mb.folders[f.id] = f
            return 201, self.folder_json(mb, f), ()
        if ep == "delta":
            return self.delta(route, q, mb, immutable, user_seg, entry)
        if ep == "message":
            msg = self.find_message(mb, route["message"])
            return 200, self.message_json(mb, msg, immutable, self.select(q), context=True), ()
        if ep == "update":
            msg = self.find_message(mb, route["message"])
            data = self.json_body(body)
            if "isRead" in data:
                if not isinstance(data["isRead"], bool):
                    raise GraphError(400, "BadRequest", "Cannot convert the literal '%s' to the expected type 'Edm.Boolean'." % data["isRead"])
                msg.is_read = data["isRead"]
            # message-update.md: 200 OK with the updated message; any update is a
            # change the folder's delta reports
            mb.touch(msg)
            return 200, self.message_json(mb, msg, immutable, None, context=True), ()
        if ep == "move":
            msg = self.find_message(mb, route["message"])
            data = self.json_body(body)
            dest = data.get("destinationId")
            if not isinstance(dest, str) or not dest:
                raise GraphError(400, "ErrorInvalidParameter", "The value of the parameter 'DestinationId' is empty.")
            folder = self.find_folder(mb, dest)
            # message-move.md: 201 Created with the message in its new folder;
            # its id is new unless the request asked for ImmutableId
            mb.move(msg, folder.id)
            return 201, self.message_json(mb, msg, immutable, None, context=True), ()
        raise GraphError(400, "BadRequest", "Invalid request.")

    def base_url(self):
        return self.st.cfg["public_url"] or self.server.url

    def json_body(self, body):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise GraphError(415, "BadRequest", "A supported MIME type could not be found that matches the content type of the response. None of the supported type(s) 'application/json' matches the content type '%s'." % ctype)
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise GraphError(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.")
        if not isinstance(data, dict):
            raise GraphError(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.")
        return data

    def find_folder(self, mb, ref):
        f = mb.by_well_known.get(ref.lower())
        if f is None:
            f = mb.folders.get(ref)
        if f is None:
            if not ID_RE.match(ref) or len(ref) < 20:
                raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return f

    def find_message(self, mb, ref):
        imm = ref if ref in mb.messages else mb.by_rest.get(ref)
        if imm is None:
            if not ID_RE.match(ref) or len(ref) < 20:
                raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return mb.messages[imm]

    def select(self, q):
        sel = q.get("$select")
        if not sel:
            return None
        fields = [s.strip() for s in sel.split(",") if s.strip()]
        for s in fields:
            if s not in MESSAGE_PROPERTIES:
                raise GraphError(400, "RequestBroker--ParseUri",
                                 "Could not find a property named '%s' on type 'microsoft.graph.message'." % s)
        return fields

    def folder_json(self, mb, f):
        msgs = [m for m in mb.messages.values() if m.folder == f.id]
        return {"id": f.id, "displayName": f.name, "parentFolderId": f.parent,
                "childFolderCount": sum(1 for c in mb.folders.values() if c.parent == f.id),
                "unreadItemCount": sum(1 for m in msgs if not m.is_read),
                "totalItemCount": len(msgs), "isHidden": f.hidden}

    def folder_page(self, mb, parent, q, user_seg, ep):
        hidden = truthy(q.get("includehiddenfolders", "false"))
        folders = mb.children(parent.id, hidden)
        try:
            top = int(q.get("$top", self.st.cfg["folder_page_size"]))
            skip = int(q.get("$skip", 0))
        except ValueError:
            raise GraphError(400, "BadRequest", "Invalid $top or $skip value.")
        top = max(1, min(top, 1000))
        page = folders[skip:skip + top]
        seg = "mailFolders" if ep == "folders" else "mailFolders('%s')/childFolders" % parent.id
        out = {"@odata.context": "%s/v1.0/$metadata#%s/%s" % (self.base_url(), user_seg, seg),
               "value": [self.folder_json(mb, f) for f in page]}
        if skip + top < len(folders):
            params = {"%24skip": str(skip + top)}
            if "$top" in q:
                params["%24top"] = str(top)
            if hidden:
                params["includeHiddenFolders"] = "true"
            # user-list-mailfolders.md: past the page size, an @odata.nextLink
            out["@odata.nextLink"] = "%s/v1.0/%s/%s?%s" % (self.base_url(), user_seg, seg,
                                                            "&".join("%s=%s" % kv for kv in params.items()))
        return out

    def message_json(self, mb, m, immutable, select, context=False):
        meta = m.meta
        full = {
            "@odata.type": "#microsoft.graph.message",
            "@odata.etag": 'W/"%s"' % m.change_key,
            "id": m.imm if immutable else m.rest,
            "createdDateTime": iso(m.created), "lastModifiedDateTime": iso(m.modified),
            "changeKey": m.change_key, "categories": [],
            "receivedDateTime": iso(m.received), "sentDateTime": iso(meta["sent"] or m.received),
            "hasAttachments": meta["multipart"], "internetMessageId": meta["internetMessageId"],
            "subject": meta["subject"], "bodyPreview": "", "importance": "normal",
            "parentFolderId": m.folder, "conversationId": "AAQkAD" + hashlib.sha256(meta["subject"].encode()).hexdigest()[:24],
            "isDeliveryReceiptRequested": None, "isReadReceiptRequested": False,
            "isRead": m.is_read, "isDraft": False,
            "webLink": "https://outlook.office365.com/owa/?ItemID=%s&exvsurl=1&viewmodel=ReadMessageItem" % urllib.parse.quote(m.rest, safe=""),
            "inferenceClassification": "focused",
            "body": {"contentType": "text", "content": ""},
            "sender": meta["from"], "from": meta["from"],
            "toRecipients": meta["to"], "ccRecipients": meta["cc"], "bccRecipients": [], "replyTo": [],
            "flag": {"flagStatus": "notFlagged"},
        }
        if select is not None:
            # message-delta.md / delta-query-messages.md: the id is always returned
            keep = {"@odata.type", "@odata.etag", "id"} | set(select)
            full = {k: v for k, v in full.items() if k in keep}
        if context:
            full = dict({"@odata.context": "%s/v1.0/$metadata#users('%s')/messages/$entity" % (self.base_url(), mb.id)}, **full)
        return full

    # delta ---------------------------------------------------------------------------
    def delta(self, route, q, mb, immutable, user_seg, entry):
        """api-reference/v1.0/api/message-delta.md, concepts/delta-query-messages.md,
        concepts/delta-query-overview.md: pages of at most odata.maxpagesize
        messages, an @odata.nextLink ($skiptoken) while the round goes on, an
        @odata.deltaLink ($deltatoken) at its end; a delta link later gives
        what changed since, departures as {"id", "@removed": {"reason"}}."""
        st = self.st
        cfg = st.cfg
        folder = self.find_folder(mb, route["folder"])
        skip, dtok = q.get("$skiptoken"), q.get("$deltatoken")
        initial_url = "%s/v1.0/%s/mailFolders('%s')/messages/delta" % (self.base_url(), user_seg, folder.id)
        given = skip or dtok
        if given is not None:
            state = st.rounds.get(given)
            if state is not None and state["kind"] != ("skip" if skip is not None else "delta"):
                state = None
            if state is None or state["mailbox"] != mb.upn or state["folder"] != folder.id:
                # concepts/delta-query-overview.md, "Synchronization reset" and
                # "Token duration": 410 and a Location for a full round
                if not TOKEN_RE.match(given):
                    raise GraphError(410, "SyncStateInvalid", "The sync state is invalid.", [("Location", initial_url)])
                raise GraphError(410, "SyncStateNotFound",
                                 "The sync state generation is not found; generation=%d;[highest=%d]." % (0, mb.seq),
                                 [("Location", initial_url)])
            if state.get("gone"):
                raise GraphError(410, state["gone"], "The sync state generation is not found; generation=%d;[highest=%d]." % (state["base"], mb.seq)
                                 if state["gone"] == "SyncStateNotFound" else "The sync state is invalid.",
                                 [("Location", initial_url)])
        if skip is not None:
            rnd, offset = state["round"], state["offset"]
        else:
            if dtok is not None:
                since = state["prev_base"] if cfg["duplicates"] == "replay" else state["base"]
                select, change_type = state["select"], state["change_type"]
                entries = mb.changes_since(folder.id, since, change_type)
                prev_base = state["base"]
            else:
                select = self.select(q)
                change_type = q.get("changetype")
                if change_type is not None and change_type not in ("created", "updated", "deleted"):
                    raise GraphError(400, "ErrorInvalidUrlQuery", "The value '%s' of the parameter 'changeType' is not valid." % change_type)
                msgs = [m for m in mb.messages.values() if m.folder == folder.id]
                msgs.sort(key=lambda m: m.received, reverse=(cfg["delta_order"] == "newest"))
                entries = [("added", m.imm, None) for m in msgs]
                prev_base = mb.seq
            if cfg["duplicates"] == "within":
                entries = entries + entries
            rnd = {"mailbox": mb.upn, "folder": folder.id, "entries": entries, "base": mb.seq,
                   "prev_base": prev_base, "select": select, "change_type": change_type,
                   "user_seg": user_seg, "empty_sent": False}
            offset = 0
        try:
            size = int(self.prefer().get("odata.maxpagesize", cfg["delta_page_size"]))
        except ValueError:
            size = int(cfg["delta_page_size"])
        size = max(1, min(size, int(cfg["max_page_size"])))
        page, remaining = rnd["entries"][offset:offset + size], len(rnd["entries"]) - offset - size
        if cfg["delta_empty_pages"] and remaining <= 0 and not rnd["empty_sent"] and offset == 0 and page:
            # concepts/delta-query-overview.md: a nextLink "even if the current
            # response may contain an empty result"
            rnd["empty_sent"] = True
            page, remaining = [], len(rnd["entries"])
        value = []
        for kind, imm, rest_then in page:
            if kind == "removed":
                value.append({"@odata.type": "#microsoft.graph.message",
                              "id": imm if immutable else rest_then, "@removed": {"reason": "deleted"}})
                continue
            m = mb.messages.get(imm)
            if m is None:      # gone since the round began: the next round says so
                continue
            value.append(self.message_json(mb, m, immutable, rnd["select"]))
        base = "%s/v1.0/%s/mailFolders('%s')/messages/delta" % (self.base_url(), rnd["user_seg"], folder.id)
        out = {"@odata.context": "%s/v1.0/$metadata#Collection(message)" % self.base_url()}
        tok = secrets.token_urlsafe(32)
        if remaining > 0:
            next_offset = offset + len(page) if page else offset
            st.rounds[tok] = {"mailbox": mb.upn, "folder": folder.id, "round": rnd, "offset": next_offset,
                              "base": rnd["base"], "kind": "skip"}
            out["@odata.nextLink"] = "%s?$skiptoken=%s" % (base, tok)
        else:
            st.rounds[tok] = {"mailbox": mb.upn, "folder": folder.id, "base": rnd["base"],
                              "prev_base": rnd["prev_base"], "select": rnd["select"],
                              "change_type": rnd["change_type"], "kind": "delta"}
            links = st.delta_links.setdefault((mb.upn, folder.id), [])
            links.append(tok)
            kept = cfg["delta_tokens_kept"]
            while kept is not None and len(links) > int(kept):
                st.rounds.pop(links.pop(0), None)
            out["@odata.deltaLink"] = "%s?$deltatoken=%s" % (base, tok)
        out["value"] = value
        entry["entries"] = len(value)
        extra = []
        if "odata.maxpagesize" in self.prefer():
            extra.append(("Preference-Applied", "odata.maxpagesize=%d" % size))
        return 200, out, extra

    # admin -------------------------------------------------------------------------------
    def admin(self, method, name, query, raw):
        st = self.st
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        form = dict(q)
        if ctype == "application/json" and raw:
            try:
                data = json.loads(raw)
            except ValueError:
                return self.admin_answer(400, {"error": "invalid JSON"})
            if isinstance(data, dict):
                form.update(data)
            else:
                form["items"] = data
        elif ctype == "application/x-www-form-urlencoded":
            form.update({k: v[-1] for k, v in urllib.parse.parse_qs(raw.decode(), keep_blank_values=True).items()})
        try:
            with st.lock:
                result = self.admin_call(method, name, form, raw, ctype)
        except (KeyError, ValueError, TypeError) as exc:
            return self.admin_answer(400, {"error": "%s: %s" % (type(exc).__name__, exc)})
        except GraphError as err:
            return self.admin_answer(err.status, {"error": err.code, "message": err.message})
        if isinstance(result, bytes):
            return self.send(200, result, "application/octet-stream")
        status, body = result
        return self.admin_answer(status, body)

    def admin_answer(self, status, body):
        self.send(status, json.dumps(body).encode(), "application/json")

    def admin_mailbox(self, form):
        name = str(form["mailbox"])
        mb = self.st.mailboxes.get(name.lower()) or self.st.by_oid.get(name.lower())
        if mb is None:
            raise GraphError(404, "unknown_mailbox", name)
        return mb

    def admin_folder(self, mb, ref, create=False):
        """A folder by id, well-known name or display path ("Parent/Child")."""
        if ref is None or ref == "":
            return mb.by_well_known["inbox"]
        f = mb.by_well_known.get(str(ref).lower()) or mb.folders.get(ref)
        if f is not None:
            return f
        parent = mb.by_well_known["msgfolderroot"]
        for part in str(ref).split("/"):
            found = [c for c in mb.folders.values() if c.parent == parent.id and c.name.lower() == part.lower()]
            if found:
                parent = found[0]
            elif create:
                c = Folder(new_id("AAMkAD"), part, parent.id)
                mb.folders[c.id] = c
                parent = c
            else:
                raise GraphError(404, "unknown_folder", str(ref))
        return parent

    def admin_message_json(self, mb, m):
        f = mb.folders[m.folder]
        return {"id": m.rest, "immutable_id": m.imm, "folder": f.id, "folder_path": mb.path_of(f),
                "well_known": f.well_known, "is_read": m.is_read, "size": len(m.raw),
                "sha256": hashlib.sha256(m.raw).hexdigest(), "subject": m.meta["subject"],
                "message_id": m.meta["internetMessageId"], "received": m.received}

    def admin_call(self, method, name, form, raw, ctype):
        st = self.st
        if name == "log" and method == "GET":
            entries = st.log
            if form.get("mailbox"):
                entries = [e for e in entries if (e.get("mailbox") or "").lower() == form["mailbox"].lower()]
            if form.get("since"):
                entries = [e for e in entries if e["seq"] > int(form["since"])]
            return 200, entries
        if name == "log/clear":
            st.log.clear()
            return 200, {"cleared": True}
        if name == "message" and method == "POST":
            mb = self.admin_mailbox(form)
            if ctype == "application/json":
                data = base64.b64decode(form["mime_b64"])
            else:
                data = raw
            folder = self.admin_folder(mb, form.get("folder"), create=True)
            received = float(form["received"]) if form.get("received") else None
            m = mb.add(data, folder.id, truthy(form.get("is_read", False)), received)
            return 201, self.admin_message_json(mb, m)
        if name == "messages" and method == "GET":
            mb = self.admin_mailbox(form)
            msgs = list(mb.messages.values())
            if form.get("folder"):
                f = self.admin_folder(mb, form["folder"])
                msgs = [m for m in msgs if m.folder == f.id]
            msgs.sort(key=lambda m: m.received)
            return 200, [self.admin_message_json(mb, m) for m in msgs]
        if name == "raw" and method == "GET":
            mb = self.admin_mailbox(form)
            return self.find_message(mb, form["id"]).raw
        if name == "update" and method == "POST":      # someone reads it in Outlook
            mb = self.admin_mailbox(form)
            m = self.find_message(mb, form["id"])
            m.is_read = truthy(form.get("is_read", True))
            mb.touch(m)
            return 200, self.admin_message_json(mb, m)
        if name == "move" and method == "POST":        # someone moves it in Outlook
            mb = self.admin_mailbox(form)
            m = self.find_message(mb, form["id"])
            mb.move(m, self.admin_folder(mb, form["folder"], create=True).id)
            return 200, self.admin_message_json(mb, m)
        if name == "delete" and method == "POST":      # someone deletes it for good
            mb = self.admin_mailbox(form)
            m = self.find_message(mb, form["id"])
            mb.place(m, None)
            return 200, {"deleted": m.imm}
        if name == "folders" and method == "GET":
            mb = self.admin_mailbox(form)
            out = []
            for f in mb.folders.values():
                msgs = [m for m in mb.messages.values() if m.folder == f.id]
                out.append({"id": f.id, "name": f.name, "path": mb.path_of(f), "parent": f.parent,
                            "well_known": f.well_known, "hidden": f.hidden, "total": len(msgs),
                            "unread": sum(1 for m in msgs if not m.is_read)})
            out.sort(key=lambda x: x["path"].lower())
            return 200, out
        if name == "folder" and method == "POST":
            mb = self.admin_mailbox(form)
            f = self.admin_folder(mb, form["path"], create=True)
            return 201, {"id": f.id, "path": mb.path_of(f)}
        if name == "fault" and method == "POST":
            items = form["items"] if "items" in form else [form]
            added = []
            for f in items:
                f = dict(f)
                if f.get("kind") not in ("throttle", "unavailable", "expired", "gone", "reset", "stall",
                                         "delay", "status", "close"):
                    raise ValueError("unknown fault kind %r" % f.get("kind"))
                f["count"] = int(f.get("count", 1))
                st.faults.append(f)
                added.append(f)
            return 200, {"faults": st.faults}
        if name == "faults" and method == "GET":
            return 200, {"faults": st.faults}
        if name == "faults/clear":
            st.faults = []
            return 200, {"cleared": True}
        if name in ("expire", "revoke"):
            n = 0
            for rec in st.tokens.values():
                if truthy(form.get("all", False)) or rec["client_id"] == form.get("client_id") or rec["tenant"] == form.get("tenant"):
                    if name == "expire" and rec["exp"] > now():
                        rec["exp"] = now() - 1
                        n += 1
                    elif name == "revoke" and not rec["revoked"]:
                        rec["revoked"] = True
                        n += 1
            return 200, {("expired" if name == "expire" else "revoked"): n}
        if name == "issue":
            ten = st.tenant(form.get("tenant") or next(iter(st.tenants)))
            app = ten["apps"][form["client_id"]]
            roles = form.get("roles")
            if isinstance(roles, str):
                roles = [r for r in roles.split(",") if r]
            tok, life = st.issue(ten["id"], app, form.get("lifetime"), form.get("user"), roles)
            return 200, {"access_token": tok, "expires_in": life, "token_type": "Bearer"}
        if name == "delta/invalidate":
            mb = self.admin_mailbox(form)
            fid = self.admin_folder(mb, form["folder"]).id if form.get("folder") else None
            code = form.get("code", "SyncStateNotFound")
            n = 0
            for s in st.rounds.values():
                if s["mailbox"] == mb.upn and (fid is None or s["folder"] == fid) and not s.get("gone"):
                    s["gone"] = code
                    n += 1
            return 200, {"invalidated": n}
        if name == "access":
            mb = self.admin_mailbox(form)
            mb.apps = form.get("apps")
            return 200, {"mailbox": mb.upn, "apps": mb.apps}
        if name == "config" and method == "POST":
            for k in ("access_token_lifetime", "concurrency_limit", "concurrency_scope", "concurrency_status",
                      "concurrency_retry_after", "rate_limit", "rate_window", "latency", "delta_page_size",
                      "max_page_size", "delta_order", "delta_empty_pages", "duplicates", "delta_tokens_kept",
                      "folder_page_size", "public_url", "graph_resources"):
                if k in form:
                    st.cfg[k] = form[k]
            for t in form.get("tenants", []):
                st.add_tenant(t)
            check_config(st.cfg)
            return 200, {"config": public_config(st.cfg)}
        if name == "state" and method == "GET":
            return 200, {
                "config": public_config(st.cfg),
                "tenants": {tid: {"domains": t["domains"],
                                  "apps": {cid: {"roles": a["roles"], "access_token_lifetime": a["access_token_lifetime"]}
                                           for cid, a in t["apps"].items()}}
                            for tid, t in st.tenants.items()},
                "mailboxes": {mb.upn: {"id": mb.id, "tenant": mb.tenant, "apps": mb.apps,
                                       "messages": len(mb.messages)} for mb in st.mailboxes.values()},
                "max_concurrency": [{"key": list(k), "max": v} for k, v in st.max_inflight.items()],
                "in_flight": [{"key": list(k), "now": v} for k, v in st.inflight.items() if v],
                "rate": [{"key": list(k), "in_window": len(v)} for k, v in st.rate.items()],
                "tokens_active": sum(1 for r in st.tokens.values() if not r["revoked"] and r["exp"] > now()),
            }
        raise GraphError(404, "unknown_admin_endpoint", name)


MESSAGE_PROPERTIES = {
    "id", "createdDateTime", "lastModifiedDateTime", "changeKey", "categories", "receivedDateTime",
    "sentDateTime", "hasAttachments", "internetMessageId", "subject", "bodyPreview", "importance",
    "parentFolderId", "conversationId", "isDeliveryReceiptRequested", "isReadReceiptRequested",
    "isRead", "isDraft", "webLink", "inferenceClassification", "body", "sender", "from",
    "toRecipients", "ccRecipients", "bccRecipients", "replyTo", "flag",
}


def public_config(cfg):
    return {k: v for k, v in cfg.items() if k != "tenants"}


def check_config(cfg):
    if cfg["concurrency_scope"] not in ("mailbox", "app"):
        raise ValueError("concurrency_scope must be mailbox or app")
    if cfg["duplicates"] not in ("none", "within", "replay"):
        raise ValueError("duplicates must be none, within or replay")
    if cfg["delta_order"] not in ("newest", "oldest"):
        raise ValueError("delta_order must be newest or oldest")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, state, verbose):
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, Handler)
        self.state = state
        self.verbose = verbose
        host = "[%s]" % addr[0] if ":" in addr[0] else addr[0]
        self.url = "http://%s:%d" % (host, self.server_address[1])


def parse_args(argv):
    p = argparse.ArgumentParser(description="Local Microsoft Graph mail service for the watch tests.")
    p.add_argument("--port", type=int, default=None, help="TCP port (0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    p.add_argument("--config", help="JSON configuration file (see README.md)")
    p.add_argument("--state", help="directory for port, pid and requests.jsonl")
    p.add_argument("--tenant", default="contoso-tenant", help="tenant of --app and --mailbox")
    p.add_argument("--app", action="append", default=[], metavar="CLIENT_ID:SECRET[:ROLE,ROLE]",
                   help="add an app (default role Mail.ReadWrite)")
    p.add_argument("--mailbox", action="append", default=[], metavar="UPN[:CLIENT_ID,CLIENT_ID]",
                   help="add a mailbox; with client ids, only those apps are in its scope")
    p.add_argument("--access-token-lifetime", type=int, help="seconds")
    p.add_argument("--verbose", action="store_true", help="one line per request on stderr (no secrets)")
    return p.parse_args(argv)


def load_config(args):
    cfg = copy.deepcopy(DEFAULTS)
    if args.config:
        with open(args.config) as f:
            user = json.load(f)
        cfg.update(user)
        if args.port is None and "port" in user:
            args.port = int(user["port"])
    cfg.pop("port", None)
    if args.access_token_lifetime is not None:
        cfg["access_token_lifetime"] = args.access_token_lifetime
    if args.app or args.mailbox:
        t = {"id": args.tenant, "apps": [], "mailboxes": []}
        for spec in args.app:
            parts = spec.split(":", 2)
            if len(parts) < 2:
                raise SystemExit("--app wants CLIENT_ID:SECRET[:ROLES]")
            a = {"client_id": parts[0], "client_secret": parts[1]}
            if len(parts) > 2:
                a["roles"] = [r for r in parts[2].split(",") if r]
            t["apps"].append(a)
        for spec in args.mailbox:
            upn, _, apps = spec.partition(":")
            t["mailboxes"].append({"upn": upn, "apps": apps.split(",") if apps else None})
        cfg["tenants"] = list(cfg["tenants"]) + [t]
    if args.port is None:
        raise SystemExit("--port (or \"port\" in the config file) is required")
    check_config(cfg)
    return cfg


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    if not is_loopback(args.host):
        raise SystemExit("graph-service listens on loopback addresses only")
    cfg = load_config(args)
    if args.state:
        os.makedirs(args.state, exist_ok=True)
    state = State(cfg, args.state)
    srv = Server((args.host, args.port), state, args.verbose)
    port = srv.server_address[1]
    if args.state:
        for name, value in (("port", port), ("pid", os.getpid())):
            with open(os.path.join(args.state, name), "w") as f:
                f.write("%d\n" % value)

    def stop(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    print("graph-service ready %s" % srv.url, flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
        if args.state:
            try:
                os.unlink(os.path.join(args.state, "pid"))
            except OSError:
                pass


if __name__ == "__main__":
    main()
