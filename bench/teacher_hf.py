#!/usr/bin/env python3
"""The peer of bench/teacher: Hugging Face transformers with SDPA at the
Qwen2.5-3B shape, random bf16 weights, frozen; forward (no grad) and forward +
backward to the activations (inputs_embeds requires grad, weights do not),
cross-entropy on the logits. CUDA events, median of 10 after 2 warm-ups.
usage: python3 bench/teacher_hf.py [B T]"""
import sys

import torch
import transformers
from transformers import Qwen2Config, Qwen2ForCausalLM
from timing import median_ms  # bench/timing.py, beside this script

B, T = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) == 3 else (1, 4096)
cfg = Qwen2Config(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6,
                  rms_norm_eps=1e-6, tie_word_embeddings=True, attn_implementation="sdpa")
torch.manual_seed(0)
with torch.device("cuda"):
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
model.requires_grad_(False)
ids = torch.randint(0, cfg.vocab_size, (B, T), device="cuda")


def fwd():
    with torch.no_grad():
        model(ids)


def fwd_bwd():
    emb = model.model.embed_tokens(ids).detach().requires_grad_()
    out = model(inputs_embeds=emb, labels=ids)
    out.loss.backward()


f, fb = median_ms(fwd, reps=10, warmup=2), median_ms(fwd_bwd, reps=10, warmup=2)  # as bench/teacher.c
n = B * T
print(f"transformers {transformers.__version__} + SDPA B={B} T={T}: forward {f:.1f} ms ({n / f:.1f}K tok/s), "
      f"forward+backward {fb:.1f} ms ({n / fb:.1f}K tok/s), peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
