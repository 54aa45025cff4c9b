#!/bin/sh
# Our HDF5 files and Python's, both ways through the zstd filter 32015:
# h5py + hdf5plugin read what eval-lm writes, and eval-lm reads a tokens.h5
# that h5py compressed with hdf5plugin's zstd. Skipped when Python lacks
# h5py or hdf5plugin (.ci/run installs both).
. "$(dirname "$0")/lib.sh"
Q=tests/data/tiny-qwen2
if ! python3 -c 'import h5py, hdf5plugin, numpy' 2>/dev/null; then
	skip "h5py interop: python3 with h5py, hdf5plugin and numpy not found"
	exit 0
fi
bin/eval-lm -m $Q --ids $Q.ids.txt --dump-logits "$TMP/logits.h5" >/dev/null 2>&1
if python3 - "$TMP/logits.h5" $Q.ref.h5 >"$TMP/py" 2>&1 <<'PY'
import sys, h5py, hdf5plugin, numpy as np
f, r = h5py.File(sys.argv[1]), h5py.File(sys.argv[2])
d = f["logits"]
assert "32015" in d._filters, d._filters
assert d.dtype == np.float32 and d.shape == (19, 512)
ref = r["logits"][0]
err = np.abs(d[:] - ref).max()
assert err <= 1e-4 * np.abs(ref).max(), err
assert f.attrs["format"] == "dash-logits"
PY
then pass "h5py + hdf5plugin read eval-lm's zstd-compressed logits"
else fail "h5py could not read our file" "$(cat "$TMP/py")"; fi

if python3 - "$TMP/py.tokens.h5" $Q.ids.txt >"$TMP/py" 2>&1 <<'PY'
import sys, h5py, hdf5plugin, numpy as np
ids = np.array(open(sys.argv[2]).read().split(), dtype=np.uint32)
ids = np.tile(ids, 100)  # big enough to be worth compressing
with h5py.File(sys.argv[1], "w") as f:
    f.create_dataset("tokens", data=ids, chunks=(500,), **hdf5plugin.Zstd(clevel=5))
    f["doc_offsets"] = np.array([0, len(ids)], dtype=np.uint64)
    f.attrs["format"] = "dash-tokens"
    f.attrs["version"] = 1
    f.attrs["fingerprint"] = "0123456789abcdef"
PY
then
	a=$(bin/eval-lm -m $Q --ids $Q.ids.txt 2>/dev/null)
	b=$(bin/eval-lm -m $Q --tokens "$TMP/py.tokens.h5" -n 19 2>"$TMP/err")
	if [ -n "$a" ] && [ "$a" = "$b" ]; then pass "eval-lm reads a tokens.h5 that hdf5plugin compressed"
	else fail "eval-lm on h5py's tokens.h5: '$b', want '$a'" "$(cat "$TMP/err")"; fi
else fail "h5py could not write a tokens.h5" "$(cat "$TMP/py")"; fi
