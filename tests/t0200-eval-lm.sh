#!/bin/sh
# eval-lm end to end on the tiny fixtures: loss against transformers, logits
# dumps, tokens.h5 input, and every kind of bad input.
. "$(dirname "$0")/lib.sh"
Q=tests/data/tiny-qwen2 LL=tests/data/tiny-llama EVAL=bin/eval-lm

ref_loss() { # the transformers loss stored by make_tiny_ref.py
	h5dump -a /loss "$1" | awk '/\(0\)/ { print $2 }'
}

for m in tiny-qwen2 tiny-llama; do
	got=$($EVAL -m tests/data/$m --ids tests/data/$m.ids.txt 2>"$TMP/err" | awk '{ print $2 }')
	want=$(ref_loss tests/data/$m.ref.h5)
	if [ -n "$got" ] && close_to "$got" "$want" 1e-4; then pass "$m: loss $got equals transformers' $want"
	else fail "$m: loss '$got' differs from transformers' '$want'" "$(cat "$TMP/err")"; fi
done

check "--dump-logits writes the logits" $EVAL -m $Q --ids $Q.ids.txt --dump-logits "$TMP/logits.h5"
if h5ls "$TMP/logits.h5/logits" 2>/dev/null | grep -q '{19, 512}'; then pass "/logits is float32 [T, V] = {19, 512}"
else fail "/logits has the wrong shape" "$(h5ls -r "$TMP/logits.h5" 2>&1)"; fi
if h5dump -a /format "$TMP/logits.h5" | grep -q '"dash-logits"' &&
   h5dump -a /teacher_fingerprint "$TMP/logits.h5" | grep -q '"[0-9a-f]\{16\}"'; then
	pass "the logits file carries its format and the teacher's fingerprint"
else fail "provenance attributes missing" "$(h5dump -A "$TMP/logits.h5" | head -40)"; fi

# tokens.h5 input gives the same loss as the ids it holds
tests/bin/mktokens "$TMP/tok.h5" <$Q.ids.txt
a=$($EVAL -m $Q --ids $Q.ids.txt 2>/dev/null)
b=$($EVAL -m $Q --tokens "$TMP/tok.h5" --seq 19 2>/dev/null)
if [ -n "$a" ] && [ "$a" = "$b" ]; then pass "--tokens gives what --ids gives"
else fail "--tokens '$b' differs from --ids '$a'"; fi

# --seq splits into independent sequences: the loss is the mean of theirs
h5dump -d /ids -y -w 0 $Q.ref.h5 | awk '/DATA/ { on = 1; next } on && /}/ { on = 0 } on' | tr -d ',' |
	tr -s ' \n' ' ' >"$TMP/both.txt"
awk '{ for (i = 1; i <= 19; i++) printf "%s ", $i; print "" }' "$TMP/both.txt" >"$TMP/s0.txt"
awk '{ for (i = 20; i <= 38; i++) printf "%s ", $i; print "" }' "$TMP/both.txt" >"$TMP/s1.txt"
l0=$($EVAL -m $Q --ids "$TMP/s0.txt" 2>/dev/null | awk '{ print $2 }')
l1=$($EVAL -m $Q --ids "$TMP/s1.txt" 2>/dev/null | awk '{ print $2 }')
lb=$($EVAL -m $Q --ids "$TMP/both.txt" --seq 19 2>/dev/null | awk '{ print $2 }')
mean=$(awk -v a="$l0" -v b="$l1" 'BEGIN { printf "%.6f", (a + b) / 2 }')
if [ -n "$lb" ] && [ -n "$l0" ] && close_to "$lb" "$mean" 2e-6; then pass "--seq 19 over 38 ids: loss $lb is the mean of both halves"
else fail "--seq 19 over 38 ids: loss '$lb', halves '$l0' '$l1'"; fi
n=$($EVAL -m $Q --ids "$TMP/both.txt" -n 19 2>/dev/null | awk '{ print $2 }')
if [ "$n" = "$l0" ]; then pass "-n 19 evaluates the first 19 ids only"; else fail "-n 19 gave '$n', want '$l0'"; fi

# ---- bad input: exit 1, one line naming the file, no output left behind
OUT=$TMP/bad.h5
broken() { rm -rf "$TMP/m" && cp -r "$1" "$TMP/m"; }
u64le() { for i in 0 1 2 3 4 5 6 7; do printf "\\$(printf %03o $(( ($1 >> (8 * i)) & 255 )))"; done; }

broken $Q; truncate -s 100000 "$TMP/m/model.safetensors"
check_error "truncated safetensors" 1 "'$TMP/m/model.safetensors'" $OUT $EVAL -m "$TMP/m" --ids $Q.ids.txt --dump-logits $OUT

broken $Q; { u64le 1000000; printf '{"x":1}'; } >"$TMP/m/model.safetensors"
check_error "safetensors header longer than the file" 1 "'$TMP/m/model.safetensors'" $OUT $EVAL -m "$TMP/m" --ids $Q.ids.txt --dump-logits $OUT

broken $Q; h='{"model.norm.weight":{"dtype":"BF16","shape":[64],"data_offsets":[0,128]},"model.embed_tokens.weight":{"dtype":"BF16","shape":[512,64],"data_offsets":[128,65664]}}'
{ u64le ${#h}; printf '%s' "$h"; head -c 1000 /dev/zero; } >"$TMP/m/model.safetensors"
check_error "safetensors offsets that overrun the file" 1 "'$TMP/m/model.safetensors'" $OUT $EVAL -m "$TMP/m" --ids $Q.ids.txt --dump-logits $OUT

broken $Q; perl -0777 -pi -e 's/"dtype":"BF16"/"dtype":"Q9_9"/' "$TMP/m/model.safetensors"
check_error "a tensor of unknown dtype" 1 "'$TMP/m/model.safetensors'" $OUT $EVAL -m "$TMP/m" --ids $Q.ids.txt --dump-logits $OUT

broken $Q; perl -0777 -pi -e 's/"model\.norm\.weight"/"model.xorm.weight"/' "$TMP/m/model.safetensors"
check_error "a missing tensor" 1 "'model.norm.weight'" $OUT $EVAL -m "$TMP/m" --ids $Q.ids.txt --dump-logits $OUT
grep -q "'$TMP/m/model.safetensors'" "$TMP/err" && pass "... the error names the checkpoint file" || fail "missing tensor error lacks the file" "$(cat "$TMP/err")"

broken $Q; perl -0777 -pi -e 's/"shape":\[64\]/"shape":[32]/' "$TMP/m/model.safetensors"
check_error "a tensor whose bytes disagree with its shape" 1 "'$TMP/m/model.safetensors'" $OUT $EVAL -m "$TMP/m" --ids $Q.ids.txt --dump-logits $OUT

broken $LL; rm "$TMP/m/model-00003-of-00007.safetensors"
check_error "a missing shard" 1 "model-00003-of-00007.safetensors'" $OUT $EVAL -m "$TMP/m" --ids $LL.ids.txt --dump-logits $OUT

broken $LL; perl -pi -e 's/model-00004-of-00007/model-00005-of-00007/ if /layers\.1\.mlp\.gate/' "$TMP/m/model.safetensors.index.json"
check_error "an index that points at the wrong shard" 1 "'$TMP/m/model.safetensors.index.json'" $OUT $EVAL -m "$TMP/m" --ids $LL.ids.txt --dump-logits $OUT

broken $Q; printf '{"model_type": "qwen2",\n "hidden_size": 64,\n' >"$TMP/m/config.json"
check_error "a config.json that is not JSON" 1 "'$TMP/m/config.json'" $OUT $EVAL -m "$TMP/m" --ids $Q.ids.txt --dump-logits $OUT

broken $Q; sed -i '/"hidden_size"/d' "$TMP/m/config.json"
check_error "a config.json that lacks hidden_size" 1 "missing field 'hidden_size' in '$TMP/m/config.json'" $OUT $EVAL -m "$TMP/m" --ids $Q.ids.txt --dump-logits $OUT

broken $Q; sed -i 's/"num_key_value_heads": 2/"num_key_value_heads": 3/' "$TMP/m/config.json"
check_error "a config.json whose sizes do not divide" 1 "'$TMP/m/config.json'" $OUT $EVAL -m "$TMP/m" --ids $Q.ids.txt --dump-logits $OUT

broken $Q; sed -i 's/"intermediate_size": 160/"intermediate_size": 128/' "$TMP/m/config.json"
check_error "a config.json that disagrees with the tensors" 1 "'$TMP/m/model.safetensors'" $OUT $EVAL -m "$TMP/m" --ids $Q.ids.txt --dump-logits $OUT

check_error "a model folder that does not exist" 1 "'$TMP/nope'" $OUT $EVAL -m "$TMP/nope" --ids $Q.ids.txt --dump-logits $OUT

echo "1 2 3 512 4" >"$TMP/ids.txt"
check_error "a token id >= vocab" 1 "'$TMP/ids.txt'" $OUT $EVAL -m $Q --ids "$TMP/ids.txt" --dump-logits $OUT
echo "1 2 3 512 4" | tests/bin/mktokens "$TMP/big.h5"
check_error "a tokens.h5 id >= vocab" 1 "'$TMP/big.h5'" $OUT $EVAL -m $Q --tokens "$TMP/big.h5" --dump-logits $OUT
echo "1 2 x3 4" >"$TMP/ids.txt"
check_error "a token id that is not a number" 1 "'$TMP/ids.txt'" $OUT $EVAL -m $Q --ids "$TMP/ids.txt" --dump-logits $OUT
: >"$TMP/ids.txt"
check_error "no token ids at all" 1 "'$TMP/ids.txt'" $OUT $EVAL -m $Q --ids "$TMP/ids.txt" --dump-logits $OUT
check_error "an ids file that does not exist" 1 "'$TMP/none.txt'" $OUT $EVAL -m $Q --ids "$TMP/none.txt" --dump-logits $OUT
check_error "a tokens file of another format" 1 "'$Q.ref.h5'" $OUT $EVAL -m $Q --tokens $Q.ref.h5 --dump-logits $OUT
check_error "a tokens file that is not HDF5" 1 "'$Q.ids.txt'" $OUT $EVAL -m $Q --tokens $Q.ids.txt --dump-logits $OUT
check_error "a bad --seq value" 1 "'abc'" $OUT $EVAL -m $Q --ids $Q.ids.txt --seq abc --dump-logits $OUT
check_error "a bad --device" 1 "'tpu'" $OUT $EVAL -m $Q --ids $Q.ids.txt --device tpu --dump-logits $OUT
a=$($EVAL -m $Q --ids $Q.ids.txt --device cpu 2>/dev/null)
[ "$a" = "$($EVAL -m $Q --ids $Q.ids.txt 2>/dev/null)" ] || [ -e /dev/nvidia0 ] &&
	pass "--device cpu is the default without a GPU" || fail "--device cpu differs from the default"

# ---- usage: exit 2 with the synopsis
check_usage "no arguments: usage, exit 2" $EVAL
check_usage "an unknown flag: usage, exit 2" $EVAL -m $Q --ids $Q.ids.txt --bogus
check_usage "both --ids and --tokens: usage, exit 2" $EVAL -m $Q --ids a --tokens b
check_usage "an extra operand: usage, exit 2" $EVAL -m $Q --ids $Q.ids.txt extra
