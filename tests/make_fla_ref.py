#!/usr/bin/env python3
"""Makes the fixtures of tests/data/linear from fla's own reference code: the
naive (plain PyTorch, float32) Gated DeltaNet and GLA recurrences of
flash-linear-attention (fla-core 0.6.0, fla/ops/gated_delta_rule/naive.py and
fla/ops/gla/naive.py), loaded straight from their files so that fla's Triton
kernels are never imported.

  gdn.h5   /q /k (B, T, H, Dk) /v (B, T, H, Dv) /g /beta (B, T, H) /S0 (B, H, Dk, Dv)
           inputs; /o (B, T, H, Dv) and /S (B, H, Dk, Dv) from
           naive_recurrent_gated_delta_rule (k L2-normalised, beta a sigmoid,
           g = -exp(A) softplus(x), as the operator makes them)
  gla.h5   the same with /gk (B, T, H, Dk) = logsigmoid(x) / 16, from
           naive_recurrent_gla
Run: pip install fla-core==0.6.0 einops torch h5py; python3 tests/make_fla_ref.py
"""
import importlib.util
import os

import h5py
import torch
import torch.nn.functional as F


def load(rel):
    root = os.path.dirname(importlib.util.find_spec("fla").origin)
    spec = importlib.util.spec_from_file_location(rel.replace("/", "_"), os.path.join(root, rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gdn = load("ops/gated_delta_rule/naive.py")
gla = load("ops/gla/naive.py")
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "linear")
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
B, T, H, Dk, Dv = 2, 37, 3, 8, 6

q = torch.randn(B, T, H, Dk)
k = F.normalize(torch.randn(B, T, H, Dk), dim=-1)
v = torch.randn(B, T, H, Dv)
beta = torch.sigmoid(torch.randn(B, T, H))
g = -torch.exp(torch.randn(H) * 0.5) * F.softplus(torch.randn(B, T, H))
S0 = torch.randn(B, H, Dk, Dv) * 0.5
o, S = gdn.naive_recurrent_gated_delta_rule(q, k, v, beta, g, initial_state=S0.clone(), output_final_state=True)
with h5py.File(os.path.join(out, "gdn.h5"), "w") as f:
    for name, x in dict(q=q, k=k, v=v, g=g, beta=beta, S0=S0, o=o, S=S).items():
        f[name] = x.float().numpy()
    f.attrs["source"] = "fla-core 0.6.0 fla/ops/gated_delta_rule/naive.py, torch " + torch.__version__

gk = F.logsigmoid(torch.randn(B, T, H, Dk)) / 16
o, S = gla.naive_recurrent_gla(q, k, v, gk, initial_state=S0.clone(), output_final_state=True)
with h5py.File(os.path.join(out, "gla.h5"), "w") as f:
    for name, x in dict(q=q, k=k, v=v, gk=gk, S0=S0, o=o, S=S).items():
        f[name] = x.float().numpy()
    f.attrs["source"] = "fla-core 0.6.0 fla/ops/gla/naive.py, torch " + torch.__version__
print("wrote", out)
