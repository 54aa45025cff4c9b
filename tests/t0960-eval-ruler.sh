#!/bin/sh
# eval-ruler on the tiny Qwen2 GGUF fixture (its own ChatML byte tokenizer)
# and hybrids of it: the table's shape, the file's contents, predictions
# that do not depend on the batch, an all-fa hybrid answering exactly as the
# teacher, the decode state of each model, and bad input.
. "$(dirname "$0")/lib.sh"
Q=tests/data/gguf/tiny-qwen2.gguf
R="bin/eval-ruler -m $Q --lengths 512 --samples 3 --tasks niah_single_1,vt,fwe --window 16 --device cpu"
export OMP_NUM_THREADS=1
bin/derive -n 2 -m $Q --method uniform -o "$TMP/fa.h5" >/dev/null
bin/derive -n 0 -m $Q --method uniform --linear swa -o "$TMP/swa.h5" >/dev/null

check "eval-ruler: teacher, an all-fa and an all-swa hybrid" $R --arch "$TMP/fa.h5" --arch "$TMP/swa.h5" \
	--batch 2 -o "$TMP/a.h5"
cp "$TMP/out" "$TMP/a.tab"
if awk -F '\t' 'NR == 1 { ok = $1 == "RULER 512" && $2 == "teacher" && $3 == "fa" && $4 == "swa" && NF == 4; next }
	{ n++; row[$1] = 1; if (NF != 4) ok = 0 }
	END { exit !(ok && n == 5 && row["niah_single_1"] && row["vt"] && row["fwe"] && row["average"] && row["decode_MiB"]) }' \
	"$TMP/a.tab"
then pass "the table: a row a task, the average and the decode state; a column a model"
else fail "table" "$(cat "$TMP/a.tab")"; fi
# decode state at 512 tokens: fa 2 layers x 2 (k, v) x 512 x G 2 x D 64 x 2 bytes = 0.5 MiB;
# swa a ring of 16 positions: 1/32 of that
if awk -F '\t' '$1 == "decode_MiB" { exit !($2 == "0.5" && $3 == "0.5" && $4 == "0.0") }' "$TMP/a.tab"
then pass "decode state: the teacher's KV cache, the same for all-fa, a ring for swa"
else fail "decode state" "$(grep decode "$TMP/a.tab")"; fi
# d NAME FILE: the strings of a list in ruler.h5, one a line
d() { tests/bin/h5strings "$2" "$1" || echo "h5strings failed on $2 $1"; }
if [ "$(d /512/vt/teacher/predictions "$TMP/a.h5")" = "$(d /512/vt/fa/predictions "$TMP/a.h5")" ] &&
	[ "$(d /512/fwe/teacher/predictions "$TMP/a.h5")" = "$(d /512/fwe/fa/predictions "$TMP/a.h5")" ]
then pass "an all-fa hybrid answers as the teacher"
else fail "all-fa vs teacher predictions differ"; fi
if h5dump -a /models "$TMP/a.h5" | grep -q '"teacher,fa,swa"' && h5dump -H -d /score "$TMP/a.h5" | grep -q '( 1, 3, 3 )' &&
	[ "$(d /512/vt/prompts "$TMP/a.h5" | wc -l)" -eq 3 ] && [ "$(d /512/vt/swa/predictions "$TMP/a.h5" | wc -l)" -eq 3 ] &&
	d /512/vt/prompts "$TMP/a.h5" | head -n 1 | grep -q "<|im_start|>user.*VAR [A-Z]\{5\} = [0-9]\{5\}"
then pass "ruler.h5: models, /score (lengths, tasks, models), 3 prompts a task"
else fail "ruler.h5 layout" "$(h5dump -H "$TMP/a.h5" | head -40)"; fi

# the prompts' ids: 3 lists, their last ids those of the template's answer prefix; each task's limit
if h5dump -d /512/vt/prompt_ids/offsets "$TMP/a.h5" | grep -q '( 4 )' &&
	h5dump -a /512/vt/tokens_to_generate "$TMP/a.h5" | grep -q '(0): 30' &&
	h5dump -a /512/niah_single_1/tokens_to_generate "$TMP/a.h5" | grep -q '(0): 128' &&
	h5dump -a /stop_ids "$TMP/a.h5" | grep -q '"[0-9][0-9,]*"' && h5dump -a /device "$TMP/a.h5" | grep -q '"cpu"'
then pass "ruler.h5: the prompts' ids, each task's token limit, the stop ids, the device"
else fail "ruler.h5: prompt_ids, tokens_to_generate, stop_ids or device" "$(h5dump -A "$TMP/a.h5" | head -60)"; fi

check "the same in batches of 1" $R --batch 1 -o "$TMP/b.h5"
if [ "$(d /512/niah_single_1/teacher/predictions "$TMP/a.h5")" = \
	"$(d /512/niah_single_1/teacher/predictions "$TMP/b.h5")" ] &&
	[ "$(d /512/vt/prompts "$TMP/a.h5")" = "$(d /512/vt/prompts "$TMP/b.h5")" ]
then pass "the same prompts and predictions in batches of 1 and of 2"
else fail "batch changes the predictions"; fi
check "another seed" $R --seed 7 --tasks vt -o "$TMP/c.h5"
if [ "$(d /512/vt/prompts "$TMP/a.h5")" != "$(d /512/vt/prompts "$TMP/c.h5")" ]
then pass "another seed, other prompts"
else fail "the seed changes nothing"; fi

check_error "an unknown task" 1 "no RULER task 'niah_single_9'" "$TMP/x.h5" $R --tasks niah_single_9 -o "$TMP/x.h5"
check_error "qa_1 is not run here" 1 "qa_1" "$TMP/x.h5" $R --tasks qa_1 -o "$TMP/x.h5"
check_error "a hybrid of another teacher" 1 "fingerprint" "$TMP/x.h5" \
	bin/eval-ruler -m tests/data/gguf/tiny-llama.gguf --arch "$TMP/fa.h5" --lengths 512 --samples 1 -o "$TMP/x.h5"
check_error "a missing haystack" 1 "nothere.txt" "$TMP/x.h5" $R --haystack "$TMP/nothere.txt" -o "$TMP/x.h5"
check_usage "no model" bin/eval-ruler --samples 2
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
	check_error "--device cuda without a GPU" 1 "--device cuda" "$TMP/x.h5" $R --device cuda -o "$TMP/x.h5"
fi
check_error "--kv f32 on the GPU" 1 "kv" "$TMP/x.h5" $R --device cuda --kv f32 -o "$TMP/x.h5"
