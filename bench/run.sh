#!/bin/sh
# bench/run.sh: on a GPU machine, after `make test-gpu bench` (or with the
# binaries carried there): the GPU twin tests, then every benchmark with its
# peer in the same run, one after the other on the same card. The figures
# in bench/RESULTS.md come from this script's output. bench/stage.sh needs
# bin/ and tests/bin/mktokens; the fla peer needs fla-core (from .whl/).
#   sh bench/run.sh [quick]   (quick: the tests and the T 4096 shapes only)
cd "$(dirname "$0")/.." || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
tests/run gpu
echo "== GEMM ceiling"
bench/bin/gemm 4096
echo "== attention, ours and torch SDPA"
bench/bin/attention 1 4096 16 2 128 0
python3 bench/attention_sdpa.py 1 4096 16 2 128
echo "== vocabulary loss"
bench/bin/loss
echo "== teacher at the Qwen2.5-3B shape, ours and transformers + SDPA"
bench/bin/teacher 1 4096
python3 bench/teacher_hf.py 1 4096
echo "== chunked Gated DeltaNet and GLA, ours and fla's Triton kernels"
# fla-core from its wheel when the machine lacks it (pip download fla-core==0.6.0 einops -d .whl)
if ! python3 -c 'import fla' 2>/dev/null && ls .whl/fla_core-*.whl >/dev/null 2>&1; then
	pip install -q --no-deps --target "${TMPDIR:-/tmp}/dash-fla" .whl/fla_core-*.whl .whl/einops-*.whl &&
		export PYTHONPATH="${TMPDIR:-/tmp}/dash-fla${PYTHONPATH:+:$PYTHONPATH}"
fi
bench/bin/linear_attn 1 4096 16 128
python3 bench/linear_fla.py 1 4096 16 128
echo "== distill-linear, the whole stage at the Qwen2.5-3B shape"
sh bench/stage.sh
[ "${1:-}" = quick ] && exit 0
bench/bin/attention 8 512 16 2 128 0
python3 bench/attention_sdpa.py 8 512 16 2 128
bench/bin/teacher 4 1024
python3 bench/teacher_hf.py 4 1024
