#!/usr/bin/env python3
"""Makes tests/data/ruler/ref.json by running NVIDIA/RULER's own generators
and scoring, for tests/test_ruler.c to check lib/ruler.c against.

  samples  for each setting (task, max_seq_length, model template), RULER's
           generate flow (niah.generate_samples, variable_tracking.
           sys_vartrack_w_noise_random twice as its main() does, common_words_
           extraction.sys_word_pair_random, freq_words_extraction.sys_kwext)
           makes one sample with seed 42; we keep its skeleton (each context
           replaced by <CONTEXT>, keys by <KEY>, values by <VALUE>, cwe's
           example answer words by <KEY>), its needle sentences in skeleton
           form, its answers' kinds, the haystack size RULER's search chose,
           its token length and list statistics (cwe counts, fwe counts)
  scores   hand-made predictions through evaluate.py's postprocess_pred and
           string_match_all / string_match_part, one by one and together; a
           NUL in a prediction is stored as \x01 (C strings end at NUL, and
           postprocess_pred makes both '\n')

What stands in for what RULER fetches: the tokenizer is data/qwen2.5/
tokenizer.json through Hugging Face `tokenizers` (RULER's "hf" type counts
tokenizer.tokenize(text), no special tokens); the essay haystack
(json/PaulGrahamEssays.json) is the twelve State of the Union addresses
2010-2021 (the last lines of data/text/sotu.jsonl.zst), joined by newlines;
nltk's sent_tokenize (punkt needs a download) is the sentence rule of
lib/ruler.c in Python; json/english_words.json (a Git LFS file, read only
beyond 8166 cwe words) is empty. prepare.py's one line that builds the template
(model_template.format(task_template=...) + answer_prefix) is repeated here.

Run: python3 tests/make_ruler_ref.py [RULER]   RULER: a clone or bare git dir
of github.com/NVIDIA/RULER (else it is cloned into a temp dir); its files are
read at commit REV (or HEAD, recorded) into a temp dir outside the project.
Needs: pip install wonderwords numpy scipy pyyaml tqdm tokenizers, and
zstandard or the zstd command.
"""
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import types

REV = "c3f5e3b4f87f97e048793bb510a3a6b19a46bf3a"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests/data/ruler/ref.json")
TOK = os.path.join(ROOT, "data/qwen2.5/tokenizer.json")
SOTU = os.path.join(ROOT, "data/text/sotu.jsonl.zst")
FILES = ["scripts/data/synthetic/niah.py", "scripts/data/synthetic/variable_tracking.py",
         "scripts/data/synthetic/common_words_extraction.py", "scripts/data/synthetic/freq_words_extraction.py",
         "scripts/data/synthetic/constants.py", "scripts/data/template.py", "scripts/data/manifest_utils.py",
         "scripts/eval/synthetic/constants.py", "scripts/eval/evaluate.py", "scripts/synthetic.yaml"]
CHAT = ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n{task_template}<|im_end|>\n<|im_start|>assistant\n")
SETTINGS = [(t, 4096, None) for t in ["niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1",
                                      "niah_multikey_2", "niah_multikey_3", "niah_multivalue", "niah_multiquery",
                                      "vt", "cwe", "fwe"]]
SETTINGS += [(t, 4096, CHAT) for t in ["niah_single_1", "niah_multivalue", "vt", "cwe", "fwe"]]
SETTINGS += [(t, 2048, None) for t in ["niah_single_1", "niah_multikey_2", "vt", "cwe", "fwe"]]


def fetch_ruler(src, tmp):
    if not src:
        src = os.path.join(tmp, "clone")
        subprocess.run(["git", "clone", "-q", "https://github.com/NVIDIA/RULER", src], check=True)
    gd = src if os.path.exists(os.path.join(src, "HEAD")) and not os.path.exists(os.path.join(src, ".git")) \
        else os.path.join(src, ".git")
    rev = REV if subprocess.run(["git", "--git-dir", gd, "cat-file", "-e", REV + "^{commit}"],
                                capture_output=True).returncode == 0 else "HEAD"
    rev = subprocess.run(["git", "--git-dir", gd, "rev-parse", rev], capture_output=True, text=True,
                         check=True).stdout.strip()
    dst = os.path.join(tmp, "RULER")
    for f in FILES:
        os.makedirs(os.path.dirname(os.path.join(dst, f)), exist_ok=True)
        data = subprocess.run(["git", "--git-dir", gd, "show", f"{rev}:{f}"], capture_output=True,
                              check=True).stdout
        open(os.path.join(dst, f), "wb").write(data)
    return dst, rev


# --------------------------------------------------------------------------
# stand-ins for what RULER would download or import

ABBREV = set("Mr Mrs Ms Dr St Jr Sr Gen Gov Sen Rep Reps Hon Pres Lt Col Capt Maj Sgt Adm Mt No Nos Vol vs Inc "
             "Co Corp Ltd Bros Messrs Prof Rev Ft Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec".split())


def sentence_ends(w, nx):
    """lib/ruler.c's sentence rule"""
    while w and (w[-1] in "\"')]\u201d\u2019"):
        w = w[:-1]
    if not w or w[-1] not in ".!?":
        return False
    nx = nx.lstrip("\"'([\u201c\u2018")
    if not nx or not (nx[0].isascii() and (nx[0].isupper() or nx[0].isdigit())):
        return False
    if w[-1] != ".":
        return True
    s = w.lstrip("\"'([")[:-1]
    return not (len(s) <= 1 or "." in s or s in ABBREV)


def sent_tokenize(text):
    words = text.split()
    out, cur = [], []
    for i, w in enumerate(words):
        cur.append(w)
        if i + 1 < len(words) and sentence_ends(w, words[i + 1]):
            out.append(" ".join(cur))
            cur = []
    if cur:
        out.append(" ".join(cur))
    return out


def install_stubs():
    from tokenizers import Tokenizer
    tk = Tokenizer.from_file(TOK)

    class Tok:
        def text_to_tokens(self, text):
            return tk.encode(text, add_special_tokens=False).tokens

    mod = types.ModuleType("tokenizer")
    mod.select_tokenizer = lambda *a, **k: Tok()
    sys.modules["tokenizer"] = mod
    nltk = types.ModuleType("nltk")
    nltk.tokenize = types.ModuleType("nltk.tokenize")
    nltk.tokenize.sent_tokenize = sent_tokenize
    nltk.data = types.SimpleNamespace(find=lambda *a: True)
    nltk.download = lambda *a: True
    sys.modules["nltk"], sys.modules["nltk.tokenize"] = nltk, nltk.tokenize
    for name in ["nemo", "nemo.collections", "nemo.collections.asr", "nemo.collections.asr.parts",
                 "nemo.collections.asr.parts.utils", "nemo.collections.asr.parts.utils.manifest_utils"]:
        sys.modules[name] = types.ModuleType(name)
    sys.modules["nemo.collections.asr.parts.utils.manifest_utils"].read_manifest = None
    sys.modules["nemo.collections.asr.parts.utils.manifest_utils"].write_manifest = None
    sys.modules.setdefault("pandas", types.ModuleType("pandas"))


def essay_text():
    try:
        import zstandard
        raw = zstandard.ZstdDecompressor().stream_reader(open(SOTU, "rb")).read()
    except ImportError:
        raw = subprocess.run(["zstd", "-dc", SOTU], capture_output=True, check=True).stdout
    docs = [json.loads(l)["text"] for l in raw.decode("utf-8").splitlines() if l.strip()]
    return "\n".join(docs[-12:])


def load(path, name, argv):
    sys.argv = [path] + argv
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    logging.disable(logging.CRITICAL)
    return m


# --------------------------------------------------------------------------
# skeletons: the same rules as tests/test_ruler.c

def spans(prompt, task_tpl):
    """each context: after the template's text before {context} (from its
    last field on), up to the first 5 characters after {context}"""
    pre, post = task_tpl.split("{context}")
    pre = pre[pre.rfind("}") + 1:]
    out, at = [], 0
    while True:
        i = prompt.find(pre, at)
        if i < 0:
            return out
        b = i + len(pre)
        e = prompt.find(post[:5], b)
        out.append((b, e))
        at = e


def skeleton(prompt, sp, subst):
    for b, e in reversed(sp):
        prompt = prompt[:b] + "<CONTEXT>" + prompt[e:]
    for s, ph in sorted(subst, key=lambda x: -len(x[0])):
        prompt = prompt.replace(s, ph)
    return prompt


def numbered(text):
    """'1. a 2. b c 3. d' -> ['a', 'b c', 'd']: entries cut at ' N. ' for the next N"""
    out, i, at = [], 1, 0
    if not text.startswith("1. "):
        return out
    at = 3
    while True:
        sep = f" {i + 1}. "
        j = text.find(sep, at)
        if j < 0:
            out.append(text[at:])
            return out
        out.append(text[at:j])
        at = j + len(sep)
        i += 1


def kind(a):
    if re.fullmatch(r"[0-9]{7}", a): return "num7"
    if re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", a): return "uuid4"
    if re.fullmatch(r"[A-Z]{5}", a): return "upper5"
    if re.fullmatch(r"[a-z]{6}", a): return "lower6"
    return "word"


def counts_desc(words):
    c = {}
    for w in words:
        c[w] = c.get(w, 0) + 1
    return sorted(c.values(), reverse=True), max(c, key=c.get)


def make_sample(R, tasks_yaml, TASKS, Templates, task, L, mt, essay_dir):
    cfg = dict(tasks_yaml[task])
    base = TASKS[cfg["task"]]
    # prepare.py: model_template.format(task_template=task_template) + answer_prefix
    template = (mt if mt else Templates["base"]).format(task_template=base["template"]) + base["answer_prefix"]
    argv = ["--save_dir", "x", "--save_name", task, "--tokenizer_path", TOK, "--tokenizer_type", "hf",
            "--max_seq_length", str(L), "--tokens_to_generate", str(base["tokens_to_generate"]),
            "--num_samples", "1", "--random_seed", "42", "--template", template]
    for k, v in cfg["args"].items():
        argv += [f"--{k}", str(v)]
    synth = os.path.join(R, "scripts/data/synthetic")
    script = os.path.join(synth, cfg["task"] + ".py")
    rec = {"task": task, "max_seq_length": L, "model_template": mt}
    if cfg["task"] == "niah":
        m = load(script, f"niah_{task}_{L}", argv)
        log, last = [], {}
        orig_rand, orig_gio = m.generate_random, m.generate_input_output

        def rand(t):
            v = orig_rand(t)
            log.append(v)
            return v

        def gio(n):
            log.clear()
            r = orig_gio(n)
            last.update(n=n, log=list(log))
            return r
        m.generate_random, m.generate_input_output = rand, gio
        out = m.generate_samples(num_samples=1, max_seq_length=L, save_dir=None)[0]
        nk, nv = m.args.num_needle_k, m.args.num_needle_v
        keys = [last["log"][i * (1 + nv)] for i in range(nk)]
        values = [last["log"][i * (1 + nv) + 1 + j] for i in range(nk) for j in range(nv)]
        subst = [(k, "<KEY>") for k in keys] + [(v, "<VALUE>") for v in values]
        ans_ph = [("<VALUE>") for _ in out["outputs"]]
    elif cfg["task"] == "variable_tracking":
        m = load(script, f"vt_{task}_{L}", argv)
        last = {}
        orig_gc, orig_gio = m.generate_chains, m.generate_input_output

        def gc(*a, **k):
            r = orig_gc(*a, **k)
            last["chains"] = r
            return r

        def gio(n, *a, **k):
            last["n"] = n
            return orig_gio(n, *a, **k)
        m.generate_chains, m.generate_input_output = gc, gio
        icl = m.sys_vartrack_w_noise_random(num_samples=1, max_seq_length=500, incremental=5,
                                            num_chains=m.args.num_chains, num_hops=m.args.num_hops)[0]
        rec["icl_num_haystack"] = last["n"]
        out = m.sys_vartrack_w_noise_random(num_samples=1, max_seq_length=L, num_chains=m.args.num_chains,
                                            num_hops=m.args.num_hops, icl_example=icl, final_output=True)[0]
        vars_, chains = last["chains"]
        value = chains[0][0].split("=")[-1].strip()
        full = out["input"] + out["answer_prefix"]
        cut = full.index(TASKS["variable_tracking"]["template"][:20])
        cut = full.index(TASKS["variable_tracking"]["template"][:20], cut + 1)  # the task's, after the example's
        icl_part = full[:cut]
        icl_vars = icl_part.strip().split()[-len(vars_[0]):]
        icl_value = re.search(r"VAR [A-Z]{3} = (\d+)", icl_part).group(1)
        keys = vars_[0] + icl_vars
        subst = [(k, "<KEY>") for k in keys] + [(value, "<VALUE>"), (icl_value, "<VALUE>")]
        ans_ph = ["<KEY>" for _ in out["outputs"]]
    elif cfg["task"] == "common_words_extraction":
        m = load(script, f"cwe_{task}_{L}", argv)
        last = {}
        orig = m.generate_input_output

        def gio(n):
            last["n"] = n
            return orig(n)
        m.generate_input_output = gio
        out = m.sys_word_pair_random(num_samples=1, max_seq_length=L, save_dir=None)[0]
        subst = []
        ans_ph = ["<KEY>" for _ in out["outputs"]]
    else:
        m = load(script, f"fwe_{task}_{L}", argv)
        last = {}
        orig = m.generate_input_output

        def gio(*a, **k):
            r = orig(*a, **k)
            last["n"] = r[2]
            return r
        m.generate_input_output = gio
        out = m.sys_kwext(num_samples=1, max_seq_length=L, incremental=10)[0]
        subst = []
        ans_ph = ["<KEY>" for _ in out["outputs"]]

    prompt = out["input"] + out["answer_prefix"]
    sp = spans(prompt, base["template"])
    rec["answer_prefix"] = out["answer_prefix"]
    rec["num_haystack"] = last["n"]
    rec["length"] = out["length"]
    rec["tokens_to_generate"] = base["tokens_to_generate"]
    rec["answers"] = ans_ph
    rec["answer_kinds"] = [kind(a) for a in out["outputs"]]
    ctx = [prompt[b:e] for b, e in sp]
    if cfg["task"] == "common_words_extraction":
        # the example's answer: after the first answer prefix, up to the newline
        ap = base["answer_prefix"]
        i = prompt.find(ap) + len(ap)
        j = prompt.find("\n", i)
        ex_words = numbered(prompt[i + 1:j])
        rec["example_answer"] = " " + " ".join(f"{n + 1}. <KEY>" for n in range(len(ex_words)))
        prompt = prompt[:i] + " <ANSWER>" + prompt[j:]
        sp = spans(prompt, base["template"])
        rec["cwe_counts"] = [counts_desc(numbered(c))[0] for c in ctx]
        rec["cwe_example_answer_in_list"] = all(w in numbered(ctx[0]) for w in ex_words)
        rec["cwe_answers_are_top"] = sorted(out["outputs"]) == sorted(
            w for w, n in [(w, numbered(ctx[1]).count(w)) for w in set(numbered(ctx[1]))]
            if n == rec["cwe_counts"][1][0])
    if cfg["task"] == "freq_words_extraction":
        words = ctx[0].split(" ")
        cnt, top = counts_desc(words)
        rec["fwe_counts"], rec["fwe_top"] = cnt, top
        rec["fwe_vocab_used"] = len(cnt)
        rec["fwe_answers_ranks"] = [cnt.index(words.count(a)) + 1 for a in out["outputs"]]
    rec["skeleton"] = skeleton(prompt, sp, subst)
    rec["answer_prefix_skeleton"] = skeleton(out["answer_prefix"], [], subst)
    # needle sentences, in skeleton form
    if cfg["task"] == "niah":
        c = ctx[0]
        nd = []
        for v in values:
            i = c.find(" is: " + v + ".")
            b = c.rfind("One of the special magic", 0, i)
            nd.append(skeleton(c[b:i + len(v) + 6], [], subst))
        rec["needles"] = sorted(nd)
        lines = c.split("\n")
        if m.args.type_haystack == "noise":
            rec["noise_lines"] = sum(l == m.haystack for l in lines)
            rec["lines_are_noise_or_needles"] = all(l == m.haystack or "One of the special magic" in l for l in lines)
        if m.args.type_haystack == "needle":
            rec["needle_lines"] = len(lines)
    if cfg["task"] == "variable_tracking":
        lines = ctx[1].split("\n")
        rec["needles"] = [skeleton(l, [], subst) for l in lines if l.startswith("VAR ")]
        rec["noise_lines"] = sum(l == m.haystack for l in lines)
        rec["icl_needles"] = [skeleton(l, [], subst) for l in ctx[0].split("\n") if l.startswith("VAR ")]
    return rec


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RULER")
    with tempfile.TemporaryDirectory() as tmp:
        R, rev = fetch_ruler(src, tmp)
        essay = essay_text()
        os.makedirs(os.path.join(R, "scripts/data/synthetic/json"), exist_ok=True)
        json.dump({"text": essay}, open(os.path.join(R, "scripts/data/synthetic/json/PaulGrahamEssays.json"), "w"))
        # english_words.json is a Git LFS file; RULER reads it only past the
        # wonderwords' 8166 words, which no setting here reaches
        json.dump({}, open(os.path.join(R, "scripts/data/synthetic/json/english_words.json"), "w"))
        install_stubs()
        sys.path.insert(0, os.path.join(R, "scripts/data/synthetic"))
        sys.path.insert(1, os.path.join(R, "scripts/data"))
        import yaml
        tasks_yaml = yaml.safe_load(open(os.path.join(R, "scripts/synthetic.yaml")))
        TASKS = load(os.path.join(R, "scripts/data/synthetic/constants.py"), "gen_constants", []).TASKS
        Templates = load(os.path.join(R, "scripts/data/template.py"), "templates", []).Templates
        samples = []
        for task, L, mt in SETTINGS:
            print(f"make_ruler_ref: {task} {L} {'chat' if mt else 'base'}", file=sys.stderr)
            samples.append(make_sample(R, tasks_yaml, TASKS, Templates, task, L, mt, None))

        # scoring
        ev = load(os.path.join(R, "scripts/eval/evaluate.py"), "evaluate", ["--data_dir", tmp])
        metrics = load(os.path.join(R, "scripts/eval/synthetic/constants.py"), "eval_constants", [])
        cases = [
            ("1234567", ["1234567"]), ("The special magic number is 1234567.", ["1234567"]),
            ("7654321", ["1234567"]), ("", ["1234567"]), ("   \n\t  ", ["x"]),
            ("1234567 and 2345678", ["1234567", "2345678", "3456789", "4567890"]),
            ("ABCDE, FGHIJ, klmno", ["ABCDE", "FGHIJ", "KLMNO", "PQRST", "UVWXY"]),
            ("Tender-Bag", ["tender-bag"]), ("TENDER-BAG", ["tender-bag"]),
            ("1234\x00567", ["1234567"]), ("1234\n567", ["1234567"]), ("\x01\x02 1234567 \x1f", ["1234567"]),
            ("abc\x1bdef", ["abc\ndef"]), ("abc\x1bdef", ["abc def"]),
            ("\u00a0\u2003 answer \u3000", ["answer"]), ("a\u00a0b", ["a b"]),
            ("\u212aelvin", ["kelvin"]), ("\u0130stanbul", ["istanbul"]), ("ÉCOLE", ["école"]),
            ("1. apple 2. pear 3. plum", ["apple", "pear", "plum", "fig"]),
            (" Answer: qwerty, asdfgh and zxcvbn.", ["qwerty", "asdfgh", "zxcvbn"]),
            ("Sure! The answer is 98765. Let me know if you need anything else.", ["98765"]),
            ("\x7f1234567\x7f", ["1234567"]), ("x", ["", "y"]),
        ]
        scores = []
        for metric in ["string_match_all", "string_match_part"]:
            fn = getattr(metrics, metric)
            one = [fn([ev.postprocess_pred(p, {})], [r]) for p, r in cases]
            allp = fn([ev.postprocess_pred(p, {}) for p, _ in cases], [r for _, r in cases])
            scores.append({"metric": metric, "each": one, "all": allp})
        post = [ev.postprocess_pred(p, {}) for p, _ in cases]
        ref = {"ruler_commit": rev, "tokenizer": "data/qwen2.5/tokenizer.json",
               "essay": "data/text/sotu.jsonl.zst, the last 12 documents joined by newlines",
               "samples": samples,
               "cases": [{"pred": p.replace("\x00", "\x01"), "refs": r, "post": q} for (p, r), q in zip(cases, post)],
               "scores": scores}
        os.makedirs(os.path.dirname(OUT), exist_ok=True)
        with open(OUT, "w") as f:
            json.dump(ref, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print(f"make_ruler_ref: wrote {OUT} (RULER {rev})", file=sys.stderr)


if __name__ == "__main__":
    main()
