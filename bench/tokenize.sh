#!/bin/sh
# bench/tokenize.sh: bytes/s of bin/tokenize against Hugging Face tokenizers on
# the same corpus, in the same run: one thread each, then all cores.
# Both sides time encoding alone (documents already in memory, tokenizer
# loaded); the wall time of the whole command is printed too.
# usage: bench/tokenize.sh [CORPUS.jsonl.zst] [TOKENIZER.json]   (needs pip's tokenizers)
set -eu
cd "$(dirname "$0")/.."
CORPUS=${1:-data/text/sotu.jsonl.zst}
TOK=${2:-data/qwen2.5/tokenizer.json}
NPROC=$(nproc)
[ -x bin/tokenize ] || make bin/tokenize >/dev/null
echo "corpus $CORPUS, tokenizer $TOK, $NPROC cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
printf '%-28s %8s %10s %10s\n' "" threads "MB/s" "wall s"
for j in 1 "$NPROC"; do
	best=0 wall=0
	for rep in 1 2 3; do
		t0=$(date +%s.%N)
		mbs=$(bin/tokenize -t "$TOK" -j "$j" --ids "$CORPUS" 2>&1 >/dev/null | sed -n 's/.*(\([0-9.]*\) MB\/s).*/\1/p')
		t1=$(date +%s.%N)
		best=$(awk -v a="$best" -v b="$mbs" 'BEGIN { print (b > a ? b : a) }')
		wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
	done
	printf '%-28s %8s %10s %10s\n' "bin/tokenize" "$j" "$best" "$wall"
	python3 - "$CORPUS" "$TOK" "$j" <<'PY'
import json, os, subprocess, sys, time
corpus, tok, j = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.environ["RAYON_NUM_THREADS"] = str(j)
t0 = time.time()
from tokenizers import Tokenizer
raw = subprocess.run(["zstd", "-dc", corpus], check=True, capture_output=True).stdout.decode()
docs = [json.loads(l)["text"] for l in raw.splitlines() if l.strip()]
t = Tokenizer.from_file(tok)
nbytes = sum(len(d.encode()) for d in docs)
best = 0
for rep in range(3):
    s = time.time()
    if j == 1:
        for d in docs:
            t.encode(d)
    else:
        t.encode_batch(docs)
    best = max(best, nbytes / (time.time() - s) / 1e6)
import tokenizers
print(f"{'tokenizers ' + tokenizers.__version__:<28} {j:>8} {best:>10.1f} {time.time() - t0:>10.2f}")
PY
done
