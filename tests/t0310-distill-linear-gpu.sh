#!/bin/sh
# distill-linear --device cuda on the tiny Qwen2 fixture (head dim 16): the
# candidates' NMSE falling as on the CPU, the held-out NMSE at
# initialisation equal to the CPU's up to the teacher's bf16 on the GPU, a
# stopped run resumed to the same parameters bit for bit. Skipped without a
# GPU; tests/run gpu runs it.
. "$(dirname "$0")/lib.sh"
if ! nvidia-smi -L >/dev/null 2>&1; then
	skip "distill-linear --device cuda: no GPU"
	exit 0
fi
Q=tests/data/tiny-qwen2
awk 'BEGIN { srand(3); for (i = 0; i < 3000; i++) printf "%d ", 3 + int(rand() * 509); print "" }' |
	tests/bin/mktokens "$TMP/tok.h5"
D="bin/distill-linear -m $Q -d $TMP/tok.h5 --tokens 8192 --seq 64 --heldout 256 --lr 3e-3 --ckpt-every 10"

check "distill-linear --device cuda makes candidates for both layers" $D -o "$TMP/a" --device cuda
cp "$TMP/out" "$TMP/gpu"
check "the same run on the CPU" $D -o "$TMP/cpu" --device cpu
cp "$TMP/out" "$TMP/cpu.tab"
if awk 'NR > 1 { n++; if (!($4 < 0.75 * $3 && $6 < 0.75 * $5)) bad++ } END { exit !(n == 4 && !bad) }' "$TMP/gpu"
then pass "every GPU candidate's train and held-out NMSE fall by a quarter or more"
else fail "NMSE falls on the GPU" "$(cat "$TMP/gpu")"; fi
# column 5: held-out NMSE at initialisation; the teacher's u and a differ
# by bf16 rounding between the devices, the candidates' arithmetic by TF32
if paste "$TMP/gpu" "$TMP/cpu.tab" | awk 'NR > 1 { d = $5 - $11; if (d < 0) d = -d; if (d > 0.05 * $11) bad++ }
	END { exit bad }'
then pass "held-out NMSE at initialisation: GPU within 5% of the CPU"
else fail "GPU vs CPU at initialisation" "$(paste "$TMP/gpu" "$TMP/cpu.tab")"; fi

$D -o "$TMP/b" --device cuda --stop-after 23 >/dev/null 2>"$TMP/err"
if [ -e "$TMP/b/distill-Lall.ckpt.h5" ] && grep -q 'stopped after step 23' "$TMP/err"; then
	pass "--stop-after on the GPU leaves a checkpoint"
else fail "--stop-after on the GPU" "$(cat "$TMP/err")"; fi
check "--resume on the GPU finishes the stopped run" $D -o "$TMP/b" --device cuda --resume
check "the resumed GPU run's layer 0 equals the uninterrupted one's bit for bit" \
	tests/bin/candcmp $Q 0 "$TMP/a/L00.h5" "$TMP/b/L00.h5"
check "the resumed GPU run's layer 1 equals the uninterrupted one's bit for bit" \
	tests/bin/candcmp $Q 1 "$TMP/a/L01.h5" "$TMP/b/L01.h5"
