#!/bin/sh
# bench/stage.sh: the whole distill-linear stage's throughput on the GPU at
# the Qwen2.5-3B shape (random bf16 weights, model "random:qwen2.5-3b"):
# every layer (36) x gdn and gla, one teacher forward a batch feeding all 72
# candidates, as `make -f pipeline.mk cand` runs it on one GPU, on random
# token ids. Prints distill-linear's own tokens/s line (the training steps;
# the held-out passes before and after are not in it).
#   sh bench/stage.sh [STEPS [SEQ [BATCH]]]   (default 20 steps of 8 x 512)
cd "$(dirname "$0")/.." || exit 1
steps=${1:-20} seq=${2:-512} batch=${3:-8}
tmp=${TMPDIR:-/tmp}/dash-stage.$$
mkdir -p "$tmp" || exit 1
trap 'rm -rf "$tmp"' EXIT
# random ids below the vocabulary, 8 documents
awk -v n=$(((steps * batch + 2) * seq)) 'BEGIN { srand(1); for (d = 0; d < 8; d++) {
	for (i = 0; i < n / 8; i++) printf "%d ", int(rand() * 151000); printf "\n" } }' |
	tests/bin/mktokens "$tmp/tokens.h5" || exit 1
bin/distill-linear -m random:qwen2.5-3b -d "$tmp/tokens.h5" -o "$tmp/cand" --tokens $((steps * batch * seq)) \
	--seq "$seq" --batch "$batch" --heldout "$seq" --device cuda 2>&1 >/dev/null | tr '\r' '\n' | grep -v 'steps '
