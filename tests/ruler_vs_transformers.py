#!/usr/bin/env python3
"""The teacher's RULER answers from eval-ruler against transformers generate on
the same prompts (issue 8: our decoder against the reference one).

  python3 tests/ruler_vs_transformers.py MODEL.gguf RULER.h5 [--model-name teacher]
                                         [--batch 16] [--dtype bfloat16]

Reads every length and task of RULER.h5 (eval-ruler's output): the prompts'
token ids, the answers, the stop ids and each task's token limit, and the
predictions and scores of --model. Has transformers (the GGUF dequantised by
the gguf package, SDPA attention) generate greedily from the same ids, a
batch at a time (left padding), stopping at the same stop ids; scores the
answers as RULER does (its post-processing, string_match_all); prints per
task both scores, how many predictions are identical, and the averages.
Needs torch, transformers, gguf, h5py, tokenizers (transformers' own).
"""
import argparse
import os
import re
import sys
import time

import h5py
try:
    import hdf5plugin  # noqa: F401 (ruler.h5 is stored raw; older ones used zstd)
except ImportError:
    pass
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("ruler")
ap.add_argument("--model-name", default="teacher")
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--dtype", default="bfloat16")
ap.add_argument("--limit", type=int, default=0, help="samples a task (0: all)")
args = ap.parse_args()


def strings(g, name):
    b, off = g[name]["bytes"][:].tobytes(), g[name]["offsets"][:]
    return [b[off[i]:off[i + 1]].decode("utf-8", "replace") for i in range(len(off) - 1)]


def id_lists(g, name):
    v, off = g[name]["values"][:], g[name]["offsets"][:]
    return [v[off[i]:off[i + 1]].astype(np.int64) for i in range(len(off) - 1)]


CTRL = re.compile(r"[\x00-\x1f]")


def postprocess(pred):  # RULER's postprocess_pred
    return CTRL.sub("\n", pred.strip()).strip()


def match_all(pred, refs):  # RULER's string_match_all for one sample, 0 to 1
    p = pred.lower()
    return sum(1.0 if r.lower() in p else 0.0 for r in refs) / len(refs)


f = h5py.File(args.ruler, "r")
stop = [int(x) for x in f.attrs["stop_ids"].split(",")]
d, base = os.path.dirname(os.path.abspath(args.model)), os.path.basename(args.model)
tok = AutoTokenizer.from_pretrained(d, gguf_file=base)
dev = "cuda" if torch.cuda.is_available() else "cpu"
m = AutoModelForCausalLM.from_pretrained(d, gguf_file=base, dtype=getattr(torch, args.dtype),
                                         attn_implementation="sdpa").to(dev).eval()
pad = stop[0]
print(f"{args.model} ({args.dtype}, {dev}) against {args.ruler}'s {args.model_name}; stop ids {stop}")
print("length\ttask\tsamples\tours\ttransformers\tidentical")
tot_ours = tot_ref = tot_same = tot_n = 0
rows = []
for length in sorted(f.keys(), key=lambda k: int(k) if k.isdigit() else -1):
    if not length.isdigit():
        continue
    for task in f[length]:
        g = f[length][task]
        limit = int(g.attrs["tokens_to_generate"])
        ids = id_lists(g, "prompt_ids")
        answers = [a.split("\x1f") for a in strings(g, "answers")]
        ours = strings(g[args.model_name], "predictions")
        n = len(ids) if args.limit <= 0 else min(args.limit, len(ids))
        preds = []
        t0 = time.time()
        for b0 in range(0, n, args.batch):
            chunk = ids[b0:b0 + args.batch]
            T = max(len(x) for x in chunk)
            inp = torch.full((len(chunk), T), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), T), dtype=torch.long)
            for i, x in enumerate(chunk):
                inp[i, T - len(x):] = torch.from_numpy(x)
                mask[i, T - len(x):] = 1
            with torch.no_grad():
                out = m.generate(input_ids=inp.to(dev), attention_mask=mask.to(dev), max_new_tokens=limit,
                                 do_sample=False, eos_token_id=stop, pad_token_id=pad)
            for row in out[:, T:].tolist():
                cut = next((i for i, t in enumerate(row) if t in stop), len(row))
                preds.append(tok.decode(row[:cut], skip_special_tokens=False))
        s_ours = 100 * np.mean([match_all(postprocess(ours[i]), answers[i]) for i in range(n)])
        s_ref = 100 * np.mean([match_all(postprocess(preds[i]), answers[i]) for i in range(n)])
        same = sum(ours[i] == preds[i] for i in range(n))
        print(f"{length}\t{task}\t{n}\t{s_ours:.2f}\t{s_ref:.2f}\t{same}/{n}\t({time.time() - t0:.0f} s)", flush=True)
        tot_ours += s_ours * n
        tot_ref += s_ref * n
        tot_same += same
        tot_n += n
        for i in range(n):
            if ours[i] != preds[i]:
                rows.append((length, task, i, ours[i], preds[i]))
print(f"all\t\t{tot_n}\t{tot_ours / tot_n:.2f}\t{tot_ref / tot_n:.2f}\t{tot_same}/{tot_n}")
for length, task, i, a, b in rows[:20]:
    print(f"differs: {length} {task} #{i}: ours {a[:80]!r} | transformers {b[:80]!r}")
sys.exit(0)
