#!/usr/bin/env bash
# Self-test of the IMAP fixtures: selftest.py twice in a row, then two
# instances at the same time (own WORKDIRs and ports), then a check that no
# Dovecot or token service of ours is left running.
#
#   selftest.sh [--once]
set -euo pipefail
here=$(dirname "$(realpath "$0")")
py=${PYTHON:-python3}

"$here/dovecot.sh" setup
"$py" "$here/selftest.py" --tag run1
[ "${1:-}" = --once ] && exit 0
"$py" "$here/selftest.py" --tag run2

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$py" "$here/selftest.py" --tag par1 > "$out/par1" 2>&1 & p1=$!
"$py" "$here/selftest.py" --tag par2 > "$out/par2" 2>&1 & p2=$!
rc=0
wait $p1 || rc=1
wait $p2 || rc=1
cat "$out/par1" "$out/par2"

# nothing of ours may survive (instances are named ci-imap-PORT and live in
# imap-selftest.* directories)
left=$(grep -laE 'dovecot-ci-imap[-]|imap-selftest[.]' /proc/[0-9]*/cmdline 2>/dev/null || true)
if [ -n "$left" ]; then
  echo "left running:" >&2
  for f in $left; do tr '\0' ' ' < "$f" >&2 2>/dev/null; echo >&2; done
  rc=1
fi
[ $rc = 0 ] && echo "selftest.sh: all runs passed" || echo "selftest.sh: FAILED" >&2
exit $rc
