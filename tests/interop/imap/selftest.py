#!/usr/bin/env python3
"""End-to-end self-test of the IMAP fixtures (dovecot.sh + token-service.py).

Stdlib only (imaplib, ssl, urllib).  Starts the token service and a private
Dovecot on free loopback ports in a temporary WORKDIR, checks every feature
the watch tests rely on, stops both and checks nothing is left running.

  selftest.py [--keep] [--verbose]

Exit status 0 when every check passed.  selftest.sh runs it twice in a row
and then twice at the same time.
"""

import argparse
import base64
import imaplib
import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
DOVECOT_SH = os.path.join(HERE, "dovecot.sh")
TOKEN_SERVICE = os.path.join(HERE, "token-service.py")
LIFETIME = 4          # access-token lifetime for the test, seconds

failures = []
VERBOSE = False
TAG = ""


def log(msg):
    print("%s%s" % (TAG, msg), flush=True)


def check(cond, what, detail=""):
    if cond:
        log("ok   %s" % what)
    else:
        failures.append(what)
        log("FAIL %s %s" % (what, detail))
    return cond


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def dsh(*args, stdin=None, check_rc=True):
    p = subprocess.run([DOVECOT_SH, *map(str, args)], input=stdin, capture_output=True)
    if check_rc and p.returncode != 0:
        raise RuntimeError("dovecot.sh %s failed: %s" % (" ".join(map(str, args)), p.stderr.decode()))
    return p


def dsh_out(*args, **kw):
    return dsh(*args, **kw).stdout.decode()


class Http:
    def __init__(self, base):
        self.base = base

    def post(self, path, form=None, auth=None):
        data = urllib.parse.urlencode(form or {}).encode()
        req = urllib.request.Request(self.base + path, data=data, method="POST")
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(("%s:%s" % auth).encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def get(self, path):
        with urllib.request.urlopen(self.base + path, timeout=10) as r:
            return json.loads(r.read())


# --- IMAP helpers --------------------------------------------------------------
def xoauth2(user, token):
    return ("user=%s\x01auth=Bearer %s\x01\x01" % (user, token)).encode()


def oauthbearer(user, token, port):
    return ("n,a=%s,\x01host=localhost\x01port=%d\x01auth=Bearer %s\x01\x01" % (user, port, token)).encode()


def sasl(conn, mech, initial):
    """AUTHENTICATE with imaplib: the initial response, then an empty answer to
    the error challenge a failing XOAUTH2/OAUTHBEARER gets (RFC 7628 3.2.3)."""
    state = {"n": 0, "challenge": None}

    def cb(challenge):
        state["n"] += 1
        if state["n"] == 1:
            return initial
        state["challenge"] = challenge
        return b""
    try:
        typ, _ = conn.authenticate(mech, cb)
        return typ == "OK", state["challenge"]
    except imaplib.IMAP4.error as e:
        return False, state["challenge"] or str(e).encode()


def try_auth(port, mech, initial, tls_ctx=None):
    c = imaplib.IMAP4("127.0.0.1", port)
    try:
        if tls_ctx:
            c.starttls(tls_ctx)
        ok, challenge = sasl(c, mech, initial)
        return ok, challenge
    finally:
        try:
            c.logout()
        except Exception:
            pass


class RawIdle:
    """IDLE on a logged-in imaplib connection, reading the socket directly."""

    def __init__(self, conn):
        self.conn, self.sock, self.buf = conn, conn.sock, b""

    def readline(self, timeout):
        end = time.time() + timeout
        while b"\r\n" not in self.buf:
            left = end - time.time()
            if left <= 0:
                return None
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return None
            try:
                d = self.sock.recv(4096)
            except (ConnectionResetError, ssl.SSLError):
                d = b""
            if not d:
                return b""            # EOF
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def start(self):
        self.sock.sendall(b"I1 IDLE\r\n")
        return self.readline(5)

    def wait_for(self, pred, timeout):
        end = time.time() + timeout
        seen = []
        while time.time() < end:
            line = self.readline(end - time.time())
            if line is None:
                break
            seen.append(line)
            if pred(line):
                return line, seen
            if line == b"":
                break
        return None, seen


def main():
    global VERBOSE, TAG
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", action="store_true", help="keep the WORKDIR")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--tag", default="", help="prefix for output lines")
    args = ap.parse_args()
    VERBOSE, TAG = args.verbose, (args.tag + " " if args.tag else "")

    if dsh("setup", check_rc=False).returncode != 0:
        log("SKIP: dovecot/doveadm/openssl missing")
        return 77
    work = tempfile.mkdtemp(prefix="imap-selftest.")
    w = os.path.join(work, "dovecot")
    tsdir = os.path.join(work, "token-service")
    plain, tls, tport = free_port(), free_port(), free_port()
    while len({plain, tls, tport}) < 3:
        tls, tport = free_port(), free_port()
    log("WORKDIR %s ports imap=%d imaps=%d token=%d" % (work, plain, tls, tport))

    secrets_used = {"cc-secret-1", "cc-secret-2", "rt-initial-bob"}
    tokens_seen = set()
    cfg = {
        "access_token_lifetime": LIFETIME,
        "refresh_token_mode": "rotate",
        "clients": [
            {"client_id": "cc-app", "client_secret": "cc-secret-1", "username": "alice@example.org",
             "grants": ["client_credentials"], "scopes": ["https://outlook.office365.com/.default"]},
            {"client_id": "pub-app", "client_secret": None, "username": "bob@example.org",
             "grants": ["refresh_token", "device_code"]},
        ],
        "refresh_tokens": [
            {"client_id": "pub-app", "username": "bob@example.org", "refresh_token": "rt-initial-bob"},
        ],
        "device_code": {"interval": 1, "slow_down_on_polls": [2], "slow_down_increment": 1},
    }
    os.makedirs(tsdir)
    with open(os.path.join(work, "token-service.json"), "w") as f:
        json.dump(cfg, f)
    ts_err = open(os.path.join(work, "token-service.stderr"), "w")
    ts = subprocess.Popen([sys.executable, TOKEN_SERVICE, "--port", str(tport), "--state", tsdir,
                           "--config", os.path.join(work, "token-service.json"), "--verbose"],
                          stdout=subprocess.PIPE, stderr=ts_err, text=True)
    ready = ts.stdout.readline().strip()
    check(ready == "token-service ready http://127.0.0.1:%d" % tport, "token service prints one ready line", ready)
    http = Http("http://127.0.0.1:%d" % tport)
    dovecot_started = False
    try:
        dsh("start", w, plain, tls, "http://127.0.0.1:%d/introspect" % tport)
        dovecot_started = True
        check(port_open(plain) and port_open(tls), "start: both ports answer")
        ca = os.path.join(w, "ca.pem")
        dsh("user", w, "alice@example.org", "pw-1")

        # (a) plain LOGIN, password changes without restart -------------------------
        c = imaplib.IMAP4("127.0.0.1", plain)
        check("STARTTLS" in c.capabilities and "AUTH=XOAUTH2" in c.capabilities
              and "AUTH=OAUTHBEARER" in c.capabilities and "IDLE" in c.capabilities,
              "(a) capabilities: STARTTLS IDLE AUTH=XOAUTH2 AUTH=OAUTHBEARER", str(c.capabilities))
        check(c.login("alice@example.org", "pw-1")[0] == "OK", "(a) plain LOGIN")
        typ, caps = c.capability()
        caps = caps[0].decode().split()
        check("MOVE" in caps and "UIDPLUS" in caps and "IDLE" in caps, "(a) MOVE UIDPLUS IDLE after login")
        c.logout()
        dsh("user", w, "alice@example.org", "pw-2")   # same second, same length: must still apply
        for pw, want in (("pw-1", False), ("pw-2", True)):
            c = imaplib.IMAP4("127.0.0.1", plain)
            try:
                ok = c.login("alice@example.org", pw)[0] == "OK"
            except imaplib.IMAP4.error:
                ok = False
            check(ok == want, "(a) after `user` password change, %s %s" % (pw, "works" if want else "fails"))
            try:
                c.logout()
            except Exception:
                pass

        # (b) STARTTLS and implicit TLS against ca.pem -------------------------
        ctx = ssl.create_default_context(cafile=ca)
        c = imaplib.IMAP4("localhost", plain)
        c.starttls(ctx)
        check(c.login("alice@example.org", "pw-2")[0] == "OK", "(b) STARTTLS (ca.pem, hostname localhost) + LOGIN")
        c.logout()
        c = imaplib.IMAP4_SSL("localhost", tls, ssl_context=ctx)
        check(c.login("alice@example.org", "pw-2")[0] == "OK", "(b) implicit TLS (ca.pem, hostname localhost) + LOGIN")
        c.logout()
        ctx_ip = ssl.create_default_context(cafile=ca)
        with socket.create_connection(("127.0.0.1", tls)) as s, ctx_ip.wrap_socket(s, server_hostname="127.0.0.1") as t:
            check(t.recv(100).startswith(b"* OK"), "(b) implicit TLS verifies for IP 127.0.0.1 too")
        for name, fn in (("STARTTLS", lambda: imaplib.IMAP4("localhost", plain).starttls(ssl.create_default_context())),
                         ("implicit TLS", lambda: imaplib.IMAP4_SSL("localhost", tls, ssl_context=ssl.create_default_context()))):
            try:
                fn()
                check(False, "(b) %s without ca.pem fails verification" % name)
            except ssl.SSLCertVerificationError:
                check(True, "(b) %s without ca.pem fails verification" % name)
        wrong = ssl.create_default_context(cafile=ca)
        try:
            with socket.create_connection(("127.0.0.1", tls)) as s, wrong.wrap_socket(s, server_hostname="mail.example.org"):
                check(False, "(b) wrong hostname fails verification")
        except ssl.SSLCertVerificationError:
            check(True, "(b) wrong hostname fails verification")

        # (c) IDLE + append from another process ----------------------------------
        c = imaplib.IMAP4("127.0.0.1", plain)
        c.login("alice@example.org", "pw-2")
        c.select("INBOX")
        idle = RawIdle(c)
        check(idle.start().startswith(b"+"), "(c) IDLE accepted")
        msg = b"From: a@example.org\r\nTo: alice@example.org\r\nSubject: idle test\r\n\r\nhello\r\n"
        t0 = time.time()
        uid = dsh_out("append", w, "alice@example.org", "INBOX", stdin=msg).strip()
        t1 = time.time()
        line, seen = idle.wait_for(lambda l: l.endswith(b"EXISTS"), 5)
        t2 = time.time()
        check(line == b"* 1 EXISTS" and t2 - t1 < 1.0, "(c) IDLE sees * 1 EXISTS within 1 s of append",
              "%r %r" % (line, seen))
        log("     append took %.2fs, EXISTS %.2fs after append returned" % (t1 - t0, t2 - t1))
        check(uid == "1", "(c) append prints the new UID", uid)
        uid2 = dsh_out("append", w, "alice@example.org", "INBOX", stdin=b"Subject: 2\n\nlf only\n").strip()
        line, _ = idle.wait_for(lambda l: l.endswith(b"EXISTS"), 5)
        check(uid2 == "2" and line == b"* 2 EXISTS", "(c) second append: UID 2, * 2 EXISTS", "%r %r" % (uid2, line))
        c.sock.sendall(b"DONE\r\n")
        line, _ = idle.wait_for(lambda l: l.startswith(b"I1 "), 5)
        check(line is not None and line.startswith(b"I1 OK"), "(c) DONE ends IDLE")
        typ, data = c.uid("FETCH", "1", "(BODY.PEEK[])")
        fetched = data[0][1]
        check(fetched == msg, "(c) IMAP FETCH BODY[] == appended CRLF bytes")
        check(subprocess.run([DOVECOT_SH, "body", w, "alice@example.org", "INBOX", "1"],
                             capture_output=True).stdout == msg, "(c) `body` == appended bytes (CRLF message)")
        check(dsh("body", w, "alice@example.org", "INBOX", "2").stdout == b"Subject: 2\r\n\r\nlf only\r\n",
              "(c) `body` == what IMAP sends (LF message comes back CRLF)")
        check(dsh("stored", w, "alice@example.org", "INBOX", "2").stdout == b"Subject: 2\n\nlf only\n",
              "(c) `stored` == the stored file")
        c.uid("STORE", "1", "+FLAGS", r"(\Seen)")
        c.logout()
        check(dsh_out("uids", w, "alice@example.org", "INBOX") == "1 \\Seen\n2\n", "(c) uids",
              dsh_out("uids", w, "alice@example.org", "INBOX"))
        cnt = lambda *q: dsh_out("count", w, "alice@example.org", *q).strip()
        check((cnt("INBOX"), cnt("INBOX", "unseen"), cnt("INBOX", "seen"), cnt("Nope")) == ("2", "1", "1", "0"),
              "(c) count all/unseen/seen/missing folder")
        dsh("append", w, "alice@example.org", "Archive/2024", stdin=b"Subject: x\r\n\r\nx\r\n")
        folders = dsh_out("folders", w, "alice@example.org").split("\n")
        check("Archive/2024" in folders and "INBOX" in folders, "(c) append creates a folder; folders", str(folders))

        # (d) OAuth2 --------------------------------------------------------------
        st, tokbody = http.post("/tenant-x/oauth2/v2.0/token",
                                {"grant_type": "client_credentials",
                                 "scope": "https://outlook.office365.com/.default"},
                                auth=("cc-app", "cc-secret-1"))
        check(st == 200 and tokbody.get("token_type") == "Bearer" and tokbody.get("expires_in") == LIFETIME,
              "(d) client_credentials (basic auth, Microsoft path)", str(st))
        at = tokbody.get("access_token", "")
        tokens_seen.add(at)
        t_issued = time.time()
        ok1, _ = try_auth(plain, "XOAUTH2", xoauth2("alice@example.org", at))
        ok2, _ = try_auth(plain, "OAUTHBEARER", oauthbearer("alice@example.org", at, plain))
        ok3, _ = try_auth(plain, "XOAUTH2", xoauth2("alice@example.org", at), tls_ctx=ctx)
        check(ok1, "(d) AUTHENTICATE XOAUTH2 with a client-credentials token")
        check(ok2, "(d) AUTHENTICATE OAUTHBEARER with a client-credentials token")
        check(ok3, "(d) XOAUTH2 after STARTTLS")
        ok, ch = try_auth(plain, "XOAUTH2", xoauth2("bob@example.org", at))
        check(not ok, "(d) token of alice for user bob fails", repr(ch))
        ok, ch = try_auth(plain, "XOAUTH2", xoauth2("alice@example.org", "not-a-token"))
        check(not ok and ch == b'{"status":"401","schemes":"bearer","scope":"mail"}',
              "(d) unknown token: XOAUTH2 fails with the 401 JSON challenge", repr(ch))
        ok, ch = try_auth(plain, "OAUTHBEARER", oauthbearer("alice@example.org", "not-a-token", plain))
        check(not ok and ch == b'{"status":"invalid_token"}',
              "(d) unknown token: OAUTHBEARER fails with invalid_token", repr(ch))
        st, body = http.post("/token", {"grant_type": "client_credentials", "client_id": "cc-app",
                                        "client_secret": "cc-secret-1", "scope": "https://outlook.office365.com/.default"})
        check(st == 200, "(d) client_credentials (secret in the body, /token)")
        tokens_seen.add(body.get("access_token", ""))
        st, body = http.post("/token", {"grant_type": "client_credentials", "client_id": "cc-app",
                                        "client_secret": "wrong", "scope": "https://outlook.office365.com/.default"})
        check(st == 401 and body.get("error") == "invalid_client"
              and body.get("error_description", "").startswith("AADSTS7000215"), "(d) wrong secret: 401 invalid_client AADSTS7000215")
        st, body = http.post("/token", {"grant_type": "client_credentials", "client_id": "cc-app",
                                        "client_secret": "cc-secret-1", "scope": "https://graph.microsoft.com/.default"})
        check(st == 400 and body.get("error") == "invalid_scope", "(d) scope not allowed: invalid_scope")
        st, body = http.post("/token", {"grant_type": "refresh_token", "client_id": "cc-app",
                                        "client_secret": "cc-secret-1", "refresh_token": "x"})
        check(st == 400 and body.get("error") == "unauthorized_client", "(d) grant not allowed: unauthorized_client")
        st, body = http.post("/admin/secret", {"client_id": "cc-app", "client_secret": "cc-secret-2"})
        st1, _ = http.post("/token", {"grant_type": "client_credentials", "client_id": "cc-app",
                                      "client_secret": "cc-secret-1", "scope": "https://outlook.office365.com/.default"})
        st2, b2 = http.post("/token", {"grant_type": "client_credentials", "client_id": "cc-app",
                                       "client_secret": "cc-secret-2", "scope": "https://outlook.office365.com/.default"})
        tokens_seen.add(b2.get("access_token", ""))
        check(st == 200 and st1 == 401 and st2 == 200, "(d) /admin/secret: old secret 401, new one works")

        # refresh token: rotation, reuse, revoke
        st, r1 = http.post("/token", {"grant_type": "refresh_token", "client_id": "pub-app",
                                      "refresh_token": "rt-initial-bob"})
        rt1 = r1.get("refresh_token", "")
        tokens_seen.update([rt1, r1.get("access_token", "")])
        check(st == 200 and rt1 and rt1 != "rt-initial-bob", "(d) refresh_token grant: new access + rotated refresh token")
        ok, _ = try_auth(plain, "XOAUTH2", xoauth2("bob@example.org", r1.get("access_token", "")))
        check(ok, "(d) XOAUTH2 for bob with the refreshed token")
        st, body = http.post("/token", {"grant_type": "refresh_token", "client_id": "pub-app",
                                        "refresh_token": "rt-initial-bob"})
        check(st == 400 and body.get("error") == "invalid_grant", "(d) used refresh token: invalid_grant")
        state = http.get("/admin/state")
        check(state["users"]["bob@example.org"]["refresh_token"] == rt1, "(d) /admin/state shows the rotated token")
        http.post("/admin/revoke", {"refresh_token": rt1})
        st, body = http.post("/token", {"grant_type": "refresh_token", "client_id": "pub-app", "refresh_token": rt1})
        check(st == 400 and body.get("error") == "invalid_grant"
              and "AADSTS50173" in body.get("error_description", ""), "(d) revoked refresh token: invalid_grant")

        # device code
        st, dc = http.post("/common/oauth2/v2.0/devicecode", {"client_id": "pub-app",
                                                               "scope": "https://outlook.office365.com/IMAP.AccessAsUser.All offline_access"})
        check(st == 200 and {"device_code", "user_code", "verification_uri", "expires_in", "interval"} <= set(dc),
              "(d) devicecode answer")
        tokens_seen.add(dc.get("device_code", ""))
        poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": "pub-app",
                "device_code": dc.get("device_code", "")}
        st, b1 = http.post("/common/oauth2/v2.0/token", poll)
        st2, b2 = http.post("/common/oauth2/v2.0/token", poll)
        check(st == 400 and b1.get("error") == "authorization_pending", "(d) device poll 1: authorization_pending")
        check(st2 == 400 and b2.get("error") == "slow_down", "(d) device poll 2: slow_down (configured)")
        http.post("/admin/approve", {"user_code": dc.get("user_code", "")})
        st, b3 = http.post("/common/oauth2/v2.0/token", poll)
        tokens_seen.update([b3.get("access_token", ""), b3.get("refresh_token", "")])
        check(st == 200 and b3.get("refresh_token"), "(d) after /admin/approve: tokens")
        ok, _ = try_auth(plain, "OAUTHBEARER", oauthbearer("bob@example.org", b3.get("access_token", ""), plain))
        check(ok, "(d) OAUTHBEARER with the device-flow token")

        # no token cache in Dovecot: revoking access tokens takes effect at once
        bob_at = b3.get("access_token", "")
        http.post("/admin/revoke", {"username": "bob@example.org"})
        ok, _ = try_auth(plain, "XOAUTH2", xoauth2("bob@example.org", bob_at))
        check(not ok, "(d) revoked access token fails at once (Dovecot re-validates every login)")

        # expiry: the first token is dead after its lifetime; a session logged
        # in with it before stays (Dovecot does not check tokens again)
        live = imaplib.IMAP4("127.0.0.1", plain)
        live_ok, _ = sasl(live, "XOAUTH2", xoauth2("alice@example.org", at))
        time.sleep(max(0, t_issued + LIFETIME + 1 - time.time()))
        ok1, _ = try_auth(plain, "XOAUTH2", xoauth2("alice@example.org", at))
        ok2, _ = try_auth(plain, "OAUTHBEARER", oauthbearer("alice@example.org", at, plain))
        check(not ok1 and not ok2, "(d) expired token: XOAUTH2 and OAUTHBEARER fail")
        check(live_ok and live.noop()[0] == "OK" and live.select("INBOX")[0] == "OK",
              "(d) a session authenticated before expiry keeps working after it")
        live.logout()

        # the token service never shows secrets or tokens (but in /admin/state)
        logtext = json.dumps(http.get("/admin/log"))
        with open(os.path.join(tsdir, "requests.jsonl")) as f:
            logtext += f.read()
        ts_err.flush()
        with open(os.path.join(work, "token-service.stderr")) as f:
            logtext += f.read()
        leaked = [s for s in (secrets_used | tokens_seen) if s and s in logtext]
        check(not leaked and '"grant_type": "client_credentials"' in logtext,
              "(d) token-service log/output without secrets or tokens", "%d leaked" % len(leaked))
        with open(os.path.join(w, "dovecot.log")) as f:
            dlog = f.read()
        check(not [s for s in tokens_seen if s and s in dlog], "(d) dovecot.log without tokens (auth_debug off)")

        # (e) kick drops an IDLE session --------------------------------------------
        c = imaplib.IMAP4("127.0.0.1", plain)
        c.login("alice@example.org", "pw-2")
        c.select("INBOX")
        idle = RawIdle(c)
        idle.start()
        t0 = time.time()
        dsh("kick", w, "alice@example.org")
        line, seen = idle.wait_for(lambda l: l == b"", 5)
        check(line == b"" and time.time() - t0 < 3, "(e) kick: BYE and EOF on the IDLE session", repr(seen))

        # (f) restart keeps data ------------------------------------------------------
        before = dsh_out("count", w, "alice@example.org", "INBOX").strip()
        t0 = time.time()
        dsh("restart", w)
        log("     restart took %.1fs" % (time.time() - t0))
        c = imaplib.IMAP4("127.0.0.1", plain)
        ok = c.login("alice@example.org", "pw-2")[0] == "OK"
        typ, data = c.select("INBOX")
        c.logout()
        check(ok and data[0].decode() == before == "2", "(f) restart: login works, INBOX still has 2 messages")
        logins = dsh_out("logins", w).splitlines()
        check("alice@example.org PLAIN plain" in logins and "alice@example.org PLAIN TLS" in logins
              and "alice@example.org XOAUTH2 plain" in logins and "bob@example.org OAUTHBEARER plain" in logins,
              "(f) logins lists user, mechanism, TLS", str(logins[:4]))

        # (g) delete + create folder: new UIDVALIDITY -------------------------------
        dsh("create-folder", w, "alice@example.org", "Processed")
        s1 = dsh_out("status", w, "alice@example.org", "Processed").split()
        dsh("append", w, "alice@example.org", "Processed", stdin=b"Subject: p\r\n\r\np\r\n")
        dsh("delete-folder", w, "alice@example.org", "Processed")
        gone = "Processed" not in dsh_out("folders", w, "alice@example.org").split("\n")
        dsh("create-folder", w, "alice@example.org", "Processed")
        s2 = dsh_out("status", w, "alice@example.org", "Processed").split()
        check(gone and s1[0] == "uidvalidity" and s1[1] != s2[1] and s2[3:] == ["1", "messages", "0"],
              "(g) delete-folder + create-folder: new UIDVALIDITY, empty", "%s -> %s" % (s1, s2))

        # (h) stop leaves nothing -------------------------------------------------------
        conf = os.path.join(w, "dovecot.conf")
        dsh("stop", w)
        dovecot_started = False
        left = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if conf in cmd or "dovecot-ci-imap-%d/" % plain in cmd:
                    left.append(cmd)
        check(not left and not port_open(plain) and not port_open(tls),
              "(h) stop: no process of this instance, ports closed", str(left))
    except Exception as e:   # report, then clean up
        import traceback
        traceback.print_exc()
        failures.append("exception: %s" % e)
    finally:
        if dovecot_started:
            dsh("stop", w, check_rc=False)
        ts.terminate()
        try:
            ts.wait(5)
        except subprocess.TimeoutExpired:
            ts.kill()
        ts_err.close()
        if not args.keep and not failures:
            shutil.rmtree(work, ignore_errors=True)
        elif failures:
            log("kept %s for inspection" % work)
    log("%s: %d failure(s)" % ("PASS" if not failures else "FAIL", len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
