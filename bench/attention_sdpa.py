#!/usr/bin/env python3
"""The peer of bench/attention: torch SDPA, causal, GQA, bf16, same shape and
timing (CUDA events, median of 20 after 3 warm-ups).
usage: python3 bench/attention_sdpa.py [B T H G D]"""
import sys

import torch
import torch.nn.functional as F
from timing import median_ms  # bench/timing.py, beside this script

B, T, H, G, D = (int(x) for x in sys.argv[1:6]) if len(sys.argv) == 6 else (1, 4096, 16, 2, 128)
q = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)
k = torch.randn(B, G, T, D, device="cuda", dtype=torch.bfloat16)
v = torch.randn(B, G, T, D, device="cuda", dtype=torch.bfloat16)


fwd = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))
qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
do = torch.randn_like(q)


def fwd_bwd():
    F.scaled_dot_product_attention(qg, kg, vg, is_causal=True, enable_gqa=True).backward(do)


fb = median_ms(fwd_bwd)
flop = 4.0 * B * H * D * T * T / 2
print(f"torch {torch.__version__} SDPA B={B} T={T} H={H} G={G} D={D} causal: forward {fwd:.3f} ms "
      f"({flop / (fwd * 1e-3) / 1e12:.1f} TFLOP/s), forward+backward {fb:.3f} ms")
