#!/usr/bin/env python3
"""The peer of bench/attention: torch SDPA, causal, GQA, bf16, same shape and
timing (CUDA events, median of 20 after 3 warm-ups).
usage: python3 bench/attention_sdpa.py [B T H G D]"""
import sys

import torch
import torch.nn.functional as F

B, T, H, G, D = (int(x) for x in sys.argv[1:6]) if len(sys.argv) == 6 else (1, 4096, 16, 2, 128)
q = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)
k = torch.randn(B, G, T, D, device="cuda", dtype=torch.bfloat16)
v = torch.randn(B, G, T, D, device="cuda", dtype=torch.bfloat16)
ts = []
for i in range(23):
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    e1.record()
    torch.cuda.synchronize()
    if i >= 3:
        ts.append(e0.elapsed_time(e1))
ms = sorted(ts)[10]
flop = 4.0 * B * H * D * T * T / 2
print(f"torch {torch.__version__} SDPA B={B} T={T} H={H} G={G} D={D} causal: {ms:.3f} ms, {flop / (ms * 1e-3) / 1e12:.1f} TFLOP/s")
