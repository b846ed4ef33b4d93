#!/usr/bin/env bash
# Throw-away Dovecot IMAP server for the getmail/fetchmail interop tests.
#
#   dovecot.sh available                        # whether dovecot-imapd is here (only looks)
#   dovecot.sh start WORKDIR PORT USER PASSWORD # IMAP, plaintext, 127.0.0.1:PORT only
#   dovecot.sh put   WORKDIR FILE...            # drop raw messages into INBOX (Maildir new/)
#   dovecot.sh append WORKDIR < msg             # same, one message from stdin
#   dovecot.sh count WORKDIR                    # messages left in INBOX (new/ + cur/)
#   dovecot.sh stop  WORKDIR
#
# Private config WORKDIR/dovecot.conf; base_dir, logs and the Maildir all live
# under WORKDIR, so this never touches the system dovecot (which need not run).
# The mailbox belongs to nobody:nogroup (no extra account needed).  WORKDIR is
# made world-searchable (chmod a+x): the login processes run as dovenull.
set -euo pipefail

cmd=${1:?usage: dovecot.sh available|start|put|append|count|stop WORKDIR ...}
shift

maildir() { echo "$1/Maildir"; }

deliver() { # deliver WORKDIR < msg : atomic tmp/ -> new/ like a real MDA
  local md tmp name
  md=$(maildir "$1")
  name="$(date +%s).P$$R$RANDOM.ci"
  tmp="$md/tmp/$name"
  cat > "$tmp"
  chown nobody:nogroup "$tmp"
  mv "$tmp" "$md/new/$name"
}

case "$cmd" in
  available)
    command -v dovecot >/dev/null && [ -x /usr/lib/dovecot/imap ] \
      || { echo "install dovecot-imapd (apt-get install -y dovecot-imapd)" >&2; exit 1; }
    id dovenull >/dev/null && id dovecot >/dev/null   # created by dovecot-core
    ;;
  start)
    w=$(realpath "$1"); port=$2; user=$3; pass=$4
    mkdir -p "$w/run" "$w/state"
    chmod a+x "$w"
    md=$(maildir "$w")
    mkdir -p "$md"/{new,cur,tmp}
    chown -R nobody:nogroup "$md"
    printf '%s:{PLAIN}%s\n' "$user" "$pass" > "$w/passwd"
    chmod 640 "$w/passwd"; chgrp dovecot "$w/passwd"
    cat > "$w/dovecot.conf" <<CONF
instance_name = ci-dovecot-$port
base_dir = $w/run
state_dir = $w/state
log_path = $w/dovecot.log
info_log_path = $w/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {
  driver = passwd-file
  args = scheme=PLAIN $w/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$w/home
}
mail_location = maildir:$md
first_valid_uid = 1
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $port
  }
  inet_listener imaps {
    port = 0
  }
}
CONF
    dovecot -c "$w/dovecot.conf"
    # wait until the IMAP port answers
    for _ in $(seq 50); do
      if (: <>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then exit 0; fi
      sleep 0.1
    done
    echo "dovecot did not start; see $w/dovecot.log" >&2; tail -20 "$w/dovecot.log" >&2; exit 1
    ;;
  put)
    w=$1; shift
    for f in "$@"; do deliver "$w" < "$f"; done
    ;;
  append)
    deliver "$1"
    ;;
  count)
    md=$(maildir "$1")
    find "$md/new" "$md/cur" -type f | wc -l
    ;;
  stop)
    w=$(realpath "$1")
    pidf="$w/run/master.pid"
    if [ -f "$pidf" ]; then
      pid=$(cat "$pidf")
      dovecot -c "$w/dovecot.conf" stop 2>/dev/null || kill "$pid" 2>/dev/null || true
      # dovecot stop returns before its children are gone
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
