#!/bin/sh
# The default teacher, when `make data` has fetched it (skipped otherwise, as
# in CI, which does not download 491 MB): its tokenizer equals the Qwen2.5
# tokenizer.json on the hard cases, it answers a simple question, and its
# perplexity on held-out text is that of a real small LM.
. "$(dirname "$0")/lib.sh"
M=data/teacher/qwen2.5-coder-0.5b.gguf
if [ ! -f $M ]; then
	skip "default teacher: $M not fetched (make data)"
	exit 0
fi
bin/tokenize -t $M --ids <tests/data/tok/mixed.txt >"$TMP/ids" 2>/dev/null
cmp -s "$TMP/ids" tests/data/tok/mixed.ids && pass "the teacher's GGUF tokenizer gives tokenizers' ids for mixed.txt" ||
	fail "the teacher's tokenizer differs on mixed.txt"
bin/eval-lm -m $M --generate "What is the capital of France? Answer in one word." --max-new 16 >"$TMP/answer" 2>"$TMP/err"
grep -q Paris "$TMP/answer" && pass "the teacher answers: $(cat "$TMP/answer")" || fail "the teacher's answer lacks Paris" "$(cat "$TMP/answer" "$TMP/err")"
zstd -q -dc data/text/sotu.jsonl.zst | tail -n 1 >"$TMP/held.jsonl"
bin/tokenize -t $M -o "$TMP/held.h5" "$TMP/held.jsonl" 2>/dev/null
ppl=$(bin/eval-lm -m $M --tokens "$TMP/held.h5" -n 512 --seq 512 2>/dev/null | awk '{ print $4 }')
awk -v p="$ppl" 'BEGIN { exit !(p > 5 && p < 100) }' && pass "perplexity $ppl on held-out text (the 2021 address)" || fail "perplexity '$ppl' is not that of a real LM"
