#!/usr/bin/env python3
"""Makes the GGUF fixtures of tests/data/gguf with the `gguf` Python package and
transformers (which reads GGUF files through it).

  quant_ref.h5       per quantisation type: /TYPE/blocks (u8, 16 random blocks, scales
                     set to sane f16 values) and /TYPE/values (f32), what
                     gguf.quants.dequantize makes of them
  tiny-qwen2.gguf    a random qwen2 model (C 256, H 4, G 2, D 64, F 512, L 2) whose
                     tensors use every supported type: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K
                     Q5_K Q6_K F16 BF16 F32, with a small byte-level BPE tokenizer
                     (pre "qwen2", 3 control tokens)
  tiny-llama.gguf    a random llama model (G 1, untied), q/k rows permuted as
                     llama.cpp's converter does; tokenizer pre "smollm"
  tiny-*.gguf.ref.h5 /ids (T) int32 and /logits (T, V) f64 from transformers
                     (float64) loading the same .gguf; attribute loss
  tiny-*.gguf.ids.txt  the same ids
  tiny-*.gguf.tok.txt  JSON lines {"text", "ids"}: transformers' tokenizer from the
                     GGUF metadata
Run: python3 tests/make_gguf_ref.py   (needs gguf, torch, transformers, accelerate, h5py)
"""
import json
import os

import gguf
import h5py
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf import quants
from transformers import AutoModelForCausalLM, AutoTokenizer

OUT = "tests/data/gguf"
TYPES = {"q4_0": Q.Q4_0, "q4_1": Q.Q4_1, "q5_0": Q.Q5_0, "q5_1": Q.Q5_1, "q8_0": Q.Q8_0,
         "q4_k": Q.Q4_K, "q5_k": Q.Q5_K, "q6_k": Q.Q6_K}
# byte offsets of each type's f16 scale fields in a block
SCALES = {"q4_0": [0], "q4_1": [0, 2], "q5_0": [0], "q5_1": [0, 2], "q8_0": [0],
          "q4_k": [0, 2], "q5_k": [0, 2], "q6_k": [208]}


def quant_ref(rng):
    with h5py.File(f"{OUT}/quant_ref.h5", "w") as f:
        for name, qt in TYPES.items():
            bs, ts = gguf.GGML_QUANT_SIZES[qt]
            blocks = rng.integers(0, 256, size=(16, ts), dtype=np.uint8)
            for off in SCALES[name]:
                d = rng.uniform(-2, 2, size=16).astype(np.float16).view(np.uint8).reshape(16, 2)
                blocks[:, off:off + 2] = d
            vals = quants.dequantize(blocks.reshape(-1), qt).astype(np.float32).reshape(-1)
            f[f"{name}/blocks"] = blocks
            f[f"{name}/values"] = vals


def byte_chars():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tiny_vocab():
    bc = byte_chars()
    toks = [bc[b] for b in range(256)]
    merges = []
    for a, b in [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n"),
                 ("Ġ", "s"), ("r", "e"), ("a", "t"), ("e", "n"), ("Ġ", "w"), ("Ġ", "b"), ("o", "r"),
                 ("Ġ", "c"), ("i", "s"), ("Ġ", "o"), ("Ġw", "or"), ("l", "d"), ("Ġwor", "ld"),
                 ("1", "2"), ("Ġ", "Ġ"), ("ĠĠ", "ĠĠ"), ("Ċ", "Ċ")]:
        merges.append(f"{a} {b}")
        toks.append(a + b)
    return toks, merges


def rope_permute(w, n_head):
    # llama.cpp convert_hf_to_gguf: interleave the two halves of each head
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


KSCALE = {Q.Q4_K: 4e-4, Q.Q5_K: 2e-4, Q.Q6_K: 1e-4}


def put(wr, name, arr, qt, rng=np.random.default_rng(11)):
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if qt in KSCALE:
        # gguf-py has no K-quant quantiser: random blocks with small scales make
        # a random weight just as well, and the reference reads the same bytes
        bs, ts = gguf.GGML_QUANT_SIZES[qt]
        n = arr.size // bs
        blocks = rng.integers(0, 256, size=(n, ts), dtype=np.uint8)
        for off in SCALES[{Q.Q4_K: "q4_k", Q.Q5_K: "q5_k", Q.Q6_K: "q6_k"}[qt]]:
            d = rng.uniform(-KSCALE[qt], KSCALE[qt], size=n).astype(np.float16)
            blocks[:, off:off + 2] = d.view(np.uint8).reshape(n, 2)
        data = blocks.reshape(arr.shape[0], -1)
        wr.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qt)
    elif qt == Q.F32:
        wr.add_tensor(name, arr)
    elif qt == Q.F16:
        wr.add_tensor(name, arr.astype(np.float16))
    elif qt == Q.BF16:
        b = (arr.view(np.uint32) + 0x7FFF + ((arr.view(np.uint32) >> 16) & 1)) >> 16
        data = b.astype(np.uint16).view(np.uint8).reshape(arr.shape[0], -1)
        wr.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qt)
    else:
        data = quants.quantize(arr, qt)
        wr.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qt)


def tiny_model(rng, arch, pre, G, layer_types):
    C, H, D, F, L = 256, 4, 64, 512, 2
    toks, merges = tiny_vocab()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    toks += specials
    V = len(toks)
    types = [1] * (V - 3) + [3, 3, 3]
    path = f"{OUT}/tiny-{arch}.gguf"
    wr = gguf.GGUFWriter(path, arch)
    wr.add_name(f"tiny {arch} test model")
    wr.add_block_count(L)
    wr.add_context_length(512)
    wr.add_embedding_length(C)
    wr.add_feed_forward_length(F)
    wr.add_head_count(H)
    wr.add_head_count_kv(G)
    wr.add_rope_freq_base(1e6 if arch == "qwen2" else 1e4)
    wr.add_layer_norm_rms_eps(1e-6)
    wr.add_file_type(15)
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre(pre)
    wr.add_token_list(toks)
    wr.add_token_types(types)
    wr.add_token_merges(merges)
    wr.add_bos_token_id(V - 3)
    wr.add_eos_token_id(V - 1)
    wr.add_add_bos_token(False)
    s = 0.1
    put(wr, "token_embd.weight", rng.normal(0, 1, (V, C)), Q.Q8_0)
    put(wr, "output_norm.weight", 1 + 0.2 * rng.normal(size=C), Q.F32)
    put(wr, "output.weight", rng.normal(0, s, (V, C)), Q.Q6_K)
    for l in range(L):
        t = layer_types[l]
        wq, wk = rng.normal(0, s, (H * D, C)), rng.normal(0, s, (G * D, C))
        if arch == "llama":
            wq, wk = rope_permute(wq, H), rope_permute(wk, G)
        put(wr, f"blk.{l}.attn_norm.weight", 1 + 0.2 * rng.normal(size=C), Q.F32)
        put(wr, f"blk.{l}.ffn_norm.weight", 1 + 0.2 * rng.normal(size=C), Q.F32)
        put(wr, f"blk.{l}.attn_q.weight", wq, t[0])
        put(wr, f"blk.{l}.attn_k.weight", wk, t[1])
        put(wr, f"blk.{l}.attn_v.weight", rng.normal(0, s, (G * D, C)), t[2])
        put(wr, f"blk.{l}.attn_output.weight", rng.normal(0, s, (C, H * D)), t[3])
        put(wr, f"blk.{l}.ffn_gate.weight", rng.normal(0, s, (F, C)), t[4])
        put(wr, f"blk.{l}.ffn_up.weight", rng.normal(0, s, (F, C)), t[5])
        put(wr, f"blk.{l}.ffn_down.weight", rng.normal(0, s, (C, F)), t[6])
        if arch == "qwen2":
            put(wr, f"blk.{l}.attn_q.bias", 0.2 * rng.normal(size=H * D), Q.F32)
            put(wr, f"blk.{l}.attn_k.bias", 0.2 * rng.normal(size=G * D), Q.F32)
            put(wr, f"blk.{l}.attn_v.bias", 0.2 * rng.normal(size=G * D), Q.F32)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()

    ref = AutoModelForCausalLM.from_pretrained(OUT, gguf_file=os.path.basename(path), dtype=torch.float64)
    ids = torch.tensor(rng.integers(0, V, size=23), dtype=torch.long)
    with torch.no_grad():
        logits = ref(ids[None]).logits[0]
    lp = torch.log_softmax(logits[:-1], dim=-1)
    loss = -lp[torch.arange(len(ids) - 1), ids[1:]].mean().item()
    with h5py.File(path + ".ref.h5", "w") as f:
        f["ids"] = ids.numpy().astype(np.int32)
        f["logits"] = logits.numpy()
        f.attrs["loss"] = loss
    open(path + ".ids.txt", "w").write(" ".join(str(int(i)) for i in ids) + "\n")
    # the tokenizer as transformers reads it from the GGUF metadata (its smollm
    # conversion drops the Digits pre-tokenizer, so no digits for that one)
    tok = AutoTokenizer.from_pretrained(OUT, gguf_file=os.path.basename(path))
    texts = ["the world", "hello  world\n\nthe end", "<|im_start|>user\nthe in<|im_end|>", "Caf\u00e9 \u4e2d\u6587!",
             "isn't it, THE WORLD's?", "   ", "\u00ff\u0100 orbs\tere"]
    if arch == "qwen2":
        texts += ["12 121 1212 x1y2", "3.14"]
    with open(path + ".tok.txt", "w") as f:
        for t in texts:
            f.write(json.dumps({"text": t, "ids": tok(t)["input_ids"]}) + "\n")
    print(path, os.path.getsize(path), "bytes, max|logit|", logits.abs().max().item())


def main():
    rng = np.random.default_rng(5)
    os.makedirs(OUT, exist_ok=True)
    quant_ref(rng)
    tiny_model(rng, "qwen2", "qwen2", 2, [
        (Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1),
        (Q.Q8_0, Q.F16, Q.BF16, Q.F32, Q.Q6_K, Q.Q4_K, Q.Q5_K)])
    tiny_model(rng, "llama", "smollm", 1, [
        (Q.Q4_0, Q.Q8_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q4_K, Q.Q6_K),
        (Q.Q5_K, Q.Q4_K, Q.F16, Q.Q8_0, Q.Q5_0, Q.Q4_1, Q.Q4_0)])


if __name__ == "__main__":
    main()
