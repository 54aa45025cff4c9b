#!/bin/sh
# GGUF teachers end to end: eval-lm and tokenize on tiny GGUF files (every
# supported tensor type; fixtures from tests/make_gguf_ref.py), generation,
# and damaged files.
. "$(dirname "$0")/lib.sh"
G=tests/data/gguf

for m in qwen2 llama; do
	f=$G/tiny-$m.gguf
	got=$(bin/eval-lm -m $f --ids $f.ids.txt 2>"$TMP/err" | awk '{ print $2 }')
	want=$(h5dump -a /loss $f.ref.h5 | awk '/\(0\)/ { print $2 }')
	if [ -n "$got" ] && close_to "$got" "$want" 1e-4; then pass "tiny-$m.gguf: loss $got equals transformers' $want"
	else fail "tiny-$m.gguf: loss '$got' differs from transformers' '$want'" "$(cat "$TMP/err")"; fi
done

got=$(printf 'the world' | bin/tokenize -t $G/tiny-qwen2.gguf --ids 2>/dev/null | tr '\n' ' ')
[ "$got" = "116 257 275 " ] && pass "tokenize -t model.gguf uses the GGUF's own tokenizer" || fail "tokenize with a GGUF gave '$got'"

bin/eval-lm -m $G/tiny-qwen2.gguf --generate "the world" --max-new 5 >"$TMP/gen" 2>"$TMP/err"
st=$?
words=$(wc -c <"$TMP/gen")
[ $st -eq 0 ] && [ "$words" -gt 1 ] && grep -q "prompt of .* tokens (chat template)" "$TMP/err" &&
	pass "--generate decodes greedily behind the chat template" || fail "--generate" "exit $st" "$(cat "$TMP/err")"
bin/eval-lm -m $G/tiny-qwen2.gguf --generate "the world" --max-new 5 >"$TMP/gen2" 2>/dev/null
cmp -s "$TMP/gen" "$TMP/gen2" && pass "--generate is deterministic" || fail "--generate differs between runs"

# ---- damaged files: exit 1, one line naming the file
OUT=$TMP/bad.h5
patch_tensor() { # FILE TENSOR WHAT VALUE: rewrite the type or the 2nd dimension of a tensor's info
	perl -e '
		my ($f, $n, $what, $v) = @ARGV;
		open my $h, "+<", $f or die; binmode $h; local $/; my $d = <$h>;
		my $i = index($d, $n); die "no $n" if $i < 0;
		my $p = $i + length($n); my $nd = unpack("V", substr($d, $p, 4));
		if ($what eq "type") { substr($d, $p + 4 + 8 * $nd, 4) = pack("V", $v) }
		else { substr($d, $p + 4 + 8, 8) = pack("VV", $v, 0) }
		seek $h, 0, 0; print $h $d; close $h' "$@"
}
cp $G/tiny-qwen2.gguf "$TMP/t.gguf"; truncate -s 600000 "$TMP/t.gguf"
check_error "a truncated .gguf" 1 "'$TMP/t.gguf'" $OUT bin/eval-lm -m "$TMP/t.gguf" --ids $G/tiny-qwen2.gguf.ids.txt --dump-logits $OUT
head -c 5000 $G/tiny-qwen2.gguf >"$TMP/t.gguf"
check_error "a .gguf cut inside its header" 1 "'$TMP/t.gguf'" $OUT bin/eval-lm -m "$TMP/t.gguf" --ids $G/tiny-qwen2.gguf.ids.txt --dump-logits $OUT
cp $G/tiny-qwen2.gguf "$TMP/t.gguf"; patch_tensor "$TMP/t.gguf" blk.0.attn_q.weight type 16
check_error "an unsupported quantisation (IQ2_XXS)" 1 "'$TMP/t.gguf'" $OUT bin/eval-lm -m "$TMP/t.gguf" --ids $G/tiny-qwen2.gguf.ids.txt --dump-logits $OUT
grep -q "IQ2_XXS" "$TMP/err" && pass "... the error names the type" || fail "the error does not name IQ2_XXS" "$(cat "$TMP/err")"
cp $G/tiny-qwen2.gguf "$TMP/t.gguf"; patch_tensor "$TMP/t.gguf" blk.0.attn_q.weight type 77
check_error "an unknown quantisation type number" 1 "'$TMP/t.gguf'" $OUT bin/eval-lm -m "$TMP/t.gguf" --ids $G/tiny-qwen2.gguf.ids.txt --dump-logits $OUT
cp $G/tiny-qwen2.gguf "$TMP/t.gguf"; patch_tensor "$TMP/t.gguf" blk.1.ffn_up.weight dim 384
check_error "a tensor whose shape disagrees with the metadata" 1 "'$TMP/t.gguf'" $OUT bin/eval-lm -m "$TMP/t.gguf" --ids $G/tiny-qwen2.gguf.ids.txt --dump-logits $OUT
cp $G/tiny-qwen2.gguf "$TMP/t.gguf"; patch_tensor "$TMP/t.gguf" output.weight dim 100000
check_error "a tensor too large for the file" 1 "'$TMP/t.gguf'" $OUT bin/eval-lm -m "$TMP/t.gguf" --ids $G/tiny-qwen2.gguf.ids.txt --dump-logits $OUT
cp $G/tiny-qwen2.gguf "$TMP/t.gguf"; perl -0777 -pi -e 's/qwen2\.block_count/qwen2.block_cousin/' "$TMP/t.gguf"
check_error "a .gguf without block_count" 1 "'$TMP/t.gguf'" $OUT bin/eval-lm -m "$TMP/t.gguf" --ids $G/tiny-qwen2.gguf.ids.txt --dump-logits $OUT
printf 'GGUF\001\000\000\000' >"$TMP/v1.gguf"; head -c 100 /dev/zero >>"$TMP/v1.gguf"
check_error "a GGUF version 1 file" 1 "'$TMP/v1.gguf'" $OUT bin/eval-lm -m "$TMP/v1.gguf" --ids $G/tiny-qwen2.gguf.ids.txt --dump-logits $OUT
cp $G/tiny-qwen2.gguf "$TMP/t.gguf"; truncate -s 600000 "$TMP/t.gguf"
check_error "tokenize with a truncated .gguf" 1 "'$TMP/t.gguf'" "$TMP/tok.h5" bin/tokenize -t "$TMP/t.gguf" -o "$TMP/tok.h5" tests/data/tok/mixed.txt
