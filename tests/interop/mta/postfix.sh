#!/usr/bin/env bash
# Interop harness: a private Postfix instance (own config/queue/log under
# WORKDIR, no SMTP listener) that delivers through the SHIPPED
# packaging/postfix/{main.cf,master.cf,transport} into a chatwoot-ingress
# binary. Must run as root (postfix start; sendmail/postqueue -c without
# alternate_config_directories). Needs: apt-get install postfix.
#
#   postfix.sh available                                whether it can run here (only looks)
#   postfix.sh start WORKDIR RELAYER_BIN CONFIG_TOML DOMAIN[,DOMAIN...]
#   postfix.sh send  WORKDIR FROM TO... < message       inject via sendmail
#   postfix.sh wait  WORKDIR [SECONDS]                   until nothing is in flight
#   postfix.sh queue WORKDIR                             queue as JSON lines (postqueue -j)
#   postfix.sh flush WORKDIR [SECONDS]                   retry deferred mail now, wait for it
#   postfix.sh log   WORKDIR                             the instance's maillog
#   postfix.sh sink  WORKDIR                             files of mail delivered to the sink
#   postfix.sh stop  WORKDIR
#
# Mail for each DOMAIN goes to the one chatwoot pipe service (several domains:
# as the README's "Several Chatwoot instances" shows, one relay_domains list
# and one transport line per domain). Mail for any other domain
# (bounces to FROM, postmaster notices) is kept local: sender.test and mta.test
# are delivered into the Maildir WORKDIR/mail/sink/, anything else bounces
# with "no external delivery". So use FROM=someone@sender.test to see bounces.
#
# Defer reasons: pipe(8) turns a leading "4.x.x"/"5.x.x" in the relayer's
# output into the DSN code (log: "dsn=4.7.0, status=deferred (rest of line)")
# and that code wins over the exit status; "queue" shows only the rest.
# "start" makes RELAYER_BIN and CONFIG_TOML usable by user chatwoot-ingress: o+x on
# every parent directory, o+rx / o+r on the files.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pkg=${CHATWOOT_PACKAGING_DIR:-$here/../../../packaging}/postfix

die() { echo "postfix.sh: $*" >&2; exit 1; }

# shellcheck source=tests/interop/mta/common.sh
. "$here/common.sh"

cmd=${1:-}; shift || true
case $cmd in
available)
  command -v postfix >/dev/null || die "postfix is not installed (apt-get install postfix)"
  [ -f /usr/share/postfix/master.cf.dist ] || die "missing /usr/share/postfix/master.cf.dist"
  getent passwd nobody postfix >/dev/null || die "users nobody/postfix missing"
  # The account the shipped master.cf runs the pipe as (the .deb creates it).
  getent passwd chatwoot-ingress >/dev/null || die "no chatwoot-ingress account (tests/interop/install-deps)"
  ;;
start)
  [ $# -eq 4 ] || die "usage: start WORKDIR RELAYER_BIN CONFIG_TOML DOMAIN"
  w=$1 bin=$(realpath "$2") conf=$(realpath "$3") domain=$4 etc=$1/etc
  if [ -f "$etc/main.cf" ] && postfix -c "$etc" status 2>/dev/null; then
    die "instance in $w is already running (stop it first)"
  fi
  mkdir -p "$etc" "$w/spool" "$w/data" "$w/log" "$w/mail"
  chmod 0755 "$w"
  chown postfix "$w/data"
  chown nobody "$w/mail"
  open_for_mda "$bin" rx
  open_for_mda "$conf" r
  cp /usr/share/postfix/master.cf.dist "$etc/master.cf"
  # Harness-only settings; the shipped main.cf lines are appended after them.
  cat > "$etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $w/spool
data_directory = $w/data
maillog_file = $w/log/maillog
maillog_file_prefixes = $w
myhostname = mta.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_transport = error:local delivery disabled in harness
default_transport = error:no external delivery in harness
relay_transport = error:no external delivery in harness
virtual_mailbox_domains = sender.test, mta.test
virtual_mailbox_base = $w/mail
virtual_mailbox_maps = static:sink/
virtual_uid_maps = static:$(id -u nobody)
virtual_gid_maps = static:$(id -g nobody)
delay_warning_time = 0
EOF
  # The shipped files, with only paths and the domain(s) substituted.
  subst=(-e "s|/usr/bin/chatwoot-ingress|$bin|g"
         -e "s|/etc/chatwoot-ingress/config.toml|$conf|g"
         -e "s|/etc/postfix/transport|$etc/transport|g")
  sed "${subst[@]}" -e "s|inbox\.example\.com|${domain//,/, }|g" "$pkg/main.cf" >> "$etc/main.cf"
  sed "${subst[@]}" "$pkg/master.cf" >> "$etc/master.cf"
  IFS=, read -ra domains <<< "$domain"
  for d in "${domains[@]}"; do
    sed "${subst[@]}" -e "s|inbox\.example\.com|$d|g" "$pkg/transport"
  done > "$etc/transport"
  postmap -c "$etc" "hash:$etc/transport"
  postconf -c "$etc" -MX smtp/inet         # no SMTP listener at all
  postconf -c "$etc" -F '*/*/chroot = n'   # the queue dir has no chroot files
  # postfix logs startup errors to stderr only if it is a tty: use script(1).
  if ! out=$(script -qec "postfix -c '$etc' start" /dev/null 2>&1); then
    echo "$out" >&2; die "postfix start failed"
  fi
  ;;
send)
  [ $# -ge 3 ] || die "usage: send WORKDIR FROM TO... < message"
  w=$1 from=$2; shift 2
  # -i: a line with a single "." is data, not end of message.
  sendmail -C "$w/etc" -i -f "$from" -- "$@"
  ;;
wait)
  [ $# -ge 1 ] || die "usage: wait WORKDIR [SECONDS]"
  # Done when maildrop/incoming/active are empty (mail is delivered,
  # bounced or deferred). Bounces are new mail, so require 3 quiet polls.
  end=$((SECONDS + ${2:-30})) quiet=0
  while [ $quiet -lt 3 ]; do
    [ $SECONDS -lt "$end" ] || die "timeout: mail still in flight"
    if [ -z "$(find "$1/spool/maildrop" "$1/spool/incoming" "$1/spool/active" -type f | head -1)" ]
    then quiet=$((quiet + 1)); else quiet=0; fi
    sleep 0.2
  done
  ;;
queue) postqueue -c "$1/etc" -j ;;
flush)
  # Retry deferred mail now, and return once every message has been retried
  # (qmgr renames deferred files, which updates their ctime), i.e. it is
  # delivered, bounced or deferred again.
  w=$1 end=$((SECONDS + ${2:-30}))
  touch "$w/flush.mark"
  postqueue -c "$w/etc" -f
  while [ -n "$(find "$w/spool/deferred" -type f ! -cnewer "$w/flush.mark" | head -1)" ]; do
    [ $SECONDS -lt "$end" ] || die "timeout: flush did not retry all mail"
    sleep 0.2
  done
  "$0" wait "$w" "${2:-30}"
  ;;
log)   cat "$1/log/maillog" ;;
sink)  find "$1/mail/sink" -type f -path '*/new/*' 2>/dev/null | sort ;;
stop)
  [ $# -eq 1 ] || die "usage: stop WORKDIR"
  [ -f "$1/etc/main.cf" ] || exit 0
  pid=$(tr -d " " 2>/dev/null < "$1/spool/pid/master.pid" || true)
  postfix -c "$1/etc" stop >/dev/null 2>&1 || true   # waits for the master
  # Belt and braces: kill this instance's master (and its children) if left.
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    pkill -KILL -P "$pid" || true; kill -KILL "$pid" || true
  fi
  ;;
*) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2 ;;
esac
