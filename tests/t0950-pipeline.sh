#!/bin/sh
# The whole pipeline (pipeline.mk) on the CPU at toy size: the tiny Qwen2
# GGUF fixture (2 layers, its own byte-level tokenizer) over a few State of
# the Union addresses, from text to the table of DASH and every baseline
# rule at one budget (1 fa layer of 2) and its picture; then a second make
# does nothing, and another budget re-runs the search, derive and eval-lm
# but reuses the candidates.
. "$(dirname "$0")/lib.sh"
zstd -q -dc data/text/sotu.jsonl.zst | head -n 2 >"$TMP/train.jsonl"
zstd -q -dc data/text/sotu.jsonl.zst | tail -n 1 >"$TMP/held.jsonl"
O=$TMP/run
pipe() {
	OMP_NUM_THREADS=1 make -s -f pipeline.mk BUILD=0 GPU=0 OUT=$O TEACHER=tests/data/gguf/tiny-qwen2.gguf \
		TRAIN_TEXT=$TMP/train.jsonl HELDOUT_TEXT=$TMP/held.jsonl CAND_TOKENS=1024 CAND_SEQ=128 \
		CAND_HELDOUT=512 SEARCH_TOKENS=512 SEARCH_SEQ=128 SEARCH_WINDOW=16 MEASURE_TOKENS=256 \
		EVAL_TOKENS=256 EVAL_SEQ=128 RULER_TASKS=vt RULER_LENGTHS=512 RULER_SAMPLES=1 "$@"
}

check "make -f pipeline.mk runs every stage" pipe ARCH_RATIOS=0.5 all
cp "$TMP/out" "$TMP/first"
methods="dash uniform uniform-end mse ablate-one restore-one random"
missing=
for m in $methods; do
	for f in arch/$m-0.5.h5 arch/$m-0.5.lm.txt; do [ -s "$O/$f" ] || missing="$missing $f"; done
done
for f in cand/L00.h5 cand/L01.h5 logits/0.5-s1.h5 measure/ablate-one.h5 measure/restore-one.h5 search-0.5.svg \
	ruler.h5 ruler.txt; do
	[ -s "$O/$f" ] || missing="$missing $f"
done
if [ -z "$missing" ]; then pass "every stage's file is there"; else fail "files missing:$missing"; fi
# the table: a row per rule, each hybrid with one fa layer of two, its KL
# finite and >= 0, and the teacher's own loss the same in every row
if awk -F '\t' 'NR == 1 { next } { n++; if (!($2 >= 0) || $6 !~ /n_fa 1: /) bad++; t[$5]++ }
	END { exit !(n == 7 && !bad && length(t) == 1) }' "$O/arch/table.txt"
then pass "the table has the 7 rules, each a valid 1-fa hybrid"
else fail "table" "$(cat "$O/arch/table.txt")"; fi
if grep -q "^dash-0.5" "$TMP/first" && grep -q "^loss " "$TMP/first"
then pass "make prints the teacher's perplexity and the table"
else fail "printed table" "$(cat "$TMP/first")"; fi
# RULER: the teacher and the 7 hybrids on the same examples
if awk -F '\t' 'NR == 1 { ok = $1 == "RULER 512" && $2 == "teacher" && $3 == "dash-0.5" && NF == 9 } END { exit !ok }' \
	"$O/ruler.txt" && grep -q "^vt" "$O/ruler.txt" && grep -q "^RULER 512" "$TMP/first"
then pass "ruler.txt: the teacher and every hybrid, printed by make"
else fail "ruler table" "$(cat "$O/ruler.txt")"; fi
# the picture: one heatmap cell a layer and step (4 steps here), 7 layouts
if grep -q '</svg>' "$O/search-0.5.svg" && [ "$(grep -c '<title>layer' "$O/search-0.5.svg")" -eq 14 ] &&
	grep -q 'restore-one 1' "$O/search-0.5.svg"
then pass "search-0.5.svg: heatmap and the 7 layouts"
else fail "svg" "$(head -c 400 "$O/search-0.5.svg")"; fi

sleep 1
touch "$TMP/stamp"
check "a second make" pipe ARCH_RATIOS=0.5 all
if [ -z "$(find "$O" -newer "$TMP/stamp" -type f)" ]
then pass "a second make changes no file"
else fail "a second make rewrote" "$(find "$O" -newer "$TMP/stamp" -type f | head)"; fi

check "another budget" pipe ARCH_RATIOS=1 all
new=$(find "$O" -newer "$TMP/stamp" -type f | sed "s|$O/||" | sort -r | tr '\n' ' ')
case $new in
*cand/* | *tokens.h5* | *measure/*) fail "another budget re-ran a stage it shares" "$new" ;;
*ruler.h5*logits/1-s1.h5*arch/dash-1.lm.txt*) pass "another budget: search, derive and eval-lm only (candidates reused)" ;;
*) fail "another budget made" "$new" ;;
esac
if awk -F '\t' '$1 == "dash-1" { ok = $2 < 1e-4 } END { exit !ok }' "$O/arch/table.txt"
then pass "every layer fa: the hybrid is the teacher (KL 0)"
else fail "all-fa KL" "$(cat "$O/arch/table.txt")"; fi

# plot-search's bad input
check_error "plot-search: a candidate file is no logits file" 1 "expected dash-logits" "$TMP/x.svg" \
	bin/plot-search -o "$TMP/x.svg" "$O/cand/L00.h5"
bin/derive -n 1 -L 3 --method uniform -o "$TMP/a3.h5" >/dev/null
check_error "plot-search: a layout of 3 layers beside a 2-layer search" 1 "a3.h5" "$TMP/x.svg" \
	bin/plot-search -o "$TMP/x.svg" "$O/logits/0.5-s1.h5" "$TMP/a3.h5"
