#!/bin/sh
# eval-lm --arch on the GPU against the CPU, on a random Qwen2 of head dim
# 64 written here (the fixtures' head dims, 16 and 24, are not the GPU's),
# with candidates from a short distill-linear on the GPU: hybrids of uniform
# gdn, all swa with a window shorter than the sequence, a fixed layout with
# gla, mse's choice, and all fa. The KL, loss and teacher_loss of cuda are
# the CPU's within bf16 tolerance; all fa has KL 0 on both. Skipped without
# a GPU; tests/run gpu runs it.
. "$(dirname "$0")/lib.sh"
export OMP_NUM_THREADS=4 # the CPU side's tiny products gain nothing from more
if ! nvidia-smi -L >/dev/null 2>&1; then
	skip "eval-lm --arch --device cuda: no GPU"
	exit 0
fi
M=$TMP/m
mkmodel_cand 3

# ARCH.h5 CPU.txt GPU.txt: the hybrid's line on both devices (4 sequences
# of 128, swa's window 16)
E="bin/eval-lm -m $M --tokens $TMP/tok.h5 -n 512 --seq 128 --window 16"
both() {
	$E --arch "$1" --device cpu >"$2" 2>"$TMP/err.cpu" || fail "eval-lm --arch $1 --device cpu" "$(cat "$TMP/err.cpu")"
	$E --arch "$1" --device cuda >"$3" 2>"$TMP/err.gpu" || fail "eval-lm --arch $1 --device cuda" "$(cat "$TMP/err.gpu")"
}
# agree WHAT CPU.txt GPU.txt: kl within 5e-2 relative (+1e-3), loss and
# teacher_loss within 1e-2 relative, the same token count
agree() {
	if paste "$2" "$3" | awk '{ n = NF / 2; ok = n == 10 && $1 == "loss" && $(n + 1) == "loss" && $10 == $(n + 10)
		d = $6 - $(n + 6); if (d < 0) d = -d; if (d > 0.05 * $6 + 1e-3) ok = 0
		for (i = 2; i <= 8; i += 6) { d = $i - $(n + i); if (d < 0) d = -d; if (d > 0.01 * $i) ok = 0 } }
		END { exit !(NR == 1 && ok) }'
	then pass "$1: cuda's kl, loss and teacher_loss are the CPU's (cpu: $(cut -d' ' -f2,6,8 "$2"); cuda: $(cut -d' ' -f2,6,8 "$3"))"
	else fail "$1: cuda vs cpu" "cpu:  $(cat "$2")" "cuda: $(cat "$3")" "$(cat "$TMP/err.gpu")"; fi
}
for lay in "gdn:-n 1 --method uniform" "swa:-n 0 --method uniform --linear swa" "gla:-n 2 --method fixed:3,1 --linear gla" \
	"mse:-n 1 --method mse"; do
	name=${lay%%:*}
	bin/derive -c "$TMP/cand" -o "$TMP/$name.h5" ${lay#*:} >"$TMP/$name.layout" 2>"$TMP/err" ||
		fail "derive $name" "$(cat "$TMP/err")"
	both "$TMP/$name.h5" "$TMP/$name.cpu" "$TMP/$name.gpu"
	agree "$(cat "$TMP/$name.layout")" "$TMP/$name.cpu" "$TMP/$name.gpu"
done
if grep -q "device cuda" "$TMP/err.gpu"; then pass "--device cuda runs the hybrid on the GPU (says so)"
else fail "eval-lm --arch --device cuda stderr" "$(cat "$TMP/err.gpu")"; fi
$E --arch "$TMP/mse.h5" >"$TMP/mse.default" 2>"$TMP/err"
if grep -q "device cuda" "$TMP/err" && [ -s "$TMP/mse.gpu" ] && [ "$(cat "$TMP/mse.default")" = "$(cat "$TMP/mse.gpu")" ]; then
	pass "--arch with a GPU and no --device runs on it, repeatably"
else fail "--arch default device" "$(cat "$TMP/mse.default" "$TMP/mse.gpu" "$TMP/err")"; fi

# all fa: the teacher itself, KL 0 and the teacher's loss on the CPU; on
# the GPU up to rounding (the teacher's forward without a hook fuses the
# residual add into the o GEMM, the hybrid's hooked forward cannot: KL 1.8e-4
# on this model)
bin/derive -n 4 --method uniform -c "$TMP/cand" -o "$TMP/fa.h5" >/dev/null 2>&1
both "$TMP/fa.h5" "$TMP/fa.cpu" "$TMP/fa.gpu"
if awk '{ ok = $6 == 0 && $2 == $8 } END { exit !(NR == 1 && ok) }' "$TMP/fa.cpu" &&
	awk '{ d = $2 - $8; if (d < 0) d = -d; ok = $6 >= -1e-6 && $6 <= 1e-3 && d <= 1e-3 * $8 }
		END { exit !(NR == 1 && ok) }' "$TMP/fa.gpu"
then pass "all fa: KL 0 and the teacher's loss on the CPU, KL <= 1e-3 and the teacher's loss within 1e-3 on cuda"
else fail "all fa" "cpu:  $(cat "$TMP/fa.cpu")" "cuda: $(cat "$TMP/fa.gpu")"; fi
agree "all fa" "$TMP/fa.cpu" "$TMP/fa.gpu"
plain=$(bin/eval-lm -m $M --tokens "$TMP/tok.h5" -n 512 --seq 128 --device cuda 2>/dev/null | awk '{ print $2 }')
if [ -n "$plain" ] && awk -v p="$plain" '{ d = $8 - p; if (d < 0) d = -d; ok = d <= 2e-3 * p } END { exit !(NR == 1 && ok) }' \
	"$TMP/fa.gpu"; then
	pass "cuda's teacher_loss is eval-lm's loss without --arch ($plain)"
else fail "teacher_loss vs plain eval-lm on cuda" "plain $plain" "$(cat "$TMP/fa.gpu")"; fi

# a head dim the GPU lacks: without --device, the CPU, and a note on stderr
Q=tests/data/tiny-qwen2
bin/derive -n 1 --method uniform --linear swa -m $Q -o "$TMP/q.h5" >/dev/null 2>&1
if bin/eval-lm -m $Q --ids $Q.ids.txt --arch "$TMP/q.h5" --window 4 >"$TMP/q.out" 2>"$TMP/err" &&
	grep -q "head dim 16.*CPU" "$TMP/err" && grep -q "^loss .* kl " "$TMP/q.out"; then
	pass "head dim 16 without --device: on the CPU, said on stderr"
else fail "head dim 16 fallback" "$(cat "$TMP/q.out" "$TMP/err")"; fi
