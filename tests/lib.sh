# tests/lib.sh: helpers for the end-to-end shell tests (after git's t/).
# Each check prints "PASS: what" or "FAIL: what"; tests/run counts them.
set -u
cd "$(dirname "$0")/.." || exit 1
TMP=tests/tmp/$(basename "$0" .sh)
rm -rf "$TMP" && mkdir -p "$TMP"

pass() { echo "PASS: $1"; }
fail() { echo "FAIL: $1"; shift; for l in "$@"; do echo "  $l"; done; }
skip() { echo "SKIP: $1"; }

# check WHAT CMD...: passes when CMD succeeds
check() {
	what=$1; shift
	if "$@" >"$TMP/out" 2>"$TMP/err"; then pass "$what"
	else fail "$what" "command: $*" "stderr: $(head -c 500 "$TMP/err")"; fi
}

# check_error WHAT STATUS PATTERN OUTFILE CMD...: passes when CMD exits with
# STATUS, prints exactly one line on stderr that contains PATTERN, and leaves
# neither OUTFILE nor OUTFILE.tmp behind (OUTFILE may be -)
check_error() {
	what=$1 want=$2 pat=$3 outf=$4; shift 4
	"$@" >"$TMP/out" 2>"$TMP/err"
	st=$?
	lines=$(wc -l <"$TMP/err")
	if [ "$st" -ne "$want" ]; then fail "$what" "exit $st, expected $want" "stderr: $(cat "$TMP/err")"
	elif [ "$lines" -ne 1 ]; then fail "$what" "$lines lines on stderr, expected 1:" "$(cat "$TMP/err")"
	elif ! grep -qF -- "$pat" "$TMP/err"; then fail "$what" "stderr lacks '$pat':" "$(cat "$TMP/err")"
	elif [ "$outf" != - ] && { [ -e "$outf" ] || [ -e "$outf.tmp" ]; }; then fail "$what" "left $outf behind"
	else pass "$what"; fi
}

# close_to A B TOL: |A - B| <= TOL
close_to() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= t) }'; }

# check_usage WHAT CMD...: passes when CMD exits 2 and prints its usage
check_usage() {
	what=$1; shift
	"$@" >"$TMP/out" 2>"$TMP/err"
	st=$?
	if [ "$st" -eq 2 ] && grep -q "^usage: " "$TMP/err"; then pass "$what"
	else fail "$what" "exit $st, expected 2 with usage" "$(cat "$TMP/err")"; fi
}
