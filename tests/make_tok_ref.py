#!/usr/bin/env python3
"""Makes the tokenizer fixtures of tests/data/tok with Hugging Face `tokenizers`.

  mixed.txt, mixed.ids       hard cases (scripts, emoji with joiners, combining
                             marks, contractions, digits, whitespace runs, code,
                             special-token strings); ids one per line
  mixed.decoded              tokenizers' decode of mixed.ids (the NFC text)
  invalid.txt, invalid.ids   invalid UTF-8; tokenizers sees the text as Python's
                             bytes.decode("utf-8", errors="replace") makes it
  corpora.txt                per corpus: the sha256 of its ids (documents joined
                             by <|endoftext|>, one id per line) and the count
  corpora-counts.txt         tokens per document, to find a mismatch
  fuzz.jsonl                 random strings from a pool of hard code points,
                             with their ids
  variants.json              patches that turn the Qwen tokenizer.json into the
                             Llama 3 and GPT-2/SmolLM2 variants, with cases
  chat.ids                   ids of the Qwen2.5 ChatML prompt for "Hello"
Run: python3 tests/make_tok_ref.py   (needs tokenizers and zstandard or the zstd CLI)
"""
import copy
import hashlib
import json
import os
import random
import subprocess

from tokenizers import Tokenizer

OUT = "tests/data/tok"
TOK = "data/qwen2.5/tokenizer.json"
EOS = 151643

MIXED = (
    "Hello, world! I'm here; you're there. HE'S GONE, they'LL see, We'VE won, it'd be, don't, "
    "'tis, Ain'T, o'clock, rock'n'roll, I\u2019m curly.\n"
    "Contractions with odd cases: IT'S, It's, iT's, 'S, 'LL, 'Ll, 'lL, 'D, 'RE, 'Ve, 'M.\n"
    "\u4e2d\u6587\u5206\u8bcd\u6d4b\u8bd5\u3002\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3001\u30ab\u30bf\u30ab\u30ca\u3002"
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4.\n"
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645\u064e \u0627\u0644\u0633\u0651\u064e\u0644\u0627\u0645\u064f \u0639\u0644\u064a\u0643\u0645\n"
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd, \u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e, "
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01, \u1824\u1833\u1826\u182d\u180e\u1821\n"
    "Emoji: \U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466 \U0001F3F3\ufe0f\u200d\U0001F308 "
    "\U0001F44D\U0001F3FD \u2764\ufe0f \U0001F1FA\U0001F1F8 \U0001F600\U0001F600\U0001F600\n"
    "Combining: e\u0301 a\u0308 o\u0302\u0323 caf\u00e9 cafe\u0301 Ti\u1ebfng Vi\u1ec7t \u212b \u1e9b\u0323 n\u0303\n"
    "Digits: 1234567890123456789 3.14159265358979 1,000,000 -42 0x1F 2024-11-27 \u0661\u0662\u0663 \u00bd \u2167\n"
    "Greek and folds: \u03a3\u038a\u03a3\u03a5\u03a6\u039f\u03a3 it'\u017f IT'\u212a stra\u00dfe STRASSE\n"
    "Whitespace:\ta\t\tb    c\n\n\n   d \r\n\r\ne\u00a0f\u3000g\u2028h\u0085i\u200bj\u2009k  \n \n\t\n"
    "Code:\n    def f(x):\n        return x**2  # square\n\n"
    "int main(void) {\n\tfor (int i = 0; i < 10; i++) printf(\"%d\\n\", i);\n\treturn 0;\n}\n"
    "Specials: <|im_start|>user\nhi<|im_end|>\n<|endoftext|><|endoftext|> x<|im_start|> partial <|im_start "
    "<tool_call>call</tool_call> <|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>\n"
    "Punctuation runs: ...!!! ??? --- === ~~~ *** ((())) [[]] {{}} <<>> \"quoted\" 'single' `tick`\n"
    "Trailing spaces and no final newline   "
)

INVALID = (b"abc \xff\xfe def \xe2\x82 g \xf0\x9f\x98 h \xed\xa0\x80 i \xc0\xaf j \xf4\x90\x80\x80 k "
           b"\xe2\x82\xac ok \xf0\x9f\x98\x80 \x80\x80\x80 end\xe2")

POOL = (list("abcXYZ019 \t\n\r'.,!-_<>|") + ["'s", "'LL", "<|im_start|>", "<|endoftext|>", "\u00e9", "e\u0301",
        "\u4e2d", "\u6587", "\u0645", "\u064e", "\U0001F600", "\u200d", "\U0001F468", "\u3000", "\u00a0",
        "\u0085", "\u2028", "\u180e", "\u0301", "\u0661", "\u00bd", "\u017f", "\u212a", "\u00df", "  ", "\n\n",
        "1234", "\ud55c", "\u1100\u1161", "\ufffd", "\u0e2a\u0e35"])


def ids_text(ids):
    return "".join(f"{i}\n" for i in ids)


def read_jsonl_zst(path):
    raw = subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout
    return [json.loads(l)["text"] for l in raw.decode("utf-8").splitlines() if l.strip()]


def main():
    tok = Tokenizer.from_file(TOK)
    os.makedirs(OUT, exist_ok=True)
    enc = lambda s: tok.encode(s).ids

    with open(f"{OUT}/mixed.txt", "wb") as f:
        f.write(MIXED.encode("utf-8"))
    ids = enc(MIXED)
    open(f"{OUT}/mixed.ids", "w").write(ids_text(ids))
    open(f"{OUT}/mixed.decoded", "wb").write(tok.decode(ids, skip_special_tokens=False).encode("utf-8"))

    open(f"{OUT}/invalid.txt", "wb").write(INVALID)
    open(f"{OUT}/invalid.ids", "w").write(ids_text(enc(INVALID.decode("utf-8", errors="replace"))))

    with open(f"{OUT}/corpora.txt", "w") as f, open(f"{OUT}/corpora-counts.txt", "w") as g:
        for name in ("sotu", "moby-dick"):
            docs = read_jsonl_zst(f"data/text/{name}.jsonl.zst")
            all_ids = []
            for d, text in enumerate(docs):
                if d:
                    all_ids.append(EOS)
                e = enc(text)
                all_ids += e
                g.write(f"{name} {d} {len(e)}\n")
            f.write(f"{name} {hashlib.sha256(ids_text(all_ids).encode()).hexdigest()} {len(all_ids)}\n")

    rng = random.Random(7)
    with open(f"{OUT}/fuzz.jsonl", "w") as f:
        for _ in range(1500):
            s = "".join(rng.choice(POOL) for _ in range(rng.randint(1, 40)))
            f.write(json.dumps({"text": s, "ids": enc(s)}) + "\n")

    open(f"{OUT}/chat.ids", "w").write(ids_text(enc(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")))

    # variants: the same vocabulary and merges under the other families' rules
    base = json.load(open(TOK))
    llama3_re = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                 "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
    patches = {
        "llama3": {
            "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": llama3_re}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
            "post_processor": {"type": "Sequence", "processors": [
                {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
                {"type": "TemplateProcessing",
                 "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                 "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                 "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [EOS], "tokens": ["<|endoftext|>"]}}}]},
            "model.ignore_merges": True,
            "merges_as_strings": True,
        },
        "smollm2": {
            "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        },
        "gpt2-prefix-space": {
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "post_processor": None,
        },
    }
    cases = [MIXED, "Hello world", " leading space", "x<|im_start|>y 12345678 don't", "\n\nA\n", ""]
    cases += [json.loads(l)["text"] for l in open(f"{OUT}/fuzz.jsonl").readlines()[:200]]
    out = []
    for name, patch in patches.items():
        t = copy.deepcopy(base)
        for k, v in patch.items():
            if k == "merges_as_strings":
                t["model"]["merges"] = [" ".join(m) for m in t["model"]["merges"]]
            elif k.startswith("model."):
                t["model"][k[6:]] = v
            else:
                t[k] = v
        vt = Tokenizer.from_str(json.dumps(t))
        out.append({"name": name, "patch": patch,
                    "cases": [{"text": c, "ids": vt.encode(c).ids} for c in cases]})
    json.dump(out, open(f"{OUT}/variants.json", "w"))
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
