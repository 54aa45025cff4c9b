#!/usr/bin/env python3
"""Compares eval-lm's logits on a GGUF teacher with transformers loading the
same GGUF (transformers dequantises it with the gguf package), on real text.

  python3 tests/gguf_vs_transformers.py MODEL.gguf TOKENS.h5 [N]

Runs bin/eval-lm --dump-logits on the first N (default 256) ids of TOKENS.h5
and prints the largest difference relative to max|logit|, argmax agreement
and both losses. Needs torch, transformers, accelerate, gguf, h5py, hdf5plugin.
"""
import os
import subprocess
import sys
import tempfile

import h5py
import hdf5plugin  # noqa: F401 (registers the zstd filter)
import numpy as np
import torch
from transformers import AutoModelForCausalLM

model, tokens = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 256
ids = h5py.File(tokens)["tokens"][:n].astype(np.int64)
with tempfile.TemporaryDirectory() as tmp:
    idf, out = os.path.join(tmp, "ids.txt"), os.path.join(tmp, "logits.h5")
    open(idf, "w").write(" ".join(map(str, ids)))
    subprocess.run(["bin/eval-lm", "-m", model, "--ids", idf, "--dump-logits", out], check=True,
                   stdout=subprocess.DEVNULL)
    ours = h5py.File(out)["logits"][:].astype(np.float64)
m = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(model)),
                                         gguf_file=os.path.basename(model), dtype=torch.float32)
with torch.no_grad():
    ref = m(torch.tensor(ids)[None]).logits[0].double().numpy()
scale = np.abs(ref).max()
print(f"{model}: {n} tokens, max|logit| {scale:.3f}, max|diff| {np.abs(ours - ref).max():.3e} "
      f"({np.abs(ours - ref).max() / scale:.2e} of max), argmax agreement {(ours.argmax(-1) == ref.argmax(-1)).mean():.4f}")
for name, lg in (("ours", ours), ("transformers", ref)):
    lp = torch.log_softmax(torch.tensor(lg[:-1]), -1)
    print(f"  loss {name}: {-lp[torch.arange(n - 1), torch.tensor(ids[1:])].mean().item():.6f}")
