#!/bin/sh
# distill-linear on the tiny Qwen2 fixture and random ids: the candidates of
# both layers and both operators, their NMSE falling, a stopped run resumed
# to the same parameters bit for bit, candidates refused for another
# teacher, and bad input. On the CPU; t0310-distill-linear-gpu.sh runs the
# same on the GPU.
. "$(dirname "$0")/lib.sh"
Q=tests/data/tiny-qwen2
awk 'BEGIN { srand(3); for (i = 0; i < 3000; i++) printf "%d ", 3 + int(rand() * 509); print "" }' |
	tests/bin/mktokens "$TMP/tok.h5"
D="bin/distill-linear -m $Q -d $TMP/tok.h5 --tokens 8192 --seq 64 --heldout 256 --lr 3e-3 --ckpt-every 10 --device cpu"

check "distill-linear makes candidates for both layers" $D -o "$TMP/a"
cp "$TMP/out" "$TMP/table"
if [ -s "$TMP/a/L00.h5" ] && [ -s "$TMP/a/L01.h5" ] && [ ! -e "$TMP/a/distill-Lall.ckpt.h5" ]; then
	pass "L00.h5 and L01.h5 written, the checkpoint removed"
else fail "the output files" "$(ls "$TMP/a")"; fi
# layer op train_before train_after heldout_before heldout_after, 4 rows
if awk 'NR > 1 { n++; if (!($4 < 0.75 * $3 && $6 < 0.75 * $5)) bad++ } END { exit !(n == 4 && !bad) }' "$TMP/table"
then pass "every candidate's train and held-out NMSE fall by a quarter or more"
else fail "NMSE falls" "$(cat "$TMP/table")"; fi

$D -o "$TMP/b" --stop-after 23 >/dev/null 2>"$TMP/err"
if [ -e "$TMP/b/distill-Lall.ckpt.h5" ] && [ ! -e "$TMP/b/L00.h5" ] && grep -q 'stopped after step 23' "$TMP/err"; then
	pass "--stop-after leaves a checkpoint and no candidates"
else fail "--stop-after" "$(cat "$TMP/err")"; fi
check "--resume finishes the stopped run" $D -o "$TMP/b" --resume
check "the resumed run's layer 0 equals the uninterrupted one's bit for bit" \
	tests/bin/candcmp $Q 0 "$TMP/a/L00.h5" "$TMP/b/L00.h5"
check "the resumed run's layer 1 equals the uninterrupted one's bit for bit" \
	tests/bin/candcmp $Q 1 "$TMP/a/L01.h5" "$TMP/b/L01.h5"

check_error "candidates of another teacher are refused" 1 "candidates for another teacher" - \
	tests/bin/candcmp tests/data/tiny-llama 0 "$TMP/a/L00.h5" "$TMP/a/L00.h5"
check_error "candidates of another layer are refused" 1 "candidates of layer 0, not layer 1" - \
	tests/bin/candcmp $Q 1 "$TMP/a/L00.h5" "$TMP/a/L00.h5"
$D -o "$TMP/c" --stop-after 5 >/dev/null 2>&1
check_error "--resume with other settings is refused" 1 "a checkpoint made with other settings" - \
	$D -o "$TMP/c" --resume --lr 0.01

check_usage "no arguments: usage" bin/distill-linear
check_error "an unknown operator" 1 "unknown operator 'mamba'" "$TMP/d/L00.h5" $D -o "$TMP/d" --ops gdn,mamba
check_error "swa needs no candidate" 1 "swa is the teacher's own attention" "$TMP/d/L00.h5" $D -o "$TMP/d" --ops swa
check_error "a layer the teacher lacks" 1 "not within the teacher's layers 0-1" "$TMP/d/L00.h5" $D -o "$TMP/d" -l 0-2
check_error "a tokens file that is not HDF5" 1 "$Q.ids.txt" "$TMP/d/L00.h5" \
	bin/distill-linear -m $Q -d $Q.ids.txt -o "$TMP/d"
check_error "too few tokens for the held-out split" 1 "fewer than" "$TMP/d/L00.h5" $D -o "$TMP/d" --heldout 5000
check_error "an unknown device" 1 "not cpu or cuda: 'tpu'" "$TMP/d/L00.h5" $D -o "$TMP/d" --device tpu
if ! nvidia-smi -L >/dev/null 2>&1; then
	check_error "--device cuda without a GPU" 1 "--device cuda" "$TMP/d/L00.h5" $D -o "$TMP/d" --device cuda
fi
