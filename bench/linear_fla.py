#!/usr/bin/env python3
"""The peer of bench/linear_attn: fla's Triton chunked kernels (fla-core 0.6.0,
installed from its wheel), Gated DeltaNet and GLA, same shape and timing (CUDA
events, median of 20 after 3 warm-ups). Inputs in bf16 (fla's usual dtype)
and in float32 (ours); g and beta float32, q and k L2-normalised for GDN.
fla's GDN backward may refuse on Hopper: that is printed, not hidden.
usage: python3 bench/linear_fla.py [B T H D]"""
import sys

import torch
import torch.nn.functional as F

import fla
from fla.ops.gated_delta_rule import chunk_gated_delta_rule
from fla.ops.gla import chunk_gla
from timing import median_ms  # bench/timing.py, beside this script

B, T, H, D = (int(x) for x in sys.argv[1:5]) if len(sys.argv) == 5 else (1, 4096, 16, 128)
torch.manual_seed(0)


def inputs(dt):
    q = F.normalize(torch.randn(B, T, H, D, device="cuda"), dim=-1).to(dt)
    k = F.normalize(torch.randn(B, T, H, D, device="cuda"), dim=-1).to(dt)
    v = torch.randn(B, T, H, D, device="cuda").to(dt)
    g = -0.6 * torch.rand(B, T, H, device="cuda")
    beta = torch.rand(B, T, H, device="cuda")
    gk = (F.logsigmoid(torch.randn(B, T, H, D, device="cuda")) / 16).to(dt)
    return q, k, v, g, beta, gk


def timed(name, fwd, args):
    try:
        f = median_ms(lambda: fwd(*args))
    except Exception as e:  # noqa: BLE001 - report whatever fla raises
        print(f"fla {name}: forward refused: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        return
    leaves = [a.detach().clone().requires_grad_() if a.is_floating_point() else a for a in args]
    do = torch.randn(B, T, H, D, device="cuda", dtype=args[2].dtype)

    def fb():
        fwd(*leaves)[0].backward(do)

    try:
        b = f"{median_ms(fb):.3f} ms"
    except Exception as e:  # noqa: BLE001
        b = f"refused ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    print(f"fla {name}: forward {f:.3f} ms, forward+backward {b}")


print(f"fla-core {fla.__version__}, torch {torch.__version__}, B={B} T={T} H={H} D={D}")
for dt in (torch.bfloat16, torch.float32):
    q, k, v, g, beta, gk = inputs(dt)
    tag = str(dt).replace("torch.", "")
    timed(f"chunk_gated_delta_rule {tag}", lambda q, k, v, g, beta: chunk_gated_delta_rule(
        q, k, v, g, beta, scale=D ** -0.5, output_final_state=False), (q, k, v, g, beta))
    timed(f"chunk_gla {tag}", lambda q, k, v, gk: chunk_gla(
        q, k, v, gk, scale=D ** -0.5, output_final_state=False), (q, k, v, gk))
