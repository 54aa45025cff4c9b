#!/usr/bin/env python3
"""The peer of bench/bin/decode: transformers generate (SDPA, bf16, its
dynamic KV cache) decoding a batch of B sequences of N random ids each.
Times generate with 1 new token (the prefill of the batch and one token) and
with S + 1 (the same and S steps), each the median of 3 runs after a warm-up,
and reports the step time (their difference over S) and the decoded tokens/s
(B / step), and the prefill's tokens/s.

  python3 bench/decode_hf.py MODEL.gguf [--context 4096] [--batch 32] [--steps 32]
"""
import argparse
import os
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--context", type=int, default=4096)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--steps", type=int, default=32)
args = ap.parse_args()
d, base = os.path.dirname(os.path.abspath(args.model)), os.path.basename(args.model)
m = AutoModelForCausalLM.from_pretrained(d, gguf_file=base, dtype=torch.bfloat16,
                                         attn_implementation="sdpa").cuda().eval()
g = torch.Generator().manual_seed(1)
ids = torch.randint(0, m.config.vocab_size, (args.batch, args.context), generator=g).cuda()
mask = torch.ones_like(ids)


def gen(k):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        m.generate(input_ids=ids, attention_mask=mask, max_new_tokens=k, min_new_tokens=k, do_sample=False,
                   pad_token_id=0)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


gen(2)
one = statistics.median(gen(1) for _ in range(3))
many = statistics.median(gen(args.steps + 1) for _ in range(3))
step = (many - one) / args.steps
print(f"transformers\t{args.context}\t{args.batch}\tprefill {1e3 * one:.1f} ms for the batch "
      f"({args.batch * args.context / one:.0f} tok/s)\tstep {1e3 * step:.3f} ms\t{args.batch / step:.0f} tok/s\t"
      f"peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
