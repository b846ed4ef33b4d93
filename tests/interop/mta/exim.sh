#!/usr/bin/env bash
# Interop harness: Exim 4.96 with a per-WORKDIR config (spool, logs under
# WORKDIR; no daemon, no SMTP listener) routing DOMAIN through the SHIPPED
# packaging/exim/{main,router,transport}.conf into a chatwoot-ingress binary.
# Must run as root. tests/interop/install-deps unpacks the exim4 debs (exim4
# conflicts with postfix) and makes the accounts.
#
#   exim.sh available                                whether it can run here (only looks)
#   exim.sh start   WORKDIR RELAYER_BIN CONFIG_TOML DOMAIN
#   exim.sh deliver WORKDIR FROM TO... < message     receive + deliver in the foreground
#   exim.sh wait    WORKDIR [SECONDS]                 until no exim process of WORKDIR runs
#   exim.sh queue   WORKDIR                           exim -bp (id, recipients, D = done)
#   exim.sh flush   WORKDIR                           exim -qff: retry everything now
#   exim.sh log     WORKDIR                           mainlog (+ paniclog if any)
#   exim.sh sink    WORKDIR                           mbox of all non-DOMAIN mail (bounces)
#   exim.sh stop    WORKDIR
#
# Mail for any domain other than DOMAIN (e.g. bounces to FROM) is appended to
# WORKDIR/mail/sink.mbox; nothing ever leaves the machine.
# Defer/bounce reasons (the relayer's output line) are in "log" (mainlog).
# "start" lists WORKDIR/exim.conf in /etc/exim4/trusted_configs (else exim
# drops root and cannot run the pipe as nobody); "stop" removes it again.
# "start" also makes RELAYER_BIN and CONFIG_TOML usable by user chatwoot-ingress
# (o+x on every parent directory, o+rx / o+r on the files).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pkg=${CHATWOOT_PACKAGING_DIR:-$here/../../../packaging}/exim
exim=/usr/sbin/exim4                     # compiled-in re-exec path
trusted=/etc/exim4/trusted_configs       # compiled-in TRUSTED_CONFIG_LIST

die() { echo "exim.sh: $*" >&2; exit 1; }

# shellcheck source=tests/interop/mta/common.sh
. "$here/common.sh"

# Add/remove one line of the trusted-config list, atomically, under a lock.
trusted_edit() { # add|del PATH
  (
    flock 9
    touch "$trusted"
    { grep -vxF -- "$2" "$trusted" || true; [ "$1" = del ] || echo "$2"; } > "$trusted.new"
    chown root:root "$trusted.new"; chmod 0644 "$trusted.new"
    mv "$trusted.new" "$trusted"
  ) 9>"$trusted.lock"
}

pids() { pgrep -f -- "-C $1/exim.conf" || true; }

cmd=${1:-}; shift || true
case $cmd in
available)
  # Only looks: tests/interop/install-deps unpacks Exim and makes the accounts.
  [ -x "$exim" ] || die "no $exim (tests/interop/install-deps unpacks it)"
  getent passwd Debian-exim >/dev/null || die "no Debian-exim account (tests/interop/install-deps)"
  getent passwd chatwoot-ingress >/dev/null || die "no chatwoot-ingress account (tests/interop/install-deps)"
  [ -f "$trusted" ] || die "no $trusted (tests/interop/install-deps)"
  # Runs it, changing nothing: a missing library (libidn12) shows here.
  "$exim" -C /dev/null -bV >/dev/null 2>&1 ||
    die "$exim does not run: $("$exim" -C /dev/null -bV 2>&1 | head -1)"
  ;;
start)
  [ $# -eq 4 ] || die "usage: start WORKDIR RELAYER_BIN CONFIG_TOML DOMAIN"
  w=$(realpath "$1") bin=$(realpath "$2") conf=$(realpath "$3") domain=$4
  mkdir -p "$w/spool" "$w/log" "$w/mail"
  chmod 0755 "$w"
  chown Debian-exim:Debian-exim "$w/spool" "$w/log"
  chown nobody "$w/mail"
  open_for_mda "$bin" rx
  open_for_mda "$conf" r
  subst=(-e "s|/usr/bin/chatwoot-ingress|$bin|g"
         -e "s|/etc/chatwoot-ingress/config.toml|$conf|g"
         -e "s|inbox\.example\.com|$domain|g")
  {
    cat <<EOF
# Harness-only main settings; the shipped files are inserted below.
primary_hostname = mta.test
qualify_domain = mta.test
spool_directory = $w/spool
log_file_path = $w/log/%slog
pid_file_path = $w/exim.pid
local_interfaces = 127.0.0.1
host_lookup =
rfc1413_hosts =
never_users = root
keep_environment =
EOF
    sed "${subst[@]}" "$pkg/main.conf"
    echo; echo "begin routers"
    sed "${subst[@]}" "$pkg/router.conf"
    cat <<EOF

sink:
  driver = accept
  transport = sink

begin transports
EOF
    sed "${subst[@]}" "$pkg/transport.conf"
    cat <<EOF

sink:
  driver = appendfile
  file = $w/mail/sink.mbox
  user = nobody
  envelope_to_add
  return_path_add

begin retry
*   *   F,2h,15m; G,16h,1h,1.5; F,4d,6h
EOF
  } > "$w/exim.conf"
  chmod 0644 "$w/exim.conf"
  trusted_edit add "$w/exim.conf"   # else exim drops root for -C
  "$exim" -C "$w/exim.conf" -bV >/dev/null || die "config check failed"
  ;;
deliver)
  [ $# -ge 3 ] || die "usage: deliver WORKDIR FROM TO... < message"
  w=$(realpath "$1") from=$2; shift 2
  # -odf: deliver in this process before returning; -oi: "." is data.
  "$exim" -C "$w/exim.conf" -odf -oi -f "$from" -- "$@"
  "$0" wait "$w"   # bounces are delivered by a separate (background) exim
  ;;
wait)
  w=$(realpath "$1") end=$((SECONDS + ${2:-30}))
  while [ -n "$(pids "$w")" ]; do
    [ $SECONDS -lt "$end" ] || die "timeout: exim still running"
    sleep 0.1
  done
  ;;
queue) "$exim" -C "$(realpath "$1")/exim.conf" -bp ;;
flush)
  w=$(realpath "$1")
  "$exim" -C "$w/exim.conf" -qff
  "$0" wait "$w"
  ;;
log)
  cat "$1/log/mainlog" 2>/dev/null || true
  if [ -s "$1/log/paniclog" ]; then echo "--- paniclog"; cat "$1/log/paniclog"; fi
  ;;
sink) cat "$1/mail/sink.mbox" 2>/dev/null || true ;;
stop)
  [ $# -eq 1 ] || die "usage: stop WORKDIR"
  w=$(realpath "$1")
  "$0" wait "$w" 10 || true
  for pid in $(pids "$w"); do kill -KILL "$pid" 2>/dev/null || true; done
  trusted_edit del "$w/exim.conf"
  ;;
*) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2 ;;
esac
