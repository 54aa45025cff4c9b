#!/bin/sh
# search-logits on the tiny Llama fixture (3 layers) with candidates made
# here: the sanity checks of the search (a budget of every layer drives every
# layer to fa; a budget of one with a strong penalty leaves exactly one),
# the same with the backward's products in fp8 (and --grad auto's choice)
# and with the forward's (--forward fp8, fp8-both, fp8-all, fp8-fast),
# the same seed giving the
# same logits, resume giving what an uninterrupted
# run gives, the file's contents and derive on it, the ablate-one and
# restore-one measures (swa over the whole sequence is fa: KL 0), and bad
# input.
. "$(dirname "$0")/lib.sh"
# one thread: the fixture's tiny products gain nothing from more, and on a
# loaded machine OpenMP's waits made this test 100x slower
export OMP_NUM_THREADS=1
M=tests/data/tiny-llama
awk 'BEGIN { srand(9); for (i = 0; i < 2000; i++) printf "%d ", 3 + int(rand() * 380); print "" }' |
	tests/bin/mktokens "$TMP/tok.h5"
bin/distill-linear -m $M -d "$TMP/tok.h5" -o "$TMP/cand" --tokens 1024 --seq 32 --heldout 128 --device cpu \
	>/dev/null 2>"$TMP/err" || fail "distill-linear for the fixture" "$(cat "$TMP/err")"
S="bin/search-logits -m $M -c $TMP/cand -d $TMP/tok.h5 --seq 32 --device cpu"
# w_fa of every layer, from search-logits' table (stdout)
wfa() { awk 'NR > 1 { printf "%s%s", sep, $2; sep = " " } END { print "" }' "$1"; }

$S -n 3 -o "$TMP/all.h5" --tokens 3200 --lr 0.1 >"$TMP/all.txt" 2>"$TMP/err"
if awk 'NR > 1 && $2 < 0.9 { bad = 1 } END { exit bad || NR != 4 }' "$TMP/all.txt"; then
	pass "N_FA = L: the search drives every layer to fa (w_fa $(wfa "$TMP/all.txt"))"
else fail "N_FA = L" "$(cat "$TMP/all.txt" "$TMP/err")"; fi

$S -n 1 --lambda 20 -o "$TMP/one.h5" --tokens 4800 --lr 0.1 --tau 1:0.1 >"$TMP/one.txt" 2>"$TMP/prog"
if awk 'NR > 1 { n += $2 > 0.5; s += $2 } END { exit !(n == 1 && s > 0.8 && s < 1.2) }' "$TMP/one.txt"; then
	pass "N_FA = 1, lambda 20: exactly one layer wins (w_fa $(wfa "$TMP/one.txt"))"
else fail "N_FA = 1" "$(cat "$TMP/one.txt" "$TMP/prog")"; fi
win=$(awk 'NR > 1 && $2 > 0.5 { print $1 }' "$TMP/one.txt")
got=$(bin/derive -n 1 -c "$TMP/cand" -o "$TMP/arch.h5" "$TMP/one.h5" 2>"$TMP/err" | sed 's/ |.*//')
if [ "$got" = "dash n_fa 1: fa: $win" ]; then pass "derive --method dash keeps the winner ($win)"
else fail "derive dash" "$got, want fa: $win" "$(cat "$TMP/err")"; fi
if grep -q 'step 150/150 kl [0-9.e-]* budget [0-9.e-]* n_fa [0-9.]* fa: [0-9]' "$TMP/prog"; then
	pass "progress shows KL, the expected number of fa layers and the top layers"
else fail "progress" "$(cat "$TMP/prog")"; fi

h5dump -H "$TMP/one.h5" >"$TMP/h" 2>&1
ok=1
for want in '"alpha".*( 3, 3 )' '"alpha".*( 150, 3, 3 )' '"kl".*( 150 )' '"budget".*( 150 )' '"n_fa".*( 150 )' \
	'"tau".*( 150 )' '"fa_score".*( 3 )'; do
	tr -d '\n' <"$TMP/h" | sed 's/DATASET/\n/g' | grep -q "$want" || { ok=0; echo "  lacks $want"; }
done
for a in ops relax n_fa lambda lr tau0 tau1 seed seq tokens window teacher_fingerprint tokens_fingerprint \
	cand_fingerprint; do
	grep -q "ATTRIBUTE \"$a\"" "$TMP/h" || { ok=0; echo "  lacks attribute $a"; }
done
if [ $ok = 1 ]; then pass "logits.h5: /alpha (L, K), the trajectory of 150 steps, every setting and fingerprint"
else fail "logits.h5 contents" "$(head -50 "$TMP/h")"; fi

# --grad fp8: the backward's products through e4m3 codes; the search still
# drives every layer to fa under a budget of every layer
$S -n 3 --grad fp8 -o "$TMP/fp8.h5" --tokens 3200 --lr 0.1 >"$TMP/fp8.txt" 2>"$TMP/err"
g=$(h5dump -a /grad "$TMP/fp8.h5" 2>/dev/null | grep -o '"fp8"')
if awk 'NR > 1 && $2 < 0.9 { bad = 1 } END { exit bad || NR != 4 }' "$TMP/fp8.txt" && [ "$g" = '"fp8"' ]; then
	pass "--grad fp8, N_FA = L: every layer to fa (w_fa $(wfa "$TMP/fp8.txt")); the file says grad fp8"
else fail "--grad fp8" "$(cat "$TMP/fp8.txt" "$TMP/err")" "grad attribute: $g"; fi

# --forward fp8: the supernet's forward through e4m3 codes too; the same
# sanity check, and the file and the settings line say so
$S -n 3 --grad fp8 --forward fp8 -o "$TMP/f8.h5" --tokens 3200 --lr 0.1 >"$TMP/f8.txt" 2>"$TMP/err"
g=$(h5dump -a /forward "$TMP/f8.h5" 2>/dev/null | grep -o '"fp8"') gd=$(h5dump -a /forward "$TMP/fp8.h5" 2>/dev/null |
	grep -o '"bf16"')
if awk 'NR > 1 && $2 < 0.9 { bad = 1 } END { exit bad || NR != 4 }' "$TMP/f8.txt" && [ "$g" = '"fp8"' ] &&
	[ "$gd" = '"bf16"' ] && grep -q 'grad fp8, forward fp8' "$TMP/err"; then
	pass "--forward fp8, N_FA = L: every layer to fa (w_fa $(wfa "$TMP/f8.txt")); the file says forward fp8"
else fail "--forward fp8" "$(cat "$TMP/f8.txt" "$TMP/err")" "forward attribute: $g (bf16 run: $gd)"; fi
$S -n 3 --forward fp8-both -o "$TMP/fb.h5" --tokens 3200 --lr 0.1 >"$TMP/fb.txt" 2>"$TMP/err"
g=$(h5dump -a /forward "$TMP/fb.h5" 2>/dev/null | grep -o '"fp8-both"')
if awk 'NR > 1 && $2 < 0.9 { bad = 1 } END { exit bad || NR != 4 }' "$TMP/fb.txt" && [ "$g" = '"fp8-both"' ] &&
	grep -q 'forward fp8-both' "$TMP/err"; then
	pass "--forward fp8-both, N_FA = L: every layer to fa (w_fa $(wfa "$TMP/fb.txt")); the file says so"
else fail "--forward fp8-both" "$(cat "$TMP/fb.txt" "$TMP/err")" "forward attribute: $g"; fi
# a run's KL trajectory
kls() { h5dump -d /trajectory/kl "$1" | grep -v '^HDF5'; }
$S -n 3 --forward fp8-all -o "$TMP/fl.h5" --tokens 3200 --lr 0.1 >"$TMP/fl.txt" 2>"$TMP/err"
g=$(h5dump -a /forward "$TMP/fl.h5" 2>/dev/null | grep -o '"fp8-all"')
if awk 'NR > 1 && $2 < 0.9 { bad = 1 } END { exit bad || NR != 4 }' "$TMP/fl.txt" && [ "$g" = '"fp8-all"' ] &&
	grep -q 'forward fp8-all' "$TMP/err" && [ "$(kls "$TMP/fb.h5")" != "$(kls "$TMP/fl.h5")" ]; then
	pass "--forward fp8-all, N_FA = L: every layer to fa (w_fa $(wfa "$TMP/fl.txt")), KLs not fp8-both's"
else fail "--forward fp8-all" "$(cat "$TMP/fl.txt" "$TMP/err")" "forward attribute: $g"; fi
# --forward fp8-fast on the CPU: fp8-all (its sums are float32 either way),
# the file says fp8-fast
$S -n 3 --forward fp8-fast -o "$TMP/ff.h5" --tokens 3200 --lr 0.1 >"$TMP/ff.txt" 2>"$TMP/err"
g=$(h5dump -a /forward "$TMP/ff.h5" 2>/dev/null | grep -o '"fp8-fast"')
if [ "$g" = '"fp8-fast"' ] && grep -q 'forward fp8-fast' "$TMP/err" && [ "$(kls "$TMP/ff.h5")" = "$(kls "$TMP/fl.h5")" ]
then
	pass "--forward fp8-fast on the CPU: fp8-all's KLs step by step; the file says fp8-fast"
else fail "--forward fp8-fast on the CPU" "$(cat "$TMP/ff.txt" "$TMP/err")" "forward attribute: $g"; fi
# --forward auto, the default: bf16 on the CPU (f8.h5's run above named
# only --grad); a checkpoint made with fp8-both goes on with it
$S -n 1 --tokens 640 --forward fp8-both --ckpt-every 2 --stop-after 2 -o "$TMP/fa.h5" >/dev/null 2>&1
$S -n 1 --tokens 640 -o "$TMP/fa.h5" --resume >/dev/null 2>"$TMP/err"
g=$(h5dump -a /forward "$TMP/fa.h5" 2>/dev/null | grep -o '"fp8-both"')
if [ "$gd" = '"bf16"' ] && [ "$g" = '"fp8-both"' ] && grep -q 'resuming' "$TMP/err" &&
	grep -q 'forward fp8-both (auto)' "$TMP/err"; then
	pass "--forward auto: bf16 on the CPU; resuming an fp8-both checkpoint goes on with fp8-both"
else fail "--forward auto" "$(cat "$TMP/err")" "default run's forward: $gd, resumed: $g"; fi
$S -n 1 --tokens 640 --forward fp8-all --ckpt-every 2 --stop-after 2 -o "$TMP/fz.h5" >/dev/null 2>&1
$S -n 1 --tokens 640 -o "$TMP/fz.h5" --resume >/dev/null 2>"$TMP/err"
g=$(h5dump -a /forward "$TMP/fz.h5" 2>/dev/null | grep -o '"fp8-all"')
if [ "$g" = '"fp8-all"' ] && grep -q 'resuming' "$TMP/err" && grep -q 'forward fp8-all (auto)' "$TMP/err"; then
	pass "--forward auto: resuming an fp8-all checkpoint goes on with fp8-all"
else fail "--forward auto, fp8-all checkpoint" "$(cat "$TMP/err")" "resumed: $g"; fi

# the same seed, the same logits (gumbel-topk draws its noise from the seed)
G="$S -n 1 --relax gumbel-topk --tokens 960"
$G --seed 5 -o "$TMP/g1.h5" >/dev/null 2>&1; $G --seed 5 -o "$TMP/g2.h5" >/dev/null 2>&1
$G --seed 6 -o "$TMP/g3.h5" >/dev/null 2>&1
# (/alpha: small enough to be stored uncompressed, which h5dump reads)
a1=$(h5dump -d /alpha "$TMP/g1.h5" | grep '(') a2=$(h5dump -d /alpha "$TMP/g2.h5" | grep '(')
a3=$(h5dump -d /alpha "$TMP/g3.h5" | grep '(')
if [ -n "$a1" ] && [ "$a1" = "$a2" ] && [ "$a1" != "$a3" ]; then
	pass "gumbel-topk: the same seed gives the same logits, another seed others"
else fail "seeded search" "$(echo "$a1" | head -3)" "$(echo "$a2" | head -3)"; fi

# stopped after 7 steps and resumed: the uninterrupted run's logits
R="$S -n 1 --relax budget-dist --tokens 640 --ckpt-every 3 -o $TMP/r.h5"
$R --stop-after 7 >/dev/null 2>"$TMP/err"
if [ -e "$TMP/r.h5.ckpt.h5" ] && [ ! -e "$TMP/r.h5" ]; then pass "--stop-after: a checkpoint and no output yet"
else fail "--stop-after" "$(ls "$TMP")" "$(cat "$TMP/err")"; fi
$R --resume >/dev/null 2>"$TMP/err"
$S -n 1 --relax budget-dist --tokens 640 -o "$TMP/u.h5" >/dev/null 2>&1
r=$(h5dump -d /alpha "$TMP/r.h5" | grep '(') u=$(h5dump -d /alpha "$TMP/u.h5" | grep '(')
if grep -q 'resuming' "$TMP/err" && [ -n "$r" ] && [ "$r" = "$u" ] && [ ! -e "$TMP/r.h5.ckpt.h5" ]; then
	pass "--resume: the same logits as an uninterrupted run; the checkpoint removed"
else fail "--resume" "$(cat "$TMP/err")"; fi
check_error "--resume with other settings" 1 "a checkpoint made with other settings" - \
	sh -c "$S -n 1 --tokens 640 --ckpt-every 2 --stop-after 2 -o $TMP/s.h5 2>/dev/null; $S -n 2 --tokens 640 -o $TMP/s.h5 --resume"

# --grad auto, the default: bf16 on the CPU (r.h5 above); a checkpoint made
# with fp8 goes on in fp8 when the run resuming it leaves --grad to auto
$S -n 1 --tokens 640 --grad fp8 --ckpt-every 2 --stop-after 2 -o "$TMP/a.h5" >/dev/null 2>&1
$S -n 1 --tokens 640 -o "$TMP/a.h5" --resume >/dev/null 2>"$TMP/err"
ga=$(h5dump -a /grad "$TMP/a.h5" 2>/dev/null | grep -o '"fp8"') gd=$(h5dump -a /grad "$TMP/r.h5" 2>/dev/null | grep -o '"bf16"')
if [ "$gd" = '"bf16"' ] && [ "$ga" = '"fp8"' ] && grep -q 'resuming' "$TMP/err" && grep -q 'grad fp8 (auto)' "$TMP/err"
then pass "--grad auto: bf16 on the CPU; resuming an fp8 checkpoint goes on in fp8"
else fail "--grad auto" "$(cat "$TMP/err")" "default run's grad: $gd, resumed: $ga"; fi

# the measures: swa with a window of the whole sequence is the teacher
$S --measure restore-one --linear swa --window 32 --tokens 64 -o "$TMP/rs.h5" >"$TMP/rs.txt" 2>"$TMP/err"
if awk 'NR > 1 && $2 != 0 { bad = 1 } END { exit bad || NR != 4 }' "$TMP/rs.txt"; then
	pass "restore-one with swa over the whole sequence: KL 0 for every layer"
else fail "restore-one swa" "$(cat "$TMP/rs.txt" "$TMP/err")"; fi
$S --measure ablate-one --tokens 64 -o "$TMP/ab.h5" >"$TMP/ab.txt" 2>"$TMP/err"
worst=$(awk 'NR > 1 && (w == "" || $2 > v) { w = $1; v = $2 } END { print w }' "$TMP/ab.txt")
got=$(bin/derive -n 1 --method ablate-one -o "$TMP/arch.h5" "$TMP/ab.h5" 2>&1 | sed 's/ |.*//')
if awk 'NR > 1 && !($2 > 0) { bad = 1 } END { exit bad || NR != 4 }' "$TMP/ab.txt" &&
	[ "$got" = "ablate-one n_fa 1: fa: $worst" ]; then
	pass "ablate-one with gdn: KL above 0 every layer; derive keeps the costliest ($worst)"
else fail "ablate-one" "$(cat "$TMP/ab.txt" "$TMP/err")" "$got"; fi
# the measure with the supernet's forward in e4m3: KL still above 0, moved by the codes, the file says so
$S --measure ablate-one --forward fp8 --tokens 64 -o "$TMP/ab8.h5" >"$TMP/ab8.txt" 2>"$TMP/err"
g=$(h5dump -a /forward "$TMP/ab8.h5" 2>/dev/null | grep -o '"fp8"')
if awk 'NR > 1 && !($2 > 0) { bad = 1 } END { exit bad || NR != 4 }' "$TMP/ab8.txt" && [ "$g" = '"fp8"' ] &&
	! cmp -s "$TMP/ab.txt" "$TMP/ab8.txt"; then
	pass "ablate-one --forward fp8: KL above 0 every layer, not bf16's; the file says forward fp8"
else fail "ablate-one --forward fp8" "$(cat "$TMP/ab8.txt" "$TMP/err")" "forward attribute: $g"; fi
$S --measure ablate-one --forward fp8-all --tokens 64 -o "$TMP/abl.h5" >"$TMP/abl.txt" 2>"$TMP/err"
g=$(h5dump -a /forward "$TMP/abl.h5" 2>/dev/null | grep -o '"fp8-all"')
if awk 'NR > 1 && !($2 > 0) { bad = 1 } END { exit bad || NR != 4 }' "$TMP/abl.txt" && [ "$g" = '"fp8-all"' ] &&
	! cmp -s "$TMP/ab8.txt" "$TMP/abl.txt"; then
	pass "ablate-one --forward fp8-all: KL above 0 every layer, not fp8's; the file says forward fp8-all"
else fail "ablate-one --forward fp8-all" "$(cat "$TMP/abl.txt" "$TMP/err")" "forward attribute: $g"; fi
$S --measure restore-one --tokens 64 -o "$TMP/re.h5" >"$TMP/re.txt" 2>"$TMP/err"
best=$(awk 'NR > 1 && (w == "" || $2 < v) { w = $1; v = $2 } END { print w }' "$TMP/re.txt")
got=$(bin/derive -n 1 --method restore-one -o "$TMP/arch.h5" "$TMP/re.h5" 2>&1 | sed 's/ |.*//')
if [ "$got" = "restore-one n_fa 1: fa: $best" ]; then pass "restore-one: derive keeps the layer that restores most ($best)"
else fail "restore-one" "$(cat "$TMP/re.txt" "$TMP/err")" "$got"; fi

# bad input
check_usage "no budget and no measure: usage" bin/search-logits -m $M -c "$TMP/cand" -d "$TMP/tok.h5"
check_error "both -n and -r" 1 "one of them" "$TMP/x.h5" $S -n 1 -r 0.5 -o "$TMP/x.h5"
check_error "-n beyond the layers" 1 "more fa layers than the teacher's 3" "$TMP/x.h5" $S -n 4 -o "$TMP/x.h5"
check_error "an unknown relaxation" 1 "--relax: 'hard'" "$TMP/x.h5" $S -n 1 --relax hard -o "$TMP/x.h5"
check_error "an unknown --grad" 1 "--grad: 'fp4'" "$TMP/x.h5" $S -n 1 --grad fp4 -o "$TMP/x.h5"
check_error "--resume with another --grad" 1 "a checkpoint made with other settings" - \
	sh -c "$S -n 1 --tokens 640 --ckpt-every 2 --stop-after 2 -o $TMP/p.h5 2>/dev/null; $S -n 1 --tokens 640 --grad fp8 -o $TMP/p.h5 --resume"
check_error "an unknown --forward" 1 "--forward: 'fp16' is not auto" "$TMP/x.h5" $S -n 1 --forward fp16 -o "$TMP/x.h5"
check_error "--resume with another --forward" 1 "a checkpoint made with other settings" - \
	sh -c "$S -n 1 --tokens 640 --ckpt-every 2 --stop-after 2 -o $TMP/q.h5 2>/dev/null; $S -n 1 --tokens 640 --forward fp8 -o $TMP/q.h5 --resume"
check_error "--resume of fp8-both with fp8-all" 1 "a checkpoint made with other settings" - \
	sh -c "$S -n 1 --tokens 640 --forward fp8-both --ckpt-every 2 --stop-after 2 -o $TMP/v.h5 2>/dev/null;
	       $S -n 1 --tokens 640 --forward fp8-all -o $TMP/v.h5 --resume"
check_error "--ops without fa first" 1 "must start with fa" "$TMP/x.h5" $S -n 1 --ops gdn,fa -o "$TMP/x.h5"
check_error "--ops naming an op twice" 1 "names gdn twice" "$TMP/x.h5" $S -n 1 --ops fa,gdn,gdn -o "$TMP/x.h5"
check_error "an unknown measure" 1 "--measure: 'drop-one'" "$TMP/x.h5" $S --measure drop-one -o "$TMP/x.h5"
check_error "candidates of another teacher" 1 "L00.h5" "$TMP/x.h5" \
	bin/search-logits -m tests/data/tiny-qwen2 -c "$TMP/cand" -d "$TMP/tok.h5" -n 1 --seq 32 -o "$TMP/x.h5"
check_error "a candidate directory without gla" 1 "L00.h5" "$TMP/x.h5" $S -n 1 --ops fa,gla -c "$TMP/none" -o "$TMP/x.h5"
check_error "tokens that are not HDF5" 1 "$M.ids.txt" "$TMP/x.h5" \
	bin/search-logits -m $M -c "$TMP/cand" -d $M.ids.txt -n 1 -o "$TMP/x.h5"
