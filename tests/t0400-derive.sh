#!/bin/sh
# derive: the baseline rules on a 36-layer count (the paper's Qwen2.5-3B
# layouts), fixed and seeded random layouts, mse from real candidates of the
# tiny Qwen2 fixture, eval-lm --arch on the hybrids, dash and the
# ablate-one / restore-one rankings from score files written with h5py
# (skipped without it), arch.h5's /ops, and bad input.
. "$(dirname "$0")/lib.sh"
Q=tests/data/tiny-qwen2
layout() { bin/derive -o "$TMP/arch.h5" "$@" 2>"$TMP/err"; }
expect() { # expect WHAT WANT CMD...: the printed layout is WANT
	what=$1 want=$2; shift 2
	got=$(layout "$@")
	if [ "$got" = "$want" ]; then pass "$what"; else fail "$what" "got:  $got" "want: $want" "$(cat "$TMP/err")"; fi
}
G36="1 2 3 4 5 6 7 9 10 11 12 13 14 15 17 18 19 20 21 22 23 25 26 27 28 29 30 31 33 34 35"
expect "uniform, 36 layers, 5 fa: 0 8 16 24 32" "uniform n_fa 5: fa: 0 8 16 24 32 | gdn: $G36" \
	-n 5 --method uniform -L 36
expect "uniform-end, 36 layers, -r 0.125: 35 27 19 11 3" \
	"uniform-end n_fa 5: fa: 35 27 19 11 3 | gla: $(seq -s ' ' 0 34 | sed 's/ 3 / /; s/ 11 / /; s/ 19 / /; s/ 27 / /')" \
	-r 0.125 --method uniform-end -L 36 --linear gla
got=$(layout -n 9 --method uniform -L 36 | sed 's/ |.*//')
if [ "$got" = "uniform n_fa 9: fa: 0 4 8 12 16 20 24 28 32" ]; then pass "uniform, 36 layers, 9 fa: stride 4"
else fail "uniform, 9 fa" "$got"; fi
got=$(layout -n 7 --method uniform -L 36 | sed 's/ |.*//')
if [ "$got" = "uniform n_fa 7: fa: 0 5 10 15 20 25 30" ]; then pass "uniform where ceil(L/N) overshoots: floor(i L / N)"
else fail "uniform, 7 fa" "$got"; fi
expect "fixed:3,1 with --linear swa" "fixed:3,1 n_fa 2: fa: 3 1 | swa: 0 2 4" -n 2 --method fixed:3,1 -L 5 --linear swa
expect "no fa layer at all" "uniform n_fa 0: gdn: 0 1 2" -n 0 --method uniform -L 3
if h5dump -d /ops "$TMP/arch.h5" 2>/dev/null | tr -d ' \n' | grep -q 'DATA{(0):1,1,1}'; then
	pass "arch.h5: /ops holds each layer's operator index (gdn = 1)"
else fail "arch.h5 /ops" "$(h5dump -d /ops "$TMP/arch.h5" 2>&1 | head -20)"; fi
a=$(layout -n 4 --method random -L 20 --seed 7) b=$(layout -n 4 --method random -L 20 --seed 7)
c=$(layout -n 4 --method random -L 20 --seed 8)
if [ "$a" = "$b" ] && [ "$a" != "$c" ] && [ "$(echo "$a" | sed 's/ |.*//' | wc -w)" -eq 8 ]; then
	pass "random: 4 layers, the same for a seed, others for another"
else fail "random" "$a" "$b" "$c"; fi

# candidates of both layers of the tiny fixture: mse ranks by held-out NMSE
awk 'BEGIN { srand(5); for (i = 0; i < 1500; i++) printf "%d ", 3 + int(rand() * 509); print "" }' |
	tests/bin/mktokens "$TMP/tok.h5"
bin/distill-linear -m $Q -d "$TMP/tok.h5" -o "$TMP/cand" --tokens 1024 --seq 64 --heldout 256 --device cpu \
	>"$TMP/table" 2>/dev/null
# the worse layer by its better operator's held-out NMSE (column 6)
worst=$(awk 'NR > 1 { if (!($1 in b) || $6 < b[$1]) b[$1] = $6 } END { print (b[0] >= b[1] ? 0 : 1) }' "$TMP/table")
got=$(layout -n 1 --method mse -c "$TMP/cand" | sed 's/ |.*//')
if [ "$got" = "mse n_fa 1: fa: $worst" ]; then pass "mse keeps the layer its candidates imitate worst ($worst)"
else fail "mse" "$got, want fa: $worst" "$(cat "$TMP/table")"; fi
# the other layer takes its better operator by held-out NMSE
other=$((1 - worst))
best=$(awk -v l=$other 'NR > 1 && $1 == l { if (b == "" || $6 < v) { b = $2; v = $6 } } END { print b }' "$TMP/table")
got=$(layout -n 1 --method mse -c "$TMP/cand" | sed 's/.*| //')
if [ "$got" = "$best: $other" ]; then pass "the other layer takes its better candidate ($best)"
else fail "the better candidate" "$got, want $best: $other"; fi
got=$(layout -n 1 --method mse --linear swa -c "$TMP/cand")
if [ "$got" = "mse n_fa 1: fa: $worst | swa: $other" ]; then pass "mse with --linear swa ranks by the gdn/gla NMSE too"
else fail "mse --linear swa" "$got, want fa: $worst | swa: $other"; fi

# eval-lm --arch on those candidates: all fa is the teacher (KL 0, the same
# loss as eval-lm without --arch); swa with a window of the whole sequence
# too; a linear layer or a short window is not
E="bin/eval-lm -m $Q --tokens $TMP/tok.h5 --seq 64 -n 256"
plain=$($E 2>/dev/null | awk '{ print $2 }')
layout -n 2 --method uniform -c "$TMP/cand" >/dev/null && $E --arch "$TMP/arch.h5" >"$TMP/all" 2>/dev/null
if awk -v p="$plain" '{ exit !($6 == 0 && $2 == p && $8 == p) }' "$TMP/all"; then
	pass "eval-lm --arch, every layer fa: KL 0 and the teacher's loss ($plain)"
else fail "eval-lm --arch all fa" "$(cat "$TMP/all")" "plain loss $plain"; fi
layout -n 0 --method uniform --linear swa -L 2 >/dev/null
$E --arch "$TMP/arch.h5" --window 64 >"$TMP/swa64" 2>/dev/null
$E --arch "$TMP/arch.h5" --window 8 >"$TMP/swa8" 2>/dev/null
if awk '{ exit !($6 == 0) }' "$TMP/swa64" && awk '{ exit !($6 > 0.01) }' "$TMP/swa8"; then
	pass "eval-lm --arch, every layer swa: KL 0 with a window of T, above 0 with 8"
else fail "eval-lm --arch swa" "$(cat "$TMP/swa64" "$TMP/swa8")"; fi
layout -n 1 --method mse -c "$TMP/cand" >/dev/null && $E --arch "$TMP/arch.h5" >"$TMP/mse" 2>"$TMP/err"
if awk '{ exit !($6 > 0.001 && $8 > 0) }' "$TMP/mse" && grep -q "hybrid.*(mse, 1 fa): fa: $worst" "$TMP/err"; then
	pass "eval-lm --arch with a candidate layer: KL above 0, the layout on stderr"
else fail "eval-lm --arch mse" "$(cat "$TMP/mse" "$TMP/err")"; fi
check_error "eval-lm --arch of another teacher" 1 "a hybrid of another teacher" - \
	bin/eval-lm -m tests/data/gguf/tiny-qwen2.gguf --tokens "$TMP/tok.h5" --arch "$TMP/arch.h5"
check_error "eval-lm --arch without its candidates" 1 "$TMP/none/L01.h5" - $E --arch "$TMP/arch.h5" --cand "$TMP/none"

check_error "-n beyond the layers" 1 "more fa layers than the teacher's 2" "$TMP/x.h5" \
	bin/derive -n 3 --method uniform -m $Q -o "$TMP/x.h5"
check_error "an unknown method" 1 "unknown 'best'" "$TMP/x.h5" bin/derive -n 1 --method best -L 4 -o "$TMP/x.h5"
check_error "dash without a logits file" 1 "needs the logits file" "$TMP/x.h5" bin/derive -n 1 -L 4 -o "$TMP/x.h5"
check_error "fixed: with another count than -n" 1 "2 layers, but the budget is 3" "$TMP/x.h5" \
	bin/derive -n 3 --method fixed:0,1 -L 4 -o "$TMP/x.h5"
check_error "fixed: a layer twice" 1 "layer 1 twice" "$TMP/x.h5" bin/derive -n 2 --method fixed:1,1 -L 4 -o "$TMP/x.h5"
check_error "mse without candidates" 1 "needs the candidates" "$TMP/x.h5" bin/derive -n 1 --method mse -L 4 -o "$TMP/x.h5"
check_error "candidates of another layer count" 1 "candidates of a 2-layer teacher, not 5" "$TMP/x.h5" \
	bin/derive -n 1 --method mse -c "$TMP/cand" -L 5 -o "$TMP/x.h5"
check_error "candidates of another teacher than -m" 1 "another teacher" "$TMP/x.h5" \
	bin/derive -n 1 --method mse -c "$TMP/cand" -m tests/data/gguf/tiny-qwen2.gguf -o "$TMP/x.h5"
check_error "a scores file that is not HDF5" 1 "$Q.ids.txt" "$TMP/x.h5" bin/derive -n 1 -o "$TMP/x.h5" $Q.ids.txt
check_error "an HDF5 file of another kind" 1 "neither a logits file" "$TMP/x.h5" \
	bin/derive -n 1 -o "$TMP/x.h5" "$TMP/cand/L00.h5"
check_usage "neither -n nor -r: usage" bin/derive --method uniform -L 4

if ! python3 -c 'import h5py, numpy' 2>/dev/null; then
	skip "derive from logits and measure files: python3 with h5py and numpy not found"
	exit 0
fi
fp=$(h5dump -a /teacher_fingerprint "$TMP/cand/L00.h5" | sed -n 's/.*(0): "\(.*\)".*/\1/p')
python3 - "$TMP" "$fp" <<'PY'
import sys, h5py, numpy as np
d, fp = sys.argv[1], sys.argv[2]
def stamp(f, fmt):
    f.attrs["format"], f.attrs["version"], f.attrs["teacher_fingerprint"] = fmt, np.int64(1), fp
with h5py.File(d + "/logits.h5", "w") as f:
    stamp(f, "dash-logits")
    f.attrs["ops"] = "fa,swa,gdn"
    # layer 0: fa weak, gdn best; layer 1: fa strong, swa best of the rest
    f["alpha"] = np.array([[-2.0, 0.1, 0.5], [3.0, 0.2, -1.0]], dtype=np.float32)
for m, kl in (("ablate-one", [0.9, 0.1]), ("restore-one", [0.9, 0.1])):
    with h5py.File(d + "/" + m + ".h5", "w") as f:
        stamp(f, "dash-measure")
        f.attrs["measure"] = m
        f["kl"] = np.array(kl)
with h5py.File(d + "/other.h5", "w") as f:
    f.attrs["format"], f.attrs["version"], f.attrs["teacher_fingerprint"] = "dash-logits", np.int64(1), "0" * 16
    f.attrs["ops"] = "fa,gdn"
    f["alpha"] = np.zeros((2, 2), dtype=np.float32)
PY
expect "dash: the largest w_fa keeps fa, the others their largest logit" "dash n_fa 1: fa: 1 | gdn: 0" \
	-n 1 "$TMP/logits.h5"
expect "dash with two fa: rank order" "dash n_fa 2: fa: 1 0" -n 2 "$TMP/logits.h5"
expect "ablate-one: the layer whose linearisation costs most" "ablate-one n_fa 1: fa: 0 | gdn: 1" \
	-n 1 --method ablate-one "$TMP/ablate-one.h5"
expect "restore-one: the layer whose restoration leaves least" "restore-one n_fa 1: fa: 1 | gdn: 0" \
	-n 1 --method restore-one "$TMP/restore-one.h5"
check_error "a measure file of the other ranking" 1 "needs the ablate-one measure file" "$TMP/x.h5" \
	bin/derive -n 1 --method ablate-one -o "$TMP/x.h5" "$TMP/restore-one.h5"
check_error "logits of another teacher than the candidates" 1 "candidates of another teacher" "$TMP/x.h5" \
	bin/derive -n 1 -c "$TMP/cand" -o "$TMP/x.h5" "$TMP/other.h5"
