#!/usr/bin/env bash
# Throw-away Dovecot IMAP server for the `chatwoot-ingress watch` tests
# (IMAP IDLE, STARTTLS / implicit TLS with a private CA, XOAUTH2/OAUTHBEARER
# against tests/interop/imap/token-service.py).  See README.md next to it.
#
#   dovecot.sh setup
#   dovecot.sh start   WORKDIR PLAIN_PORT TLS_PORT [OAUTH2_INTROSPECTION_URL]
#   dovecot.sh user    WORKDIR NAME PASSWORD          # add or change a user
#   dovecot.sh append  WORKDIR USER FOLDER < message  # prints the new UID
#   dovecot.sh count   WORKDIR USER FOLDER [SEARCH...]
#   dovecot.sh uids    WORKDIR USER FOLDER            # "UID FLAGS..." lines
#   dovecot.sh body    WORKDIR USER FOLDER UID        # bytes of UID FETCH BODY[]
#   dovecot.sh stored  WORKDIR USER FOLDER UID        # the stored file (LF ends)
#   dovecot.sh folders WORKDIR USER
#   dovecot.sh create-folder|delete-folder WORKDIR USER FOLDER
#   dovecot.sh status  WORKDIR USER FOLDER  # uidvalidity N uidnext N messages N
#   dovecot.sh kick    WORKDIR USER
#   dovecot.sh restart WORKDIR
#   dovecot.sh stop    WORKDIR
#   dovecot.sh logins  WORKDIR                        # "USER METHOD TLS|plain"
#   dovecot.sh doveadm WORKDIR ARGS...                # any doveadm command
#
# Everything lives under WORKDIR (config, base_dir, state, log, CA and
# certificates, passwd-file, mail) and listens on 127.0.0.1 only; doveadm is
# always run with -c WORKDIR/dovecot.conf, so the system dovecot (which need
# not run) is never touched.  Mail belongs to nobody:nogroup.  WORKDIR is made
# world-searchable (chmod a+x, and o+x on parents that lack it, like a 0700
# mktemp dir): login processes run as dovenull, auth as dovecot, mail
# processes as nobody.
# DOVECOT_AUTH_DEBUG=1 at `start` adds auth_debug = yes: more detail in
# dovecot.log, including OAuth2 tokens (passwords stay hidden).
set -euo pipefail

die() { echo "dovecot.sh: $*" >&2; exit 1; }
usage() { die "usage: dovecot.sh setup|start|user|append|count|uids|body|stored|folders|create-folder|delete-folder|status|kick|restart|stop|logins|doveadm WORKDIR ..."; }

cmd=${1:-}; [ -n "$cmd" ] || usage
shift

wdir() { # resolve WORKDIR of an existing instance
  [ -n "${1:-}" ] || usage
  local w; w=$(realpath "$1")
  [ -f "$w/dovecot.conf" ] || die "$w/dovecot.conf missing (run start first)"
  echo "$w"
}

dadm() { # WORKDIR doveadm-args...
  local w=$1; shift
  doveadm -c "$w/dovecot.conf" "$@"
}

port_open() { (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_ports() { # WORKDIR PORT...
  local w=$1 p; shift
  for _ in $(seq 100); do
    local all=1
    for p in "$@"; do port_open "$p" || { all=0; break; }; done
    [ $all = 1 ] && return 0
    sleep 0.1
  done
  echo "dovecot did not start; see $w/dovecot.log" >&2
  tail -20 "$w/dovecot.log" >&2 || true
  return 1
}

mailbox_exists() { # WORKDIR USER FOLDER (dies when doveadm cannot answer)
  local out
  out=$(dadm "$1" mailbox list -u "$2") || die "doveadm mailbox list failed (is dovecot running? see $1/dovecot.log)"
  grep -qxF -- "$3" <<<"$out"
}

# --- certificates: a private CA (ca.pem) and a localhost/127.0.0.1 server cert
make_certs() {
  local w=$1 d=$1/tls
  mkdir -p "$d"
  [ -s "$w/ca.pem" ] && [ -s "$d/server.pem" ] && [ -s "$d/server.key" ] && return 0
  umask 077
  cat > "$d/ca.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = chatwoot-ingress test CA (not trusted anywhere)
[v3_ca]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
CNF
  openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -config "$d/ca.cnf" -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null \
    || die "openssl: cannot create the CA"
  openssl req -new -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null \
    || die "openssl: cannot create the server key"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$d/ca.cnf" -extensions v3_server \
    -out "$d/server.pem" 2>/dev/null || die "openssl: cannot sign the server certificate"
  umask 022
  chmod 644 "$d/ca.pem" "$d/server.pem"
  cp "$d/ca.pem" "$w/ca.pem"
}

write_conf() { # WORKDIR PLAIN_PORT TLS_PORT [INTROSPECTION_URL]
  local w=$1 plain=$2 tls=$3 url=${4:-} mechs="plain login" oauth="" debug=no
  [ "${DOVECOT_AUTH_DEBUG:-0}" = 0 ] || debug=yes
  if [ -n "$url" ]; then
    mechs="plain login xoauth2 oauthbearer"
    cat > "$w/dovecot-oauth2.conf.ext" <<EXT
introspection_url = $url
introspection_mode = post
username_attribute = username
active_attribute = active
active_value = true
EXT
    chmod 644 "$w/dovecot-oauth2.conf.ext"
    oauth="passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $w/dovecot-oauth2.conf.ext
}"
  fi
  local dh=""
  [ -r /usr/share/dovecot/dh.pem ] && dh="ssl_dh = </usr/share/dovecot/dh.pem"
  cat > "$w/dovecot.conf" <<CONF
# generated by tests/interop/imap/dovecot.sh start $plain $tls ${url:+(oauth2)}
instance_name = ci-imap-$plain
base_dir = $w/run
state_dir = $w/state
log_path = $w/dovecot.log
info_log_path = $w/dovecot.log
debug_log_path = $w/dovecot.log
protocols = imap
listen = 127.0.0.1
shutdown_clients = yes

ssl = yes
ssl_cert = <$w/tls/server.pem
ssl_key = <$w/tls/server.key
$dh
disable_plaintext_auth = no

auth_mechanisms = $mechs
# no caching: every login (password or token) is checked again
auth_cache_size = 0
auth_verbose = yes
auth_verbose_passwords = no
auth_debug = $debug
auth_debug_passwords = no
auth_failure_delay = 0
$oauth
passdb {
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN $w/passwd
}
userdb {
  driver = static
  # any name has a mailbox: OAuth2-only users need no passwd-file line
  args = allow_all_users=yes uid=nobody gid=nogroup home=$w/home/%u
}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~/Maildir
namespace inbox {
  inbox = yes
  separator = /
}
mail_max_userip_connections = 100
# IDLE: inotify wakes the session (Dovecot batches changes for ~0.5 s);
# this is only the fallback poll
mailbox_idle_check_interval = 1 secs

# no auth penalty: failed logins from 127.0.0.1 would otherwise slow every
# following attempt down by up to 15 s
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $plain
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $tls
    ssl = yes
  }
}
CONF
  printf '%s %s\n' "$plain" "$tls" > "$w/ports"
}

launch() { # WORKDIR
  local w=$1 plain tls
  read -r plain tls < "$w/ports"
  port_open "$plain" && die "127.0.0.1:$plain is already in use"
  port_open "$tls" && die "127.0.0.1:$tls is already in use"
  # the daemon must not keep the caller's stdout/stderr (pipes) open
  dovecot -c "$w/dovecot.conf" </dev/null >/dev/null 2>"$w/dovecot.start.err" \
    || die "dovecot refused to start: $(cat "$w/dovecot.start.err"); see $w/dovecot.log"
  wait_ports "$w" "$plain" "$tls"
}

# All processes of the instance: the master and its descendants (from /proc,
# so procps need not be installed).
tree() { # PID
  local p f pid comm state ppid
  echo "$1"
  for f in /proc/[0-9]*/stat; do
    read -r pid comm state ppid _ < "$f" 2>/dev/null || continue
    [ "$ppid" = "$1" ] && tree "$pid"
  done
  return 0
}

halt() { # WORKDIR
  local w=$1 pidf=$1/run/master.pid pid procs p
  [ -f "$pidf" ] || return 0
  pid=$(cat "$pidf")
  if ! kill -0 "$pid" 2>/dev/null; then rm -f "$pidf"; return 0; fi
  procs=$(tree "$pid")
  kill "$pid" 2>/dev/null || true
  # SIGTERM returns at once; wait for the master and then for its children
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    local alive=""
    for p in $procs; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
    [ -z "$alive" ] && break
    sleep 0.05
  done
  for p in $procs; do
    # only what is still a dovecot process (pids are not reused that fast)
    if [ -r "/proc/$p/exe" ] && readlink "/proc/$p/exe" | grep -q dovecot; then
      kill -9 "$p" 2>/dev/null || true
    fi
  done
  rm -f "$pidf"
}

# Dovecot's processes run as dovenull, dovecot and nobody: WORKDIR and its
# parents must be searchable (o+x, no listing) for them, e.g. a 0700 mktemp
# dir above WORKDIR.  System directories are left alone.
searchable() { # WORKDIR
  local d=$1
  chmod a+x "$d"
  d=$(dirname "$d")
  while [ "$d" != / ]; do
    if ! runuser -u nobody -- test -x "$d"; then
      case "$d" in
        /root|/home|/var|/etc|/usr|/srv|/opt) die "$d is not searchable for other users; use a WORKDIR elsewhere (e.g. under /tmp)";;
      esac
      chmod o+x "$d"
    fi
    d=$(dirname "$d")
  done
}

write_passwd() { # WORKDIR NAME PASSWORD : atomic, and the mtime always moves
  local w=$1 name=$2 pass=$3 f=$1/passwd old=0 now tmp
  case "$name$pass" in *:*|*$'\n'*) die "no ':' or newline in user names or passwords";; esac
  [ -f "$f" ] && old=$(stat -c %Y "$f")
  tmp=$(mktemp "$w/.passwd.XXXXXX")
  { [ -f "$f" ] && awk -F: -v n="$name" '$1 != n' "$f"
    printf '%s:{PLAIN}%s\n' "$name" "$pass"; } > "$tmp"
  chmod 640 "$tmp"; chgrp dovecot "$tmp"
  # passwd-file is re-read when its mtime or size changes: force a new mtime
  now=$(date +%s)
  [ "$now" -gt "$old" ] || now=$((old + 1))
  touch -d "@$now" "$tmp"
  mv -f "$tmp" "$f"
  # ... and auth stats it at most once a second: a lookup still in this
  # second could serve the old copy, so return only when the second is over
  sleep "$(date +%N | awk '{ printf "%.3f", 1.02 - $1 / 1e9 }')"
}

case "$cmd" in
  setup)
    missing=""
    command -v dovecot >/dev/null || missing="$missing dovecot"
    [ -x /usr/lib/dovecot/imap ] || missing="$missing imap"
    command -v doveadm >/dev/null || missing="$missing doveadm"
    command -v openssl >/dev/null || missing="$missing openssl"
    if [ -n "$missing" ]; then
      die "missing:$missing (apt-get install -y dovecot-imapd openssl)"
    fi
    id dovenull >/dev/null 2>&1 && id dovecot >/dev/null 2>&1 \
      || die "users dovenull/dovecot missing (reinstall dovecot-core)"
    ;;

  start)
    [ $# -ge 3 ] || usage
    mkdir -p "$1"
    w=$(realpath "$1"); plain=$2; tls=$3; url=${4:-}
    [ -f "$w/run/master.pid" ] && kill -0 "$(cat "$w/run/master.pid")" 2>/dev/null \
      && die "already running in $w"
    searchable "$w"
    mkdir -p "$w/run" "$w/state" "$w/home"
    chown nobody:nogroup "$w/home"
    [ -f "$w/passwd" ] || { : > "$w/passwd"; chmod 640 "$w/passwd"; chgrp dovecot "$w/passwd"; }
    make_certs "$w"
    write_conf "$w" "$plain" "$tls" "$url"
    launch "$w"
    ;;

  user)
    [ $# -eq 3 ] || usage
    w=$(wdir "$1")
    write_passwd "$w" "$2" "$3"
    ;;

  append)
    [ $# -eq 3 ] || usage
    w=$(wdir "$1"); u=$2; f=$3
    msg=$(mktemp "$w/.msg.XXXXXX")
    trap 'rm -f "$msg"' EXIT
    cat > "$msg"
    chmod 644 "$msg"
    (
      flock 9   # one harness append at a time, so "new UID >= old UIDNEXT" is ours
      mailbox_exists "$w" "$u" "$f" || dadm "$w" mailbox create -u "$u" "$f" 2>/dev/null \
        || mailbox_exists "$w" "$u" "$f" || die "cannot create folder $f"
      next=$(dadm "$w" -f flow mailbox status -u "$u" uidnext "$f" | sed 's/.*uidnext=//')
      dadm "$w" save -u "$u" -m "$f" < "$msg"
      dadm "$w" search -u "$u" mailbox "$f" uid "$next:*" | awk 'NR==1 {print $2}'
    ) 9>"$w/.append.lock"
    ;;

  count)
    [ $# -ge 3 ] || usage
    w=$(wdir "$1"); u=$2; f=$3; shift 3
    if ! mailbox_exists "$w" "$u" "$f"; then echo 0; exit 0; fi
    [ $# -gt 0 ] || set -- all
    dadm "$w" search -u "$u" mailbox "$f" "$@" | wc -l
    ;;

  uids)
    [ $# -eq 3 ] || usage
    w=$(wdir "$1"); u=$2; f=$3
    mailbox_exists "$w" "$u" "$f" || exit 0
    # -f tab: a header line, then "uid<TAB>flags"; \Recent says nothing useful
    dadm "$w" -f tab fetch -u "$u" 'uid flags' mailbox "$f" all \
      | awk -F'\t' 'NR > 1 { n = split($2, fl, " "); s = $1
          for (i = 1; i <= n; i++) if (fl[i] != "\\Recent") s = s " " fl[i]
          print s }' | sort -n
    ;;

  stored)
    # The message file as Dovecot stored it: with the default
    # mail_save_crlf = no, CRLF line ends were saved as LF.
    [ $# -eq 4 ] || usage
    w=$(wdir "$1"); u=$2; f=$3; uid=$4
    path=$(dadm "$w" mailbox path -u "$u" "$f")
    found=$(dadm "$w" -f tab fetch -u "$u" 'uid' mailbox "$f" uid "$uid" | awk 'NR > 1')
    [ "$found" = "$uid" ] || die "no UID $uid in $f"
    # dovecot-uidlist: "UID [ext...] :basename"; the file is in cur/ or new/
    base=$(awk -v u="$uid" 'NR > 1 && $1 == u { sub(/^[^:]*:/, ""); print; exit }' "$path/dovecot-uidlist")
    [ -n "$base" ] || die "UID $uid not in $path/dovecot-uidlist"
    file=$(find "$path/cur" "$path/new" -maxdepth 1 -type f \( -name "$base" -o -name "$base:*" \) | head -1)
    [ -n "$file" ] || die "message file $base not found under $path"
    cat "$file"
    ;;

  body)
    # The message exactly as an IMAP client (the watcher) gets it:
    # UID FETCH BODY.PEEK[] through a PREAUTH imap process (no login, no
    # network, no \Seen).  Dovecot sends every line end as CRLF (and NUL as
    # 0x80), so a message appended with CRLF line ends comes back unchanged.
    [ $# -eq 4 ] || usage
    w=$(wdir "$1"); u=$2; f=$3; uid=$4
    # shellcheck disable=SC2016
    py='
import sys, re
data = sys.stdin.buffer.read()
m = re.search(rb"\* \d+ FETCH \(.*?BODY\[\] \{(\d+)\}\r\n", data)
if not m:
    sys.stderr.write("dovecot.sh: no such message\n"); sys.exit(1)
n = int(m.group(1)); sys.stdout.buffer.write(data[m.end():m.end() + n])
'
    q=${f//\\/\\\\}; q=${q//\"/\\\"}
    printf 'a EXAMINE "%s"\r\nb UID FETCH %s BODY.PEEK[]\r\nc LOGOUT\r\n' "$q" "$uid" \
      | dadm "$w" exec imap -u "$u" 2>/dev/null | python3 -c "$py"
    ;;

  folders)
    [ $# -eq 2 ] || usage
    w=$(wdir "$1")
    dadm "$w" mailbox list -u "$2"
    ;;

  create-folder)
    [ $# -eq 3 ] || usage
    w=$(wdir "$1")
    mailbox_exists "$w" "$2" "$3" || dadm "$w" mailbox create -u "$2" "$3"
    ;;

  delete-folder)
    [ $# -eq 3 ] || usage
    w=$(wdir "$1")
    mailbox_exists "$w" "$2" "$3" || exit 0
    dadm "$w" mailbox delete -u "$2" "$3"
    ;;

  status)
    [ $# -eq 3 ] || usage
    w=$(wdir "$1")
    mailbox_exists "$w" "$2" "$3" || die "no folder $3"
    out=$(dadm "$w" -f flow mailbox status -u "$2" 'uidvalidity uidnext messages' "$3")
    v() { printf '%s\n' "$out" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
    echo "uidvalidity $(v uidvalidity) uidnext $(v uidnext) messages $(v messages)"
    ;;

  kick)
    [ $# -eq 2 ] || usage
    w=$(wdir "$1")
    dadm "$w" kick "$2" >/dev/null
    ;;

  restart)
    [ $# -eq 1 ] || usage
    w=$(wdir "$1")
    halt "$w"
    launch "$w"
    ;;

  stop)
    [ $# -eq 1 ] || usage
    [ -d "$1" ] || exit 0
    halt "$(realpath "$1")"
    ;;

  logins)
    [ $# -eq 1 ] || usage
    w=$(wdir "$1")
    # imap-login: Info: Login: user=<alice>, method=PLAIN, rip=..., lip=..., mpid=..., TLS, session=<...>
    [ -f "$w/dovecot.log" ] || exit 0
    sed -n 's/.*imap-login: \(Info: \)\?Login: user=<\([^>]*\)>, method=\([^,]*\),\(.*\)/\2 \3 \4/p' "$w/dovecot.log" \
      | awk '{ t = "plain"; if ($0 ~ /, TLS/) t = "TLS"; print $1, $2, t }'
    ;;

  doveadm)
    w=$(wdir "$1"); shift
    dadm "$w" "$@"
    ;;

  *) usage ;;
esac
