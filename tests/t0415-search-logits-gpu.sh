#!/bin/sh
# search-logits --device cuda with real candidate files: a random Qwen2 of
# head dim 64 written here (the fixtures' head dims, 16 and 24, are not the
# GPU's) and its candidates from a short distill-linear on the GPU. The
# first step's KL on cuda is the CPU's (ops fa,swa,gdn and fa,swa,gdn,gla),
# short searches finish, derive reads their logits (and eval-lm --arch
# evaluates that hybrid alike on both devices), a stopped run resumes from
# its checkpoint, and --measure ablate-one and restore-one on cuda give the
# CPU's values (or at least its ranking); --grad fp8 keeps the forwards and
# the sanity of the search, and --grad auto takes it on a Hopper; --forward
# fp8-all's and fp8-fast's first step is the CPU's. Skipped without a GPU; tests/run gpu
# runs it.
. "$(dirname "$0")/lib.sh"
export OMP_NUM_THREADS=4 # the CPU side's tiny products gain nothing from more
if ! nvidia-smi -L >/dev/null 2>&1; then
	skip "search-logits --device cuda: no GPU"
	exit 0
fi
M=$TMP/m
mkmodel_cand 4
S="bin/search-logits -m $M -c $TMP/cand -d $TMP/tok.h5 --seq 64 --window 16"
kl1() { sed -n 's/.*step 1\/[0-9]* kl \([0-9.e+-]*\) .*/\1/p' "$1" | head -1; } # the first step's KL
wfa() { awk 'NR > 1 { printf "%s%s", sep, $2; sep = " " } END { print "" }' "$1"; }
top() { awk 'NR > 1 && (w == "" || $2 > v) { w = $1; v = $2 } END { print w }' "$1"; }  # layer of largest column 2
low() { awk 'NR > 1 && (w == "" || $2 < v) { w = $1; v = $2 } END { print w }' "$1"; }  # and of smallest

# the first step (alpha 0, the same weights on both devices)
for ops in fa,swa,gdn fa,swa,gdn,gla; do
	$S -n 1 --ops $ops --tokens 64 --device cpu -o "$TMP/c1.h5" >/dev/null 2>"$TMP/c1.err"
	$S -n 1 --ops $ops --tokens 64 --device cuda --forward bf16 -o "$TMP/g1.h5" >/dev/null 2>"$TMP/g1.err"
	c=$(kl1 "$TMP/c1.err") g=$(kl1 "$TMP/g1.err")
	if [ -n "$c" ] && [ -n "$g" ] && awk -v c="$c" -v g="$g" 'BEGIN { exit !(c > 0) }' &&
		close_to "$g" "$c" "$(awk -v c="$c" 'BEGIN { print 3e-2 * c }')"; then
		pass "--ops $ops: the first step's KL on cuda is the CPU's within 3e-2 ($g, $c)"
	else fail "--ops $ops: first step's KL" "cpu: $(cat "$TMP/c1.err")" "cuda: $(cat "$TMP/g1.err")"; fi
done

# short searches on the GPU, and derive on their logits
$S -n 1 --ops fa,swa,gdn --tokens 1280 --lr 0.1 --device cuda -o "$TMP/g.h5" >"$TMP/g.txt" 2>"$TMP/g.err"
win=$(top "$TMP/g.txt")
if grep -q 'step 20/20 kl [0-9.e+-]* budget' "$TMP/g.err" && grep -q 'device' "$TMP/g.err" &&
	awk 'NR > 1 { for (i = 2; i <= 4; i++) if (!($i >= 0 && $i <= 1)) bad = 1 } END { exit bad || NR != 5 }' "$TMP/g.txt"
then pass "fa,swa,gdn on cuda: 20 steps, every layer's weights in [0, 1] (w_fa $(wfa "$TMP/g.txt"))"
else fail "fa,swa,gdn search on cuda" "$(cat "$TMP/g.txt" "$TMP/g.err")"; fi
got=$(bin/derive -n 1 -c "$TMP/cand" -o "$TMP/arch.h5" "$TMP/g.h5" 2>"$TMP/err" | sed 's/ |.*//')
if [ -n "$win" ] && [ "$got" = "dash n_fa 1: fa: $win" ]; then pass "derive reads the GPU's logits: fa at the largest w_fa ($win)"
else fail "derive on the GPU's logits" "$got, want fa: $win" "$(cat "$TMP/err")"; fi

# --grad fp8 on the GPU: the forwards as they were (the first step's KL is
# the bf16 run's), and every layer to fa under a budget of every layer
$S -n 4 --ops fa,swa,gdn --tokens 1280 --lr 0.1 --device cuda --grad fp8 -o "$TMP/f8.h5" >"$TMP/f8.txt" \
	2>"$TMP/f8.err"
$S -n 1 --ops fa,swa,gdn --tokens 64 --device cuda --grad bf16 -o "$TMP/b1.h5" >/dev/null 2>"$TMP/b1.err"
f=$(kl1 "$TMP/f8.err") b=$(kl1 "$TMP/b1.err")
if [ -n "$f" ] && [ "$f" = "$b" ] && grep -q 'step 20/20 kl' "$TMP/f8.err" &&
	awk 'NR > 1 && $2 < 0.9 { bad = 1 } END { exit bad || NR != 5 }' "$TMP/f8.txt"; then
	pass "--grad fp8 on cuda: the first step's KL is bf16's ($f); N_FA = L drives every layer to fa (w_fa $(wfa "$TMP/f8.txt"))"
else fail "--grad fp8 on cuda" "$(cat "$TMP/f8.txt" "$TMP/f8.err")" "bf16 first step: $b"; fi
# --grad auto, the default: fp8 on a Hopper or newer (this model's widths
# are multiples of 16), bf16 before it
want=bf16
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1)
awk -v c="$cc" 'BEGIN { exit !(c + 0 >= 9) }' && want=fp8
if grep -q "grad $want (auto)" "$TMP/g.err"; then pass "--grad auto on cuda (compute capability $cc): $want"
else fail "--grad auto on cuda" "compute capability $cc, want $want" "$(grep grad "$TMP/g.err")"; fi
# --forward auto, the default: fp8-fast where --grad auto takes fp8
[ $want = fp8 ] && want=fp8-fast
if grep -q "forward $want (auto)" "$TMP/g.err"; then pass "--forward auto on cuda (compute capability $cc): $want"
else fail "--forward auto on cuda" "compute capability $cc, want $want" "$(grep forward "$TMP/g.err")"; fi
# --forward fp8-all and fp8-fast on a Hopper: the first step's KL the
# CPU's of fp8-all (the CPU sums in float32 either way), and N_FA = L
# drives every layer to fa
if [ $want = fp8-fast ]; then
	$S -n 1 --ops fa,swa,gdn --tokens 64 --device cpu --forward fp8-all -o "$TMP/c8.h5" >/dev/null 2>"$TMP/c8.err"
	c=$(kl1 "$TMP/c8.err")
	for f in fp8-all fp8-fast; do
		$S -n 4 --ops fa,swa,gdn --tokens 1280 --lr 0.1 --device cuda --forward $f -o "$TMP/a8.h5" \
			>"$TMP/a8.txt" 2>"$TMP/a8.err"
		g=$(kl1 "$TMP/a8.err")
		if [ -n "$c" ] && [ -n "$g" ] && close_to "$g" "$c" "$(awk -v c="$c" 'BEGIN { print 3e-2 * c }')" &&
			grep -q "forward $f" "$TMP/a8.err" && grep -q 'step 20/20 kl' "$TMP/a8.err" &&
			awk 'NR > 1 && $2 < 0.9 { bad = 1 } END { exit bad || NR != 5 }' "$TMP/a8.txt"; then
			pass "--forward $f on cuda: the first step's KL is the CPU's within 3e-2 ($g, $c); all to fa"
		else fail "--forward $f on cuda" "cpu: $(cat "$TMP/c8.err")" "cuda: $(cat "$TMP/a8.txt" "$TMP/a8.err")"; fi
	done
else
	skip "--forward fp8-all and fp8-fast on cuda: compute capability $cc, before Hopper"
fi

$S -n 1 --ops fa,swa,gdn,gla --relax budget-dist --tokens 640 --lr 0.1 --device cuda -o "$TMP/g4.h5" \
	>"$TMP/g4.txt" 2>"$TMP/g4.err"
if grep -q 'step 10/10 kl' "$TMP/g4.err" && awk 'NR > 1' "$TMP/g4.txt" | wc -l | grep -q '^4$'; then
	pass "fa,swa,gdn,gla with budget-dist on cuda: 10 steps"
else fail "fa,swa,gdn,gla search on cuda" "$(cat "$TMP/g4.txt" "$TMP/g4.err")"; fi
bin/derive -n 1 -c "$TMP/cand" -o "$TMP/arch4.h5" "$TMP/g4.h5" >"$TMP/arch4.txt" 2>"$TMP/err"
E="bin/eval-lm -m $M --tokens $TMP/tok.h5 -n 256 --seq 128 --window 16 --arch $TMP/arch4.h5"
$E --device cpu >"$TMP/e.cpu" 2>"$TMP/err"; $E --device cuda >"$TMP/e.gpu" 2>>"$TMP/err"
if paste "$TMP/e.cpu" "$TMP/e.gpu" | awk '{ d = $6 - $16; if (d < 0) d = -d; ok = NF == 20 && d <= 0.05 * $6 + 1e-3 }
	END { exit !(NR == 1 && ok) }'
then pass "eval-lm --arch of that search's hybrid ($(cat "$TMP/arch4.txt")): kl $(cut -d' ' -f6 "$TMP/e.gpu") on cuda, $(cut -d' ' -f6 "$TMP/e.cpu") on the CPU"
else fail "eval-lm --arch of the GPU search's hybrid" "$(cat "$TMP/arch4.txt" "$TMP/e.cpu" "$TMP/e.gpu" "$TMP/err")"; fi

# stopped after 7 steps on the GPU, resumed there: the uninterrupted run's
# weights (within the GPU's run-to-run noise: atomics in the attention backward)
R="$S -n 1 --ops fa,swa,gdn --relax budget-dist --tokens 640 --ckpt-every 3 --device cuda"
$R -o "$TMP/r.h5" --stop-after 7 >/dev/null 2>"$TMP/err"
if [ -e "$TMP/r.h5.ckpt.h5" ] && [ ! -e "$TMP/r.h5" ] && grep -q 'stopped after step 7' "$TMP/err"; then
	pass "--stop-after on cuda: a checkpoint and no output yet"
else fail "--stop-after on cuda" "$(ls "$TMP")" "$(cat "$TMP/err")"; fi
$R -o "$TMP/r.h5" --resume >"$TMP/r.txt" 2>"$TMP/err"
$R -o "$TMP/u.h5" >"$TMP/u.txt" 2>/dev/null
if grep -q 'resuming .* at step 7' "$TMP/err" && [ -e "$TMP/r.h5" ] && [ ! -e "$TMP/r.h5.ckpt.h5" ] &&
	paste "$TMP/r.txt" "$TMP/u.txt" | awk 'NR > 1 { for (i = 2; i <= 4; i++) { d = $i - $(i + 4); if (d < 0) d = -d
		if (d > 1e-2) bad = 1 } } END { exit bad || NR != 5 }'
then pass "--resume on cuda: the uninterrupted run's weights within 1e-2; the checkpoint removed"
else fail "--resume on cuda" "$(cat "$TMP/err")" "$(paste "$TMP/r.txt" "$TMP/u.txt")"; fi

# the measures, cuda against the CPU
order() { awk 'NR > 1' "$1" | sort -k2,2g | cut -f1 | tr '\n' ' '; }
for meas in ablate-one restore-one; do
	$S --measure $meas --tokens 128 --device cpu -o "$TMP/c.$meas.h5" >"$TMP/c.$meas.txt" 2>"$TMP/err"
	$S --measure $meas --tokens 128 --device cuda -o "$TMP/g.$meas.h5" >"$TMP/g.$meas.txt" 2>>"$TMP/err"
	if paste "$TMP/c.$meas.txt" "$TMP/g.$meas.txt" | awk 'NR > 1 { d = $2 - $4; if (d < 0) d = -d
		if (!($2 > 0) || d > 0.05 * $2 + 1e-3) bad = 1 } END { exit bad || NR != 5 }'; then
		pass "--measure $meas on cuda: every layer's KL the CPU's within 5e-2 ($(wfa "$TMP/g.$meas.txt"))"
	elif [ "$(order "$TMP/c.$meas.txt")" = "$(order "$TMP/g.$meas.txt")" ] && [ -n "$(order "$TMP/g.$meas.txt")" ]; then
		pass "--measure $meas on cuda: the CPU's ranking ($(order "$TMP/g.$meas.txt"))"
	else fail "--measure $meas: cuda vs cpu" "$(paste "$TMP/c.$meas.txt" "$TMP/g.$meas.txt")" "$(cat "$TMP/err")"; fi
	if [ $meas = ablate-one ]; then want=$(top "$TMP/g.$meas.txt"); else want=$(low "$TMP/g.$meas.txt"); fi
	got=$(bin/derive -n 1 --method $meas -o "$TMP/x.h5" "$TMP/g.$meas.h5" 2>&1 | sed 's/ |.*//')
	if [ -n "$want" ] && [ "$got" = "$meas n_fa 1: fa: $want" ]; then pass "derive --method $meas reads the GPU's file (fa: $want)"
	else fail "derive $meas on the GPU's file" "$got, want fa: $want"; fi
done
$S --measure restore-one --linear swa --window 64 --tokens 128 --device cuda -o "$TMP/rs.h5" >"$TMP/rs.txt" 2>"$TMP/err"
if awk 'NR > 1 { k = $2 < 0 ? -$2 : $2; if (k > 1e-3) bad = 1 } END { exit bad || NR != 5 }' "$TMP/rs.txt"; then
	pass "restore-one on cuda with swa over the whole sequence: KL ~0 every layer ($(wfa "$TMP/rs.txt"))"
else fail "restore-one swa on cuda" "$(cat "$TMP/rs.txt" "$TMP/err")"; fi
