#!/usr/bin/env python3
"""Self-test of graph-service.py: starts it on a free loopback port, checks
every behaviour the tests rely on against what Microsoft documents (see
README.md), stops it.  Stdlib only; a few seconds.

  selftest.py [--verbose]

Exit status 0 when every check passed.
"""

import argparse
import base64
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICE = os.path.join(HERE, "graph-service.py")
TENANT = "contoso-tenant"
SECRET = "S3cret~value.with/odd+chars"
UPN = "support@contoso.com"
OTHER = "sales@contoso.com"
SCOPE = "https://graph.microsoft.com/.default"

failures = []


def check(cond, what, detail=""):
    print(("ok   %s" if cond else "FAIL %s") % what + ("" if cond else " " + str(detail)[:600]), flush=True)
    if not cond:
        failures.append(what)
    return cond


class Service:
    def __init__(self, workdir, verbose):
        cfg = {"tenants": [
            {"id": TENANT, "domains": ["contoso.onmicrosoft.com"],
             "apps": [{"client_id": "app-rw", "client_secret": SECRET, "roles": ["Mail.ReadWrite"]},
                      {"client_id": "app-ro", "client_secret": SECRET, "roles": ["Mail.Read"]},
                      {"client_id": "app-none", "client_secret": SECRET, "roles": []}],
             "mailboxes": [{"upn": UPN, "id": "5f1c0a2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"},
                           {"upn": OTHER, "apps": ["app-ro"]}]},
            {"id": "fabrikam-tenant", "apps": [{"client_id": "fab-app", "client_secret": SECRET}],
             "mailboxes": [{"upn": "info@fabrikam.com"}]}]}
        path = os.path.join(workdir, "config.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        self.out = open(os.path.join(workdir, "stdout"), "w+")
        self.err = open(os.path.join(workdir, "stderr"), "w+")
        args = [sys.executable, SERVICE, "--port", "0", "--config", path, "--state", os.path.join(workdir, "state")]
        if verbose:
            args.append("--verbose")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.err, text=True)
        line = self.proc.stdout.readline()
        m = re.fullmatch(r"graph-service ready http://127\.0\.0\.1:(\d+)\n", line)
        if not m:
            raise SystemExit("no readiness line: %r" % line)
        self.out.write(line)
        self.port = int(m.group(1))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(10)
        self.out.write(self.proc.stdout.read())
        return rc


class Client:
    def __init__(self, port):
        self.port = port

    def req(self, method, path, token=None, headers=None, body=None, ctype=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        if isinstance(body, (dict, list)):
            body, ctype = json.dumps(body).encode(), "application/json"
        if ctype:
            h["Content-Type"] = ctype
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, resp, data

    def json(self, method, path, token=None, headers=None, body=None, ctype=None):
        status, resp, data = self.req(method, path, token, headers, body, ctype)
        try:
            return status, resp, json.loads(data) if data else None
        except ValueError:
            return status, resp, data

    def url(self, link):
        """A nextLink/deltaLink as is, less scheme and host."""
        u = urllib.parse.urlsplit(link)
        assert u.netloc == "127.0.0.1:%d" % self.port, link
        return u.path + ("?" + u.query if u.query else "")

    def admin(self, method, name, body=None, **query):
        path = "/admin/" + name + ("?" + urllib.parse.urlencode(query) if query else "")
        if isinstance(body, bytes):
            status, _, data = self.req(method, path, body=body, ctype="message/rfc822")
        else:
            status, _, data = self.req(method, path, body=body)
        assert status in (200, 201), (status, name, data)
        try:
            return json.loads(data)
        except ValueError:
            return data

    def token(self, client_id="app-rw", secret=SECRET, scope=SCOPE, tenant=TENANT, extra=None):
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "scope": scope}
        form.update(extra or {})
        form = {k: v for k, v in form.items() if v is not None}
        return self.json("POST", "/%s/oauth2/v2.0/token" % tenant, body=urllib.parse.urlencode(form).encode(),
                         ctype="application/x-www-form-urlencoded")


def claims(tok):
    part = tok.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def error_code(obj):
    return obj.get("error", {}).get("code") if isinstance(obj, dict) else None


MIME = [
    b"From: Alice <alice@example.org>\r\nTo: support@contoso.com\r\nSubject: first\r\n"
    b"Message-ID: <m1@example.org>\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\n\r\nhello\r\n",
    b"From: bob@example.org\nSubject: =?utf-8?q?caf=C3=A9?=\n\nLF only, 8-bit \xe9\xff and a NUL \x00 here\n",
    b"Subject: no final newline\r\n\r\nbody without CRLF at the end",
    b"\x00\x01not an email at all\xff",
    b"From: c@example.org\r\nSubject: five\r\n\r\n" + b"x" * 200000 + b"\r\n",
]


def test_tokens(c):
    st, resp, body = c.token()
    check(st == 200 and set(body) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
          and body["token_type"] == "Bearer", "client credentials: 200 with token_type, expires_in, ext_expires_in, access_token", body)
    cl = claims(body["access_token"])
    check(cl["roles"] == ["Mail.ReadWrite"] and cl["aud"] == "https://graph.microsoft.com" and cl["tid"] == TENANT
          and cl["appid"] == "app-rw" and cl["exp"] - cl["iat"] == body["expires_in"],
          "the JWT carries roles, aud, tid, appid and exp", cl)
    check("no-store" in (resp.getheader("Cache-Control") or ""), "token answers are not cached")
    # client_secret_basic (RFC 6749 2.3.1, form-encoded id and secret)
    basic = base64.b64encode(("app-rw:" + urllib.parse.quote_plus(SECRET)).encode()).decode()
    st, _, body = c.json("POST", "/%s/oauth2/v2.0/token" % TENANT, headers={"Authorization": "Basic " + basic},
                         body=b"grant_type=client_credentials&scope=" + urllib.parse.quote(SCOPE).encode(),
                         ctype="application/x-www-form-urlencoded")
    check(st == 200 and "access_token" in body, "client secret by HTTP Basic", body)
    st, _, body = c.token(tenant="contoso.onmicrosoft.com")
    check(st == 200, "the tenant by its domain name", body)
    cases = [
        ("wrong secret", dict(secret="wrong"), 401, "invalid_client", 7000215),
        ("no secret", dict(secret=None), 401, "invalid_client", 7000218),
        ("unknown client", dict(client_id="nobody"), 400, "unauthorized_client", 700016),
        ("unknown tenant", dict(tenant="nowhere"), 400, "invalid_request", 90002),
        ("app of another tenant", dict(client_id="fab-app"), 400, "unauthorized_client", 700016),
        ("no scope", dict(scope=None), 400, "invalid_request", 900144),
        ("scope without /.default", dict(scope="https://graph.microsoft.com/Mail.Read"), 400, "invalid_scope", 1002012),
        ("an IMAP scope", dict(scope="https://outlook.office365.com/.default"), 400, "invalid_resource", 500011),
        ("another grant", dict(extra={"grant_type": "password"}), 400, "unsupported_grant_type", 70003),
    ]
    for what, kw, status, err, code in cases:
        st, _, body = c.token(**kw)
        check(st == status and body.get("error") == err and body.get("error_codes") == [code]
              and body["error_description"].startswith("AADSTS%d:" % code) and "Trace ID:" in body["error_description"]
              and body.get("error_uri", "").endswith(str(code)),
              "token: %s -> %d %s AADSTS%d" % (what, status, err, code), (st, body))
    return c.token()[2]["access_token"]


def test_auth(c, tok):
    base = "/v1.0/users/%s/mailFolders" % UPN
    st, resp, body = c.json("GET", base)
    check(st == 401 and error_code(body) == "InvalidAuthenticationToken" and resp.getheader("WWW-Authenticate", "").startswith("Bearer")
          and body["error"]["innerError"].get("request-id"),
          "no token: 401 InvalidAuthenticationToken with WWW-Authenticate and a request id", body)
    st, _, body = c.json("GET", base, token="not-a-jwt")
    check(st == 401 and error_code(body) == "InvalidAuthenticationToken", "a garbage token: 401")
    st, _, body = c.json("GET", base, token=tok[:-3] + "abc")
    check(st == 401 and error_code(body) == "InvalidAuthenticationToken", "a forged token: 401")
    short = c.admin("POST", "issue", {"client_id": "app-rw", "lifetime": 1})["access_token"]
    st1 = c.req("GET", base, token=short)[0]
    time.sleep(1.1)
    st, _, body = c.json("GET", base, token=short)
    check(st1 == 200 and st == 401 and body["error"]["message"] == "Lifetime validation failed, the token is expired.",
          "a 1 s token works, then 401 expired", (st1, st, body))
    other = c.token()[2]["access_token"]
    n = c.admin("POST", "expire", {"client_id": "app-rw"})["expired"]
    st = c.req("GET", base, token=other)[0]
    check(n >= 2 and st == 401, "admin/expire: every token of the app expires now", (n, st))
    tok = c.token()[2]["access_token"]
    check(c.req("GET", base, token=tok)[0] == 200, "a new token works again")
    victim = c.token()[2]["access_token"]
    c.admin("POST", "revoke", {"client_id": "app-rw"})
    check(c.req("GET", base, token=victim)[0] == 401, "admin/revoke: 401")
    tok = c.token()[2]["access_token"]
    ro = c.token(client_id="app-ro")[2]["access_token"]
    none = c.token(client_id="app-none")[2]["access_token"]
    check(c.req("GET", base, token=ro)[0] == 200, "Mail.Read may read")
    st, _, body = c.json("POST", base, token=ro, body={"displayName": "X"})
    check(st == 403 and error_code(body) == "ErrorAccessDenied", "Mail.Read may not write: 403 ErrorAccessDenied", body)
    st, _, body = c.json("GET", base, token=none)
    check(st == 403 and error_code(body) == "ErrorAccessDenied", "no Mail role: 403 ErrorAccessDenied", body)
    st, _, body = c.json("GET", "/v1.0/users/%s/mailFolders" % OTHER, token=tok)
    check(st == 403 and error_code(body) == "ErrorAccessDenied", "a mailbox outside the app's RBAC scope: 403 ErrorAccessDenied", body)
    check(c.req("GET", "/v1.0/users/%s/mailFolders" % OTHER, token=ro)[0] == 200, "the app in its scope reads it")
    c.admin("POST", "access", {"mailbox": OTHER, "apps": None})
    check(c.req("GET", "/v1.0/users/%s/mailFolders" % OTHER, token=tok)[0] == 200, "admin/access: tenant-wide again")
    c.admin("POST", "access", {"mailbox": OTHER, "apps": ["app-ro"]})
    st, _, body = c.json("GET", "/v1.0/users/nobody@contoso.com/mailFolders", token=tok)
    check(st == 404 and error_code(body) == "ErrorInvalidUser", "an unknown user: 404 ErrorInvalidUser", body)
    st, _, body = c.json("GET", "/v1.0/users/info@fabrikam.com/mailFolders", token=tok)
    check(st == 404 and error_code(body) == "ErrorInvalidUser", "another tenant's mailbox: 404 ErrorInvalidUser", body)
    st, _, body = c.json("GET", "/v1.0/me/mailFolders", token=tok)
    check(st == 400 and "delegated" in body["error"]["message"], "/me with an app token: 400", body)
    st = c.req("GET", "/v1.0/users/5f1c0a2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b/mailFolders", token=tok)[0]
    check(st == 200, "the mailbox by object id")
    st = c.req("GET", "/v1.0/users/SUPPORT%40Contoso.com/mailFolders", token=tok)[0]
    check(st == 200, "the UPN percent-encoded and in another case")
    dele = c.admin("POST", "issue", {"client_id": "app-rw", "user": UPN})["access_token"]
    check(c.req("GET", "/v1.0/me/mailFolders/inbox", token=dele)[0] == 200
          and c.req("GET", "/v1.0/users/%s/mailFolders" % OTHER, token=dele)[0] == 403,
          "a delegated token: /me works, another's mailbox 403")
    return tok


def test_folders(c, tok):
    u = "/v1.0/users/%s" % UPN
    st, _, body = c.json("GET", u + "/mailFolders/Inbox", token=tok)
    inbox = body
    check(st == 200 and body["displayName"] == "Inbox" and {"id", "parentFolderId", "childFolderCount", "unreadItemCount",
                                                             "totalItemCount", "isHidden"} <= set(body),
          "GET mailFolders/Inbox (well-known, any case)", body)
    st, _, body = c.json("POST", u + "/mailFolders", token=tok, body={"displayName": "Chatwoot"})
    cw = body
    check(st == 201 and body["displayName"] == "Chatwoot" and body["id"], "create a folder: 201 with the folder", body)
    st, _, body = c.json("POST", u + "/mailFolders", token=tok, body={"displayName": "chatWOOT"})
    check(st == 409 and error_code(body) == "ErrorFolderExists", "the same name in any case: 409 ErrorFolderExists", body)
    st, _, body = c.json("POST", u + "/mailFolders/%s/childFolders" % urllib.parse.quote(cw["id"], safe=""),
                         token=tok, body={"displayName": "Refused/Spam"})
    check(st == 201 and body["parentFolderId"] == cw["id"], "a child folder (a '/' in its name)", body)
    st, _, body = c.json("POST", u + "/mailFolders/inbox/childFolders", token=tok, body={"displayName": "Sub"})
    check(st == 201 and body["parentFolderId"] == inbox["id"], "a child of a well-known folder", body)
    for i in range(3):
        c.json("POST", u + "/mailFolders", token=tok, body={"displayName": "Extra %d" % i})
    names, path, pages = [], u + "/mailFolders", 0
    while path:
        st, _, body = c.json("GET", path, token=tok)
        pages += 1
        names += [f["displayName"] for f in body["value"]]
        path = c.url(body["@odata.nextLink"]) if "@odata.nextLink" in body else None
    check(pages == 2 and len(names) == 12 and "Top of Information Store" not in names and "Chatwoot" in names,
          "list: 10 a page and an @odata.nextLink, hidden folders left out", (pages, names))
    st, _, body = c.json("GET", u + "/mailFolders?$top=50&includeHiddenFolders=true", token=tok)
    check(len(body["value"]) == 12 and "@odata.nextLink" not in body, "$top=50 on one page", body)
    st, _, body = c.json("GET", u + "/mailFolders('%s')/childFolders" % cw["id"], token=tok)
    check(st == 200 and [f["displayName"] for f in body["value"]] == ["Refused/Spam"], "childFolders (key in parentheses)", body)
    st, _, body = c.json("GET", u + "/mailFolders/Chatwoot", token=tok)
    check(st == 400 and error_code(body) == "ErrorInvalidIdMalformed", "a display name is no id: 400 ErrorInvalidIdMalformed", body)
    st, _, body = c.json("GET", u + "/mailFolders/AQMkADAAAAAAAAAAAAAAAAAAAAAAAAAAA=", token=tok)
    check(st == 404 and error_code(body) == "ErrorItemNotFound", "an unknown folder id: 404 ErrorItemNotFound", body)
    st, _, body = c.json("GET", u + "/mailFolders/inbox/messages/x/$value", token=tok)
    check(st == 400 and error_code(body) == "BadRequest", "the folder-scoped $value is no route here: 400", body)
    return cw


def delta_round(c, tok, path, immutable=True, page=None):
    """Follows every nextLink to the deltaLink: (entries, pages, deltaLink)."""
    h = {}
    if immutable:
        h["Prefer"] = 'IdType="ImmutableId"'
    if page:
        h["Prefer"] = ", ".join(x for x in (h.get("Prefer"), "odata.maxpagesize=%d" % page) if x)
    entries, pages = [], 0
    while True:
        st, resp, body = c.json("GET", path, token=tok, headers=h)
        assert st == 200, (st, body)
        pages += 1
        entries += body["value"]
        if "@odata.deltaLink" in body:
            return entries, pages, body["@odata.deltaLink"], resp
        path = c.url(body["@odata.nextLink"])


def test_delta(c, tok):
    u = "/v1.0/users/%s" % UPN
    added = [c.admin("POST", "message", MIME[i], mailbox=UPN, folder="inbox", is_read=(i == 2)) for i in range(5)]
    entries, pages, link, resp = delta_round(c, tok, u + "/mailFolders/inbox/messages/delta?$select=subject,isRead", page=2)
    ids = [e["id"] for e in entries]
    check(pages == 3 and sorted(ids) == sorted(a["immutable_id"] for a in added)
          and all(set(e) == {"@odata.type", "@odata.etag", "id", "subject", "isRead"} for e in entries)
          and resp.getheader("Preference-Applied") == "odata.maxpagesize=2",
          "first round: 5 messages on 3 pages of 2, $select kept through the links, immutable ids", (pages, entries))
    check("/mailFolders('" in link and "$deltatoken=" in link, "the links are absolute, mailFolders('id') form", link)
    check([e["isRead"] for e in sorted(entries, key=lambda e: ids.index(e["id"]))].count(True) == 1,
          "isRead as put in (one added read)")
    entries, pages, link2, _ = delta_round(c, tok, c.url(link))
    check(entries == [] and pages == 1, "a delta link with nothing new: no entries, a new deltaLink", entries)
    # changes: one read elsewhere, one deleted, one moved out, one new
    c.admin("POST", "update", {"mailbox": UPN, "id": added[0]["immutable_id"], "is_read": True})
    c.admin("POST", "delete", {"mailbox": UPN, "id": added[1]["immutable_id"]})
    st, _, moved = c.json("POST", u + "/messages/%s/move" % added[3]["id"], token=tok, body={"destinationId": "archive"})
    new = c.admin("POST", "message", b"Subject: six\r\n\r\nsix\r\n", mailbox=UPN, folder="Inbox")
    entries, _, link3, _ = delta_round(c, tok, c.url(link2))
    removed = sorted(e["id"] for e in entries if "@removed" in e)
    present = {e["id"]: e for e in entries if "@removed" not in e}
    check(removed == sorted([added[1]["immutable_id"], added[3]["immutable_id"]])
          and all(e["@removed"] == {"reason": "deleted"} for e in entries if "@removed" in e)
          and set(present) == {added[0]["immutable_id"], new["immutable_id"]}
          and present[added[0]["immutable_id"]]["isRead"] is True and present[new["immutable_id"]]["subject"] == "six",
          "next round: updated (isRead), @removed deleted (deleted, moved out), the new one; $select kept", entries)
    entries, _, link3b, _ = delta_round(c, tok, c.url(link2), immutable=False)
    check(added[3]["id"] in [e["id"] for e in entries if "@removed" in e],
          "without ImmutableId the departures carry the REST ids", entries)
    entries, _, _, _ = delta_round(c, tok, u + "/mailFolders/archive/messages/delta", immutable=False)
    check([e["id"] for e in entries] == [moved["id"]] and entries[0]["parentFolderId"] == moved["parentFolderId"]
          and "body" in entries[0], "the moved message in the destination's delta (no $select: the full message)", entries)
    # changeType=created
    entries, _, clink, _ = delta_round(c, tok, u + "/mailFolders/inbox/messages/delta?changeType=created")
    c.admin("POST", "update", {"mailbox": UPN, "id": new["immutable_id"], "is_read": True})
    seven = c.admin("POST", "message", b"Subject: seven\r\n\r\n7\r\n", mailbox=UPN, folder="inbox")
    entries, _, _, _ = delta_round(c, tok, c.url(clink))
    check([e["id"] for e in entries] == [seven["immutable_id"]], "changeType=created: only the new one", entries)
    # duplicates, as the doc allows
    c.admin("POST", "config", {"duplicates": "within"})
    eight = c.admin("POST", "message", b"Subject: eight\r\n\r\n8\r\n", mailbox=UPN, folder="inbox")
    entries, _, link4, _ = delta_round(c, tok, c.url(link3), page=1)
    check([e["id"] for e in entries].count(eight["immutable_id"]) == 2, "duplicates=within: the same change twice in a round", entries)
    c.admin("POST", "config", {"duplicates": "replay"})
    entries, _, link5, _ = delta_round(c, tok, c.url(link4))
    check(eight["immutable_id"] in [e["id"] for e in entries], "duplicates=replay: the last round's changes again", entries)
    c.admin("POST", "config", {"duplicates": "none"})
    # a nextLink with an empty page
    c.admin("POST", "config", {"delta_empty_pages": True})
    entries, pages, _, _ = delta_round(c, tok, u + "/mailFolders/inbox/messages/delta")
    check(pages == 2 and len(entries) == 6, "delta_empty_pages: an empty page with a nextLink first", (pages, len(entries)))
    c.admin("POST", "config", {"delta_empty_pages": False})
    # expired and invalid state
    st, resp, body = c.json("GET", u + "/mailFolders/inbox/messages/delta?$deltatoken=garbage!", token=tok)
    check(st == 410 and error_code(body) == "SyncStateInvalid" and "/messages/delta" in resp.getheader("Location", ""),
          "a malformed delta token: 410 SyncStateInvalid with a Location", body)
    c.admin("POST", "config", {"delta_tokens_kept": 1})
    _, _, fresh, _ = delta_round(c, tok, u + "/mailFolders/inbox/messages/delta")
    st, _, body = c.json("GET", c.url(link5), token=tok)
    check(st == 410 and error_code(body) == "SyncStateNotFound", "delta_tokens_kept=1: an older link is 410 SyncStateNotFound", body)
    c.admin("POST", "config", {"delta_tokens_kept": None})
    c.admin("POST", "delta/invalidate", {"mailbox": UPN, "folder": "inbox"})
    st, _, body = c.json("GET", c.url(fresh), token=tok)
    check(st == 410 and error_code(body) == "SyncStateNotFound", "admin/delta/invalidate: 410 SyncStateNotFound", body)
    st, _, body = c.json("GET", c.url(fresh).replace("mailFolders('", "mailFolders('X"), token=tok)
    check(st in (400, 404, 410), "a link of another folder is refused", (st, body))
    return added


def test_messages(c, tok, added):
    u = "/v1.0/users/%s" % UPN
    for i in (0, 2, 4):
        for key in ("id", "immutable_id"):
            st, resp, data = c.req("GET", u + "/messages/%s/$value" % urllib.parse.quote(added[i][key], safe=""), token=tok)
            check(st == 200 and data == MIME[i] and resp.getheader("Content-Type") == "text/plain",
                  "$value by %s: the exact bytes, text/plain (message %d)" % (key, i), (st, data[:80]))
    msg = c.admin("POST", "message", MIME[1], mailbox=UPN, folder="inbox")
    st, _, data = c.req("GET", u + "/messages/%s/$value" % msg["id"], token=tok)
    check(data == MIME[1], "$value of 8-bit, LF-only bytes with a NUL comes back untouched")
    st, _, body = c.json("GET", u + "/messages/%s/$value" % "AAMkAGAAAAAAAAAAAAAAAAAAAAAAAAAA=", token=tok)
    check(st == 404 and error_code(body) == "ErrorItemNotFound", "an unknown message: 404 ErrorItemNotFound", body)
    st, _, body = c.json("GET", u + "/messages/%s?$select=subject" % msg["id"], token=tok)
    check(st == 200 and body["subject"] == "café" and "isRead" not in body, "GET message with $select", body)
    st, _, body = c.json("PATCH", u + "/messages/%s" % msg["id"], token=tok, body={"isRead": True})
    check(st == 200 and body["isRead"] is True and c.admin("GET", "messages", mailbox=UPN, folder="inbox")[-1]["is_read"],
          "PATCH isRead true: 200, stored", body)
    st, _, body = c.json("PATCH", u + "/messages/%s" % msg["id"], token=tok, body={"isRead": "yes"})
    check(st == 400, "PATCH isRead with a string: 400", body)
    st, _, body = c.json("POST", u + "/messages/%s/move" % msg["id"], token=tok, body={"destinationId": "DeletedItems"})
    check(st == 201 and body["id"] != msg["id"] and body["parentFolderId"] != msg["folder"],
          "move without ImmutableId: 201 and a new id", body)
    st, _, gone = c.json("GET", u + "/messages/%s" % msg["id"], token=tok)
    check(st == 404 and error_code(gone) == "ErrorItemNotFound", "the old id is gone", gone)
    h = {"Prefer": 'IdType="ImmutableId"'}
    st, _, body2 = c.json("POST", u + "/messages/%s/move" % body["id"], token=tok, headers=h, body={"destinationId": "inbox"})
    check(st == 201 and body2["id"] == msg["immutable_id"], "move with ImmutableId: 201 and the same (immutable) id", body2)
    cw = [f for f in c.admin("GET", "folders", mailbox=UPN) if f["path"] == "Chatwoot"][0]
    st, _, body3 = c.json("POST", u + "/messages/%s/move" % body2["id"], token=tok, headers=h, body={"destinationId": cw["id"]})
    check(st == 201 and body3["id"] == msg["immutable_id"] and body3["parentFolderId"] == cw["id"]
          and c.admin("GET", "messages", mailbox=UPN, folder="Chatwoot")[0]["immutable_id"] == msg["immutable_id"],
          "move to a folder id; admin/messages shows it there", body3)
    st, _, body = c.json("POST", u + "/messages/%s/move" % body3["id"], token=tok, body={"destinationId": "Chatwoot"})
    check(st == 400 and error_code(body) == "ErrorInvalidIdMalformed", "destinationId by display name: 400", body)
    st, _, body = c.json("POST", u + "/messages/%s/move" % body3["id"], token=tok, body=b"{}", ctype="text/plain")
    check(st == 415, "a body that is not JSON: 415", body)


def test_throttling(c, tok):
    u = "/v1.0/users/%s" % UPN
    c.admin("POST", "log/clear")
    c.admin("POST", "fault", {"kind": "delay", "seconds": 0.8, "count": 4, "mailbox": UPN})
    results = []

    def get():
        results.append(c.req("GET", u + "/mailFolders/inbox", token=tok))
    threads = [threading.Thread(target=get) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    st, resp, body = c.json("GET", u + "/mailFolders/inbox", token=tok)
    other = c.token(client_id="app-ro")[2]["access_token"]
    st_other = c.req("GET", "/v1.0/users/%s/mailFolders/inbox" % OTHER, token=other)[0]
    for t in threads:
        t.join()
    check(st == 429 and error_code(body) == "ApplicationThrottled" and resp.getheader("Retry-After") == "1",
          "a fifth concurrent request to a mailbox: 429 ApplicationThrottled, Retry-After", (st, body))
    check(all(r[0] == 200 for r in results) and st_other == 200, "the four and another mailbox are served")
    log = c.admin("GET", "log", mailbox=UPN)
    conc = sorted(e["concurrency"] for e in log if e["endpoint"] == "folder")
    check(conc[-1] == 5 and [e["status"] for e in log if e["concurrency"] == 5] == [429]
          and all(e["fault"] == "delay" for e in log if e["status"] == 200),
          "the log: concurrency at arrival, the fifth refused", log)
    c.admin("POST", "config", {"rate_limit": 3, "rate_window": 30})
    sts = []
    resp = None
    for _ in range(4):
        st, resp, _ = c.req("GET", u + "/mailFolders/inbox", token=tok)
        sts.append(st)
    check(sts[-1] == 429 and int(resp.getheader("Retry-After")) > 0, "over the per-10-minutes budget: 429 with Retry-After", sts)
    c.admin("POST", "config", {"rate_limit": 10000, "rate_window": 600})


def test_faults(c, tok, added):
    u = "/v1.0/users/%s" % UPN
    c.admin("POST", "fault", [{"kind": "throttle", "retry_after": 3, "count": 2, "path": "/mailFolders"},
                              {"kind": "unavailable", "count": 1, "method": "PATCH"},
                              {"kind": "unavailable", "retry_after": "Wed, 21 Oct 2026 07:28:00 GMT", "count": 1, "endpoint": "move"}])
    r1 = c.req("GET", u + "/mailFolders/inbox", token=tok)
    r2 = c.req("GET", u + "/mailFolders/inbox", token=tok)
    r3 = c.req("GET", u + "/mailFolders/inbox", token=tok)
    check(r1[0] == r2[0] == 429 and r1[1].getheader("Retry-After") == "3" and r3[0] == 200,
          "throttle x2 on a path: two 429 Retry-After: 3, then served", (r1[0], r2[0], r3[0]))
    st, resp, body = c.json("PATCH", u + "/messages/%s" % added[0]["id"], token=tok, body={"isRead": True})
    check(st == 503 and resp.getheader("Retry-After") is None, "503 without Retry-After", (st, body))
    st, resp, body = c.json("POST", u + "/messages/%s/move" % added[0]["id"], token=tok, body={"destinationId": "inbox"})
    check(st == 503 and resp.getheader("Retry-After") == "Wed, 21 Oct 2026 07:28:00 GMT", "503 with an HTTP-date Retry-After", (st, body))
    c.admin("POST", "fault", {"kind": "expired"})
    st, _, body = c.json("GET", u + "/mailFolders", token=tok)
    check(st == 401 and error_code(body) == "InvalidAuthenticationToken" and c.req("GET", u + "/mailFolders", token=tok)[0] == 200,
          "expired: one 401 InvalidAuthenticationToken, the token still good after", body)
    _, _, link, _ = delta_round(c, tok, u + "/mailFolders/inbox/messages/delta")
    c.admin("POST", "fault", {"kind": "gone"})
    st0 = c.req("GET", u + "/mailFolders/inbox/messages/delta", token=tok)[0]
    st, _, body = c.json("GET", c.url(link), token=tok)
    check(st0 == 200 and st == 410 and error_code(body) == "SyncStateNotFound",
          "gone: the next delta-link request 410 SyncStateNotFound (not an initial one)", (st0, st, body))
    c.admin("POST", "fault", {"kind": "unavailable", "delta": "skiptoken"})
    h = {"Prefer": "odata.maxpagesize=1"}
    st1, _, first = c.json("GET", u + "/mailFolders/inbox/messages/delta", token=tok, headers=h)
    st2 = c.req("GET", c.url(first["@odata.nextLink"]), token=tok, headers=h)[0]
    st3 = c.req("GET", c.url(first["@odata.nextLink"]), token=tok, headers=h)[0]
    check((st1, st2, st3) == (200, 503, 200), "a fault for the second page of a round only (delta: skiptoken)", (st1, st2, st3))
    big = [a for a in added if a["size"] > 100000][0]
    c.admin("POST", "fault", {"kind": "reset", "after_bytes": 1000})
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
    conn.request("GET", u + "/messages/%s/$value" % big["id"], headers={"Authorization": "Bearer " + tok})
    resp = conn.getresponse()
    try:
        data = resp.read()
        outcome = "complete %d" % len(data)
    except http.client.IncompleteRead as e:
        outcome = "incomplete %d" % len(e.partial)
    except ConnectionResetError:
        outcome = "reset"
    conn.close()
    check(resp.status == 200 and int(resp.getheader("Content-Length")) == len(MIME[4]) and outcome in ("reset", "incomplete 1000"),
          "reset: 200, a Content-Length, 1000 bytes then a connection reset", outcome)
    st, _, data = c.req("GET", u + "/messages/%s/$value" % big["id"], token=tok)
    check(data == MIME[4], "the next $value whole")
    c.admin("POST", "fault", {"kind": "stall", "seconds": 0.5, "after_bytes": 10})
    t0 = time.time()
    st, _, data = c.req("GET", u + "/messages/%s/$value" % big["id"], token=tok)
    check(data == MIME[4] and time.time() - t0 >= 0.5, "stall: the body pauses mid-way, then comes whole")
    c.admin("POST", "fault", {"kind": "close"})
    try:
        c.req("GET", u + "/mailFolders", token=tok)
        outcome = "answered"
    except (http.client.RemoteDisconnected, ConnectionResetError):
        outcome = "closed"
    check(outcome == "closed", "close: no answer, the connection dropped")
    c.admin("POST", "fault", {"kind": "status", "status": 500, "code": "generalException", "mailbox": OTHER})
    check(c.req("GET", u + "/mailFolders", token=tok)[0] == 200, "a fault for another mailbox leaves this one alone")
    check(c.admin("GET", "faults")["faults"][0]["mailbox"] == OTHER, "admin/faults lists what is left")
    c.admin("POST", "faults/clear")
    check(c.admin("GET", "faults")["faults"] == [], "admin/faults/clear")


def test_keepalive(c, tok):
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
    ok = True
    for body in (None, json.dumps({"displayName": "Inbox"}).encode()):
        conn.request("GET" if body is None else "POST", "/v1.0/users/%s/mailFolders" % UPN, body=body,
                     headers={"Authorization": "Bearer " + tok, "Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        ok = ok and resp.status in (200, 409)
    conn.close()
    check(ok, "keep-alive: several requests (an error among them) on one connection")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="graph-selftest.")
    t0 = time.time()
    svc = Service(work, args.verbose)
    c = Client(svc.port)
    try:
        tok = test_tokens(c)
        tok = test_auth(c, tok)
        test_folders(c, tok)
        added = test_delta(c, tok)
        test_messages(c, tok, added)
        test_throttling(c, tok)
        test_faults(c, tok, added)
        test_keepalive(c, tok)
        log = c.admin("GET", "log")
        check(all({"seq", "time", "done", "method", "path", "status"} <= set(e) for e in log if e["endpoint"] != "token"),
              "every Graph request logged with seq, time, done, method, path, status")
        issued = c.admin("POST", "issue", {"client_id": "app-rw"})["access_token"]
    finally:
        rc = svc.stop()
    check(rc == 0, "SIGTERM: a clean exit", rc)
    seen = ""
    for name in ("stdout", "stderr", "state/requests.jsonl"):
        with open(os.path.join(work, name), errors="replace") as f:
            seen += f.read()
    check(SECRET not in seen and urllib.parse.quote_plus(SECRET) not in seen and issued not in seen
          and tok not in seen and tok.split(".")[2] not in seen,
          "no secret or token in the output, the error stream or the request log")
    if not args.keep:
        shutil.rmtree(work)
    print("%d checks failed; %.1f s" % (len(failures), time.time() - t0))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
