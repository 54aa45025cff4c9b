#!/usr/bin/env python3
"""Makes the tiny model fixtures of tests/data: two random checkpoints and the
float64 Hugging Face transformers reference for them.

  tiny-qwen2/        Qwen2: q/k/v biases, tied embeddings, GQA (H 4, G 2), one
                     model.safetensors, rope_theta at the top level of config.json
                     (as in the released Qwen2.5 files)
  tiny-llama/        Llama: untied, a single kv head, head_dim 24 != C/H, llama3
                     rope scaling, rope_parameters style (newer transformers),
                     sharded with model.safetensors.index.json
  tiny-*.ref.h5      /ids (B, T) int32, /logits (B, T, V) f64, /u and /a
                     (L, B, T, C) f64: each layer's attention input (after
                     input_layernorm) and output (after o_proj); attribute loss
                     (mean next-token cross-entropy of sequence 0)
  tiny-*.ids.txt     sequence 0 of /ids, whitespace separated

Weights are bf16 with random norms and biases, so that a mistake in any of
them shows; the reference upcasts the same bf16 weights to float64.
Run: python3 tests/make_tiny_ref.py tests/data   (needs torch, transformers, h5py)
"""
import json
import os
import sys

import h5py
import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

B, T = 2, 19


def randomize(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            else:
                p.copy_(0.12 * torch.randn(p.shape, generator=gen, dtype=torch.float64))


def make(out, name, config, shard, seed):
    gen = torch.Generator().manual_seed(seed)
    cfg = transformers.AutoConfig.for_model(**config)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float64)
    randomize(model, gen)
    d = os.path.join(out, name)
    model.to(torch.bfloat16).save_pretrained(d, max_shard_size=shard)
    # the config exactly as we want it on disk, not as this transformers writes it
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    for extra in ("generation_config.json",):
        p = os.path.join(d, extra)
        if os.path.exists(p):
            os.remove(p)

    ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64, attn_implementation="eager")
    ref.eval()
    ids = torch.randint(0, config["vocab_size"], (B, T), generator=gen)
    us, as_ = [], []
    hooks = []
    for layer in ref.model.layers:
        hooks.append(layer.input_layernorm.register_forward_hook(lambda m, i, o: us.append(o.detach())))
        hooks.append(layer.self_attn.register_forward_hook(lambda m, i, o: as_.append(o[0].detach())))
    with torch.no_grad():
        logits = ref(ids).logits
    for h in hooks:
        h.remove()
    lp = torch.log_softmax(logits[0, :-1], dim=-1)
    loss = -lp[torch.arange(T - 1), ids[0, 1:]].mean().item()
    with h5py.File(os.path.join(out, name + ".ref.h5"), "w") as f:
        f["ids"] = ids.numpy().astype(np.int32)
        f["logits"] = logits.numpy()
        f["u"] = torch.stack(us).numpy()
        f["a"] = torch.stack(as_).numpy()
        f.attrs["loss"] = loss
        f.attrs["transformers"] = transformers.__version__
        f.attrs["torch"] = str(torch.__version__)
    with open(os.path.join(out, name + ".ids.txt"), "w") as f:
        f.write(" ".join(str(int(i)) for i in ids[0]) + "\n")
    print(f"{name}: {sum(p.numel() for p in ref.parameters())} params, loss {loss:.6f}, "
          f"max|logit| {logits.abs().max().item():.3f}, files {sorted(os.listdir(d))}")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data"
    make(out, "tiny-qwen2", {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "hidden_act": "silu", "tie_word_embeddings": True, "use_sliding_window": False,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
    }, "10MB", 1)
    make(out, "tiny-llama", {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 48, "intermediate_size": 128, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 24, "vocab_size": 384,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "hidden_act": "silu",
        "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 64},
        "bos_token_id": 1, "eos_token_id": 2, "dtype": "bfloat16",
    }, "40KB", 2)


if __name__ == "__main__":
    main()
