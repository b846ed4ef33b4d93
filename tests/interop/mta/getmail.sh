#!/usr/bin/env bash
# Run getmail6 once against the test IMAP server with the shipped rc.
#
#   getmail.sh available # whether getmail6 and the chatwoot-ingress account named
#                        # in packaging/getmail/getmailrc are here (only looks;
#                        # tests/interop/install-deps makes them)
#   getmail.sh run WORKDIR RELAYER_BIN CONFIG_TOML IMAP_PORT USER PASSWORD
#
# `run` builds WORKDIR/getmailrc from packaging/getmail/getmailrc, changing
# only the retriever type (plain IMAP on loopback instead of IMAPS), server,
# port, credentials and the two chatwoot-ingress paths, then runs getmail once
# with --getmaildir WORKDIR/getmail (kept between runs: it holds the oldmail
# file).  Prints getmail's output and exits with getmail's exit code.
# RELAYER_BIN and CONFIG_TOML (and every directory above them) must be
# reachable by the chatwoot-ingress user: getmail runs the MDA as that user.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
rc_src="$here/../../../packaging/getmail/getmailrc"
mda_user=chatwoot-ingress

cmd=${1:?usage: getmail.sh available | run WORKDIR RELAYER_BIN CONFIG_TOML IMAP_PORT USER PASSWORD}
shift

# sub FILE REGEX REPLACEMENT: replace a whole line, and insist it existed once
sub() {
  local n
  n=$(grep -c -E "$2" "$1" || true)
  [ "$n" = 1 ] || { echo "getmail.sh: expected one line matching '$2' in rc, found $n" >&2; exit 1; }
  REPL=$3 perl -i -pe "s{$2}{\$ENV{REPL}}" "$1"
}

case "$cmd" in
  available)
    command -v getmail >/dev/null || { echo "getmail.sh: no getmail (tests/interop/install-deps)" >&2; exit 1; }
    getent passwd "$mda_user" >/dev/null ||
      { echo "getmail.sh: no $mda_user account (tests/interop/install-deps)" >&2; exit 1; }
    ;;
  run)
    w=$1 bin=$2 conf=$3 port=$4 user=$5 pass=$6
    if ! runuser -u "$mda_user" -- test -x "$bin" -a -r "$conf"; then
      echo "getmail.sh: $mda_user cannot execute $bin or read $conf (mktemp dirs are 0700)" >&2
      exit 1
    fi
    mkdir -p "$w/getmail"
    rc="$w/getmailrc"
    cp "$rc_src" "$rc"
    sub "$rc" '^type = SimpleIMAPSSLRetriever$' 'type = SimpleIMAPRetriever'
    sub "$rc" '^server = .*$' 'server = 127.0.0.1'
    sub "$rc" '^port = 993$' "port = $port"
    sub "$rc" '^username = .*$' "username = $user"
    sub "$rc" '^password = .*$' "password = $pass"
    sub "$rc" '^path = /usr/bin/chatwoot-ingress$' "path = $bin"
    sub "$rc" '"/etc/chatwoot-ingress/config.toml"' "\"$conf\""
    set +e
    getmail --rcfile "$rc" --getmaildir "$w/getmail" 2>&1
    rc_exit=$?
    set -e
    echo "getmail exit: $rc_exit"
    exit "$rc_exit"
    ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
