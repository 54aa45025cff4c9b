#!/bin/sh
# bench/stage.sh: the whole distill-linear stage's throughput on the GPU at
# the Qwen2.5-3B shape (random bf16 weights, model "random:qwen2.5-3b"):
# every layer (36) x gdn and gla, one teacher forward a batch feeding all 72
# candidates, as `make -f pipeline.mk cand` runs it on one GPU, on random
# token ids. distill-linear's own lines pass through as they come: the
# set-up's phases and their seconds (model, candidates, device, held-out
# NMSE), a progress line every 10 s of training, then the tokens/s of the
# training steps (all of them, and the steady state after the first step
# outside checkpoints) and the seconds of the held-out pass and the files
# after it. Ends with the wall time in all and each operator's mean
# held-out NMSE before and after.
#   sh bench/stage.sh [STEPS [SEQ [BATCH]]]   (default 20 steps of 8 x 512)
#   MODEL=random:qwen2.5-0.5b sh bench/stage.sh 5   (a smaller shape)
cd "$(dirname "$0")/.." || exit 1
steps=${1:-20} seq=${2:-512} batch=${3:-8} model=${MODEL:-random:qwen2.5-3b}
tmp=${TMPDIR:-/tmp}/dash-stage.$$
mkdir -p "$tmp" || exit 1
trap 'rm -rf "$tmp"' EXIT
# random ids below the vocabulary, 8 documents
awk -v n=$(((steps * batch + 2) * seq)) 'BEGIN { srand(1); for (d = 0; d < 8; d++) {
	for (i = 0; i < n / 8; i++) printf "%d ", int(rand() * 151000); printf "\n" } }' |
	tests/bin/mktokens "$tmp/tokens.h5" || exit 1
start=$(date +%s)
bin/distill-linear -m "$model" -d "$tmp/tokens.h5" -o "$tmp/cand" --tokens $((steps * batch * seq)) \
	--seq "$seq" --batch "$batch" --heldout "$seq" --device cuda >"$tmp/table" || exit 1
echo "stage.sh: $model, $steps steps of $batch x $seq tokens: $(($(date +%s) - start)) s in all"
awk -F '\t' 'NR > 1 { n[$2]++; b[$2] += $5; a[$2] += $6 }
	END { for (op in n) printf "stage.sh: %s: %d candidates, mean held-out NMSE %.4f before, %.4f after\n",
		op, n[op], b[op] / n[op], a[op] / n[op] }' "$tmp/table"
