#!/bin/sh
# tokenize end to end: exact ids against Hugging Face tokenizers (fixtures in
# tests/data/tok, made by tests/make_tok_ref.py), decoding, tokens.h5, threads,
# and every kind of bad input.
. "$(dirname "$0")/lib.sh"
TOK=data/qwen2.5/tokenizer.json D=tests/data/tok
TKZ="bin/tokenize -t $TOK"

got=$(printf 'Hello, world!' | $TKZ --ids 2>/dev/null | tr '\n' ' ')
[ "$got" = "9707 11 1879 0 " ] && pass "\"Hello, world!\" is 9707 11 1879 0" || fail "\"Hello, world!\" gave '$got'"

for f in mixed invalid; do
	$TKZ --ids <$D/$f.txt >"$TMP/$f.ids" 2>"$TMP/err"
	if cmp -s "$TMP/$f.ids" $D/$f.ids; then pass "$f.txt: the ids tokenizers gives ($(wc -l <$D/$f.ids) ids)"
	else fail "$f.txt differs from tokenizers" "$(diff "$TMP/$f.ids" $D/$f.ids | head -10)"; fi
done

for c in sotu moby-dick; do
	set -- $(grep "^$c " $D/corpora.txt)
	$TKZ --ids data/text/$c.jsonl.zst >"$TMP/$c.ids" 2>"$TMP/err"
	sum=$(sha256sum <"$TMP/$c.ids" | cut -d' ' -f1)
	if [ "$sum" = "$2" ]; then pass "$c: all $3 ids equal tokenizers'"
	else
		# which document differs first
		awk -v want="$D/corpora-counts.txt" -v c=$c 'BEGIN { while ((getline l < want) > 0) { split(l, a, " "); if (a[1] == c) n[a[2]] = a[3] } }
			$1 == 151643 { if (k != n[d]) { print "document " d ": " k " ids, tokenizers " n[d]; exit } d++; k = 0; next } { k++ }' "$TMP/$c.ids" >"$TMP/where"
		fail "$c: ids differ from tokenizers'" "$(cat "$TMP/where")"
	fi
done

$TKZ --decode $D/mixed.ids >"$TMP/mixed.dec" 2>"$TMP/err"
cmp -s "$TMP/mixed.dec" $D/mixed.decoded && pass "--decode gives tokenizers' decode of mixed.ids" || fail "--decode of mixed.ids differs" "$(cmp "$TMP/mixed.dec" $D/mixed.decoded)"
printf 'Plain text.\n\n  It round-trips \xe2\x80\x94 exactly.\t\n' >"$TMP/plain.txt"
$TKZ --ids "$TMP/plain.txt" 2>/dev/null | $TKZ --decode >"$TMP/plain.dec" 2>"$TMP/err"
cmp -s "$TMP/plain.txt" "$TMP/plain.dec" && pass "--ids then --decode returns the original bytes" || fail "round trip" "$(cat "$TMP/err")"

# tokens.h5: documents, each followed by EOS, and provenance
check "tokenize -o writes tokens.h5" $TKZ -o "$TMP/t.h5" data/text/moby-dick.jsonl.zst "$TMP/plain.txt"
n=$(h5ls "$TMP/t.h5/tokens" | sed 's/.*{\([0-9]*\)}.*/\1/')
nd=$(h5ls "$TMP/t.h5/doc_offsets" | sed 's/.*{\([0-9]*\)}.*/\1/')
# moby-dick's 587190 ids include the 139 EOS between its documents
want=$((587190 + 1 + $($TKZ --ids "$TMP/plain.txt" 2>/dev/null | wc -l) + 1))
[ "$n" = "$want" ] && [ "$nd" = 142 ] && pass "tokens.h5 holds $n ids of 141 documents, EOS after each" || fail "tokens.h5 has $n ids, $nd offsets; want $want, 142"
h5dump -A "$TMP/t.h5" >"$TMP/attrs"
grep -q '"dash-tokens"' "$TMP/attrs" && grep -q 'tokenizer_fingerprint' "$TMP/attrs" && h5dump -a /eos_id "$TMP/t.h5" | grep -q '(0): 151643' &&
	pass "tokens.h5 carries format, tokenizer fingerprint and eos_id" || fail "tokens.h5 attributes" "$(head -30 "$TMP/attrs")"

# threads change nothing
a=$($TKZ --ids -j 1 data/text/sotu.jsonl.zst 2>/dev/null | sha256sum)
b=$($TKZ --ids -j 2 data/text/sotu.jsonl.zst 2>/dev/null | sha256sum)
[ "$a" = "$b" ] && pass "-j 1 and -j 2 give the same ids" || fail "-j 1 and -j 2 differ"

# input forms
printf '{"text": "Hello, world!"}\n\n{"text": "Hello"}\n' >"$TMP/a.jsonl"
got=$($TKZ --ids "$TMP/a.jsonl" 2>/dev/null | tr '\n' ' ')
[ "$got" = "9707 11 1879 0 151643 9707 " ] && pass ".jsonl: one document a line, EOS between" || fail ".jsonl gave '$got'"
got=$(printf '{"body": "Hello"}\n' | $TKZ --ids --jsonl --field body 2>/dev/null | tr '\n' ' ')
[ "$got" = "9707 " ] && pass "--jsonl --field reads another field from stdin" || fail "--field gave '$got'"
got=$($TKZ --ids --eos '<|im_end|>' "$TMP/a.jsonl" 2>/dev/null | tr '\n' ' ')
[ "$got" = "9707 11 1879 0 151645 9707 " ] && pass "--eos picks the separator" || fail "--eos gave '$got'"
zstd -q -c "$TMP/plain.txt" >"$TMP/plain.txt.zst"
a=$($TKZ --ids "$TMP/plain.txt" 2>/dev/null); b=$($TKZ --ids "$TMP/plain.txt.zst" 2>/dev/null)
[ -n "$a" ] && [ "$a" = "$b" ] && pass ".txt.zst reads as the .txt" || fail ".txt.zst differs"

# ---- bad input: exit 1, one line naming the file, no tokens.h5
OUT=$TMP/bad.h5
check_error "a missing tokenizer" 1 "'$TMP/none.json'" $OUT bin/tokenize -t "$TMP/none.json" -o $OUT "$TMP/plain.txt"
head -c 100000 $TOK >"$TMP/trunc.json"
check_error "a truncated tokenizer.json" 1 "'$TMP/trunc.json'" $OUT bin/tokenize -t "$TMP/trunc.json" -o $OUT "$TMP/plain.txt"
echo '{"model": {"type": "WordPiece", "vocab": {}}}' >"$TMP/wp.json"
check_error "a tokenizer that is not BPE" 1 "'$TMP/wp.json'" $OUT bin/tokenize -t "$TMP/wp.json" -o $OUT "$TMP/plain.txt"
echo '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}' >"$TMP/nb.json"
check_error "a tokenizer that is not byte-level" 1 "'$TMP/nb.json'" $OUT bin/tokenize -t "$TMP/nb.json" -o $OUT "$TMP/plain.txt"
sed 's/"type":"NFC"/"type":"Lowercase"/; s/"type": "NFC"/"type": "Lowercase"/' $TOK >"$TMP/lc.json"
check_error "a tokenizer with an unsupported normalizer" 1 "'$TMP/lc.json'" $OUT bin/tokenize -t "$TMP/lc.json" -o $OUT "$TMP/plain.txt"
check_error "an input that does not exist" 1 "'$TMP/nofile.txt'" $OUT $TKZ -o $OUT "$TMP/plain.txt" "$TMP/nofile.txt"
check_error "an input that is a directory" 1 "'$TMP'" $OUT $TKZ -o $OUT "$TMP"
head -c 3000 /dev/urandom >"$TMP/junk.zst"
check_error "a corrupt .zst" 1 "'$TMP/junk.zst'" $OUT $TKZ -o $OUT "$TMP/junk.zst"
head -c 100000 data/text/moby-dick.jsonl.zst >"$TMP/cut.jsonl.zst"
check_error "a truncated .zst" 1 "'$TMP/cut.jsonl.zst'" $OUT $TKZ -o $OUT "$TMP/cut.jsonl.zst"
printf '{"text": "ok"}\n{"text": broken}\n' >"$TMP/bad.jsonl"
check_error "a .jsonl line that is not JSON" 1 "line 2 of '$TMP/bad.jsonl'" $OUT $TKZ -o $OUT "$TMP/bad.jsonl"
printf '{"text": "ok"}\n{"title": "no text"}\n' >"$TMP/nofield.jsonl"
check_error "a .jsonl line without the field" 1 "line 2 of '$TMP/nofield.jsonl'" $OUT $TKZ -o $OUT "$TMP/nofield.jsonl"
check_error "an unknown --eos token" 1 "'<|nope|>'" $OUT $TKZ --eos '<|nope|>' -o $OUT "$TMP/plain.txt"
echo "9707 999999" >"$TMP/big.ids"
check_error "--decode of an id out of range" 1 "'$TMP/big.ids'" - $TKZ --decode "$TMP/big.ids"
echo "9707 x" >"$TMP/nan.ids"
check_error "--decode of something not an id" 1 "'$TMP/nan.ids'" - $TKZ --decode "$TMP/nan.ids"

check_usage "no tokenizer: usage, exit 2" bin/tokenize --ids
check_usage "both -o and --ids: usage, exit 2" $TKZ -o x.h5 --ids
check_usage "an unknown flag: usage, exit 2" $TKZ --frobnicate
