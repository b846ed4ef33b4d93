# shellcheck shell=bash
# Sourced by the MTA harness scripts (which define die).
# The shipped configs run chatwoot-ingress as user chatwoot-ingress: the
# binary and config (and every directory above them, e.g. a 0700 mktemp dir)
# must be usable by it. Grants o+x (search only, no listing) on ancestors and
# o+r(x) on the file.
open_for_mda() { # FILE MODE
  local f=$1 d
  chmod "o+$2" "$f"
  d=$(dirname "$f")
  while [ "$d" != / ]; do chmod o+x "$d"; d=$(dirname "$d"); done
  runuser -u chatwoot-ingress -- test -r "$f" || die "chatwoot-ingress cannot read $f"
}
