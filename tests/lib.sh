# tests/lib.sh: helpers for the end-to-end shell tests (after git's t/).
# Each check prints "PASS: what" or "FAIL: what"; tests/run counts them.
set -u
cd "$(dirname "$0")/.." || exit 1
TMP=tests/tmp/$(basename "$0" .sh)
rm -rf "$TMP" && mkdir -p "$TMP"

pass() { echo "PASS: $1"; }
fail() { echo "FAIL: $1"; shift; for l in "$@"; do echo "  $l"; done; }
skip() { echo "SKIP: $1"; }

# check WHAT CMD...: passes when CMD succeeds
check() {
	what=$1; shift
	if "$@" >"$TMP/out" 2>"$TMP/err"; then pass "$what"
	else fail "$what" "command: $*" "stderr: $(head -c 500 "$TMP/err")"; fi
}

# check_error WHAT STATUS PATTERN OUTFILE CMD...: passes when CMD exits with
# STATUS, prints exactly one line on stderr that contains PATTERN, and leaves
# neither OUTFILE nor OUTFILE.tmp behind (OUTFILE may be -)
check_error() {
	what=$1 want=$2 pat=$3 outf=$4; shift 4
	"$@" >"$TMP/out" 2>"$TMP/err"
	st=$?
	lines=$(wc -l <"$TMP/err")
	if [ "$st" -ne "$want" ]; then fail "$what" "exit $st, expected $want" "stderr: $(cat "$TMP/err")"
	elif [ "$lines" -ne 1 ]; then fail "$what" "$lines lines on stderr, expected 1:" "$(cat "$TMP/err")"
	elif ! grep -qF -- "$pat" "$TMP/err"; then fail "$what" "stderr lacks '$pat':" "$(cat "$TMP/err")"
	elif [ "$outf" != - ] && { [ -e "$outf" ] || [ -e "$outf.tmp" ]; }; then fail "$what" "left $outf behind"
	else pass "$what"; fi
}

# close_to A B TOL: |A - B| <= TOL
close_to() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= t) }'; }

# check_usage WHAT CMD...: passes when CMD exits 2 and prints its usage
check_usage() {
	what=$1; shift
	"$@" >"$TMP/out" 2>"$TMP/err"
	st=$?
	if [ "$st" -eq 2 ] && grep -q "^usage: " "$TMP/err"; then pass "$what"
	else fail "$what" "exit $st, expected 2 with usage" "$(cat "$TMP/err")"; fi
}

# mkmodel DIR: a random Qwen2 checkpoint of head dim 64, which the GPU
# kernels take (the safetensors fixtures have 16 and 24) (L 4, C 256, H 4, G
# 2, F 256, V 512, tied, bf16), as model_init_random scales its weights
mkmodel() {
	mkdir -p "$1" && cat >"$1/config.json" <<'EOF'
{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 256, "intermediate_size": 256,
 "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
 "max_position_embeddings": 4096, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "hidden_act": "silu",
 "tie_word_embeddings": true, "torch_dtype": "bfloat16"}
EOF
	perl -e '
	my ($L, $C, $HD, $GD, $F, $V) = (4, 256, 256, 128, 256, 512);
	my ($hdr, $data, $off) = ("", "", 0);
	srand(7);
	sub t { # name, center, scale, shape...: uniform bf16 in center +- scale
		my ($name, $c, $s, @shape) = @_;
		my $n = 1; $n *= $_ for @shape;
		my $b = pack("v*", map { my $f = unpack("V", pack("f<", $c + $s * (2 * rand() - 1)));
			($f + 0x7fff + (($f >> 16) & 1)) >> 16 } 1 .. $n);
		$hdr .= ($hdr eq "" ? "" : ",") . sprintf("\"%s\":{\"dtype\":\"BF16\",\"shape\":[%s],\"data_offsets\":[%d,%d]}",
			$name, join(",", @shape), $off, $off + length $b);
		$data .= $b, $off += length $b;
	}
	t("model.embed_tokens.weight", 0, 0.2, $V, $C);
	t("model.norm.weight", 1, 0.1, $C);
	for my $l (0 .. $L - 1) {
		my $p = "model.layers.$l.";
		t($p . "input_layernorm.weight", 1, 0.1, $C), t($p . "post_attention_layernorm.weight", 1, 0.1, $C);
		t($p . "self_attn.q_proj.weight", 0, 1.7 / sqrt($C), $HD, $C), t($p . "self_attn.q_proj.bias", 0, 0.1, $HD);
		t($p . "self_attn.k_proj.weight", 0, 1.7 / sqrt($C), $GD, $C), t($p . "self_attn.k_proj.bias", 0, 0.1, $GD);
		t($p . "self_attn.v_proj.weight", 0, 1.7 / sqrt($C), $GD, $C), t($p . "self_attn.v_proj.bias", 0, 0.1, $GD);
		t($p . "self_attn.o_proj.weight", 0, 1.7 / sqrt($HD), $C, $HD);
		t($p . "mlp.gate_proj.weight", 0, 1.7 / sqrt($C), $F, $C), t($p . "mlp.up_proj.weight", 0, 1.7 / sqrt($C), $F, $C);
		t($p . "mlp.down_proj.weight", 0, 1.7 / sqrt($F), $C, $F);
	}
	$hdr = "{" . $hdr . "}";
	$hdr .= " " x ((8 - length($hdr) % 8) % 8);
	print pack("Q<", length $hdr), $hdr, $data;
	' >"$1/model.safetensors"
}

# mkmodel_cand SEED: the random model in $TMP/m, 4000 random ids drawn
# with SEED in $TMP/tok.h5, and the model's candidates in $TMP/cand from a
# short distill-linear on the GPU
mkmodel_cand() {
	mkmodel "$TMP/m" || fail "writing the random model"
	awk -v seed="$1" 'BEGIN { srand(seed); for (i = 0; i < 4000; i++) printf "%d ", 3 + int(rand() * 509); print "" }' |
		tests/bin/mktokens "$TMP/tok.h5"
	check "distill-linear --device cuda: candidates of the head-dim-64 model" bin/distill-linear -m "$TMP/m" \
		-d "$TMP/tok.h5" -o "$TMP/cand" --tokens 1024 --seq 64 --heldout 128 --device cuda
}
