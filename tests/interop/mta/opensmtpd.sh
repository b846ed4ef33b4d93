#!/usr/bin/env bash
# Throw-away OpenSMTPD 6.8 (Debian 12) that delivers through chatwoot-ingress
# using packaging/opensmtpd/smtpd.conf.
#
#   opensmtpd.sh available                       # whether it can run here (only looks)
#   opensmtpd.sh start WORKDIR RELAYER_BIN CONFIG_TOML PORT DOMAIN
#   opensmtpd.sh send  WORKDIR FROM TO < msg     # SMTP to 127.0.0.1:PORT
#   opensmtpd.sh queue WORKDIR                   # smtpctl show queue
#   opensmtpd.sh flush WORKDIR                   # smtpctl schedule all
#   opensmtpd.sh wait  WORKDIR [TRIES]           # until each envelope was tried TRIES times
#   opensmtpd.sh bounces WORKDIR                 # bounces received so far
#   opensmtpd.sh stop  WORKDIR
#
# The opensmtpd package conflicts with postfix (both provide mail-transport-
# agent and /usr/sbin/sendmail), so tests/interop/install-deps does not
# install it: it runs `apt-get download opensmtpd` and unpacks it into
# /opt/ci-opensmtpd.  The binary has some paths compiled in, which
# install-deps and start therefore use for real:
#   /usr/libexec/opensmtpd  (mail.mda etc.; install-deps symlinks it to /opt)
#   /var/spool/smtpd        (the queue; start empties it)
#   /var/run/smtpd.sock     (control socket)
# so only one instance can run at a time.  Postfix uses none of these.
# System changes by install-deps: the above unpack and symlink, system
# users/groups opensmtpd and opensmtpq (what Debian's postinst creates) and
# chatwoot-ingress (the "user" of the shipped action), and the libraries
# libevent-2.1-7 libdb5.3 (plus libssl3, zlib1g, libpam0g, libcrypt1,
# present on any Debian 12).
#
# start builds WORKDIR/smtpd.conf from the shipped file, changing only the
# listen address (127.0.0.1 port PORT), the domain and the two
# chatwoot-ingress paths, and appends a test-only rule that stores bounces
# sent to anything@bounce.test in WORKDIR/bounces (a Maildir).  Use a sender
# @bounce.test so no bounce ever leaves the machine.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
conf_src="$here/../../../packaging/opensmtpd/smtpd.conf"
root=/opt/ci-opensmtpd
smtpd=$root/usr/sbin/smtpd
smtpctl=$root/usr/sbin/smtpctl
sock=/var/run/smtpd.sock

cmd=${1:?usage: opensmtpd.sh available|start|send|queue|flush|wait|bounces|stop WORKDIR ...}
shift

sub() { # sub FILE REGEX REPLACEMENT: the regex must match exactly one line
  local n
  n=$(grep -c -E "$2" "$1" || true)
  [ "$n" = 1 ] || { echo "opensmtpd.sh: expected one line matching '$2', found $n" >&2; exit 1; }
  REPL=$3 perl -i -pe "s{$2}{\$ENV{REPL}}" "$1"
}

running() { [ -f "$1/smtpd.pid" ] && kill -0 "$(cat "$1/smtpd.pid")" 2>/dev/null; }

case "$cmd" in
  available)
    # Only looks: tests/interop/install-deps unpacks it and makes the accounts.
    missing() { echo "opensmtpd.sh: $* (tests/interop/install-deps)" >&2; exit 1; }
    [ -x "$smtpd" ] && [ -x "$smtpctl" ] || missing "no $smtpd"
    if ldd "$smtpd" | grep -q 'not found'; then
      ldd "$smtpd" | grep 'not found' >&2
      missing "libraries missing"
    fi
    [ -e /usr/libexec/opensmtpd ] || missing "no /usr/libexec/opensmtpd"
    [ -d /var/lib/opensmtpd/empty ] || missing "no /var/lib/opensmtpd/empty"
    for account in opensmtpd opensmtpq chatwoot-ingress; do
      getent passwd "$account" >/dev/null || missing "no $account account"
    done
    [ -g "$smtpctl" ] && [ "$(stat -c %G "$smtpctl")" = opensmtpq ] ||
      missing "$smtpctl is not setgid opensmtpq"
    ;;
  start)
    w=$(realpath "$1") bin=$2 conf=$3 port=$4 domain=$5
    if [ -S "$sock" ] && "$smtpctl" show status >/dev/null 2>&1; then
      echo "opensmtpd.sh: an smtpd is already running ($sock)" >&2; exit 1
    fi
    if ! runuser -u chatwoot-ingress -- test -x "$bin" -a -r "$conf"; then
      echo "opensmtpd.sh: chatwoot-ingress cannot execute $bin or read $conf (mktemp dirs are 0700)" >&2
      exit 1
    fi
    rm -rf /var/spool/smtpd       # hard-coded queue: start from an empty one
    mkdir -p "$w/bounces"/{new,cur,tmp}
    chmod a+x "$w"; chown -R nobody:nogroup "$w/bounces"
    c="$w/smtpd.conf"
    cp "$conf_src" "$c"
    sub "$c" '^listen on 0\.0\.0\.0$' "listen on 127.0.0.1 port $port"
    sub "$c" '"support\.example\.com"' "\"$domain\""
    sub "$c" '"/usr/bin/chatwoot-ingress ' "\"$bin "
    sub "$c" ' /etc/chatwoot-ingress/config\.toml ' " $conf "
    cat >> "$c" <<CONF

# --- test only: keep bounces on this machine
table ci_bounces_virtual { "@" = "nobody" }
action "ci_bounces" maildir "$w/bounces" virtual <ci_bounces_virtual> user nobody
match from any for domain "bounce.test" action "ci_bounces"
CONF
    "$smtpd" -n -f "$c" >/dev/null 2>&1 || "$smtpd" -n -f "$c"   # config check
    echo "$port" > "$w/port"
    # -d: foreground, log to stderr.  setsid: own process group, for stop.
    setsid "$smtpd" -d -v -f "$c" > "$w/smtpd.log" 2>&1 < /dev/null &
    echo $! > "$w/smtpd.pid"
    for _ in $(seq 50); do
      if (: <>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then exit 0; fi
      running "$w" || break
      sleep 0.1
    done
    echo "smtpd did not start:" >&2; tail -20 "$w/smtpd.log" >&2; exit 1
    ;;
  send)
    w=$1 from=$2 to=$3
    # the message comes on our stdin, so the script goes in -c
    python3 -c '
import smtplib, sys
port, sender, rcpt = int(sys.argv[1]), sys.argv[2], sys.argv[3]
data = sys.stdin.buffer.read()
try:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail(sender, [rcpt], data)
    print("accepted")
except smtplib.SMTPException as e:
    sys.exit("refused: %s" % e)
' "$(cat "$w/port")" "$from" "$to"
    ;;
  queue)
    "$smtpctl" show queue
    ;;
  flush)
    "$smtpctl" schedule all
    ;;
  wait)
    # until every queued envelope has been tried at least TRIES times
    # (default 1; after a flush pass one more than before) and none is being
    # delivered.  show queue: field 11 = tries, 12 = state.  Max 30 s.
    tries=${2:-1}
    for _ in $(seq 300); do
      "$smtpctl" show queue | awk -F'|' -v n="$tries" \
        '$11 < n || $12 == "inflight" {busy=1} END {exit busy}' && exit 0
      sleep 0.1
    done
    echo "opensmtpd.sh: queue still busy" >&2; exit 1
    ;;
  bounces)
    find "$1/bounces/new" "$1/bounces/cur" -type f -exec cat {} +
    ;;
  stop)
    w=$(realpath "$1")
    if [ -f "$w/smtpd.pid" ]; then
      pid=$(cat "$w/smtpd.pid")
      # Each delivery runs in its own session (setsid) whose leader is a
      # direct child of smtpd; note those sessions before smtpd goes away.
      sids=$(ps -o pid= --ppid "$pid" || true)
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 -- "-$pid" 2>/dev/null || true    # smtpd's own process group
      for sid in $sids; do                      # deliveries still running
        ps -o pid= -s "$sid" | xargs -r kill -9 2>/dev/null || true
      done
      rm -f "$w/smtpd.pid"
    fi
    ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
