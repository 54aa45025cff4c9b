/*
 * ruler: the RULER long-context tasks (NVIDIA/RULER, scripts/data/synthetic
 * at c3f5e3b), generated and scored as RULER does, in C.
 *
 * What is RULER's, kept exactly: the task table of scripts/synthetic.yaml
 * (niah_single_1/2/3, niah_multikey_1/2/3, niah_multivalue, niah_multiquery,
 * vt, cwe, fwe), the template and answer-prefix text of
 * scripts/data/synthetic/constants.py, the needle sentence, the noise
 * haystack sentence, the singular rewriting of the niah template when one
 * value is asked for (applied, as RULER applies it, to the whole template
 * including the model's chat template), the vt chains ("VAR ABCDE = 12345",
 * "VAR X = VAR Y ") and its one in-context example, the cwe numbered list with
 * its one few-shot example and counts (30x/3x, 6x/1x below 4K), the fwe coded
 * words with zeta(2) counts and "..." for the top rank, the tokens to
 * generate (niah 128, vt 30, cwe 120, fwe 50), the sizing (RULER's binary
 * search over haystack sizes, its increments and its per-sample shrinking,
 * counting tokens with the caller's tokenizer), and the scoring
 * (scripts/eval: postprocess_pred, string_match_all, string_match_part,
 * rounded to 2 decimals).
 *
 * What is ours: the random draws (xoshiro256** seeded from seed, task and
 * sample index, not Python's random/numpy, so samples are not RULER's
 * bit for bit; the same seed gives the same samples on any machine and for
 * every model); the essay haystack (RULER uses Paul Graham's essays; the
 * caller passes real text, for eval-ruler the State of the Union addresses
 * of data/text/sotu.jsonl.zst); the sentence splitter for the essay haystack
 * (RULER uses nltk's punkt; ours ends a sentence after . ! ? when the next
 * word starts with a capital or a digit, except after common abbreviations
 * and initials); the word lists (wonderwords 3.0.1's, copied into
 * data/words, as RULER loads them). The keys of a sample are distinct,
 * distractor keys of the needle haystack are drawn again when they equal a
 * real key, and vt variable names are distinct (RULER leaves these to
 * chance).
 *
 * Not run: qa_1 (SQuAD dev v2.0) and qa_2 (HotpotQA dev distractor). RULER
 * downloads them; no package on the registries we may use ships them
 * (checked PyPI: squaddata has no data, aviary-hotpotqa loads it at run
 * time), so ruler_task() knows them but ruler_gen_new() dies on them.
 *
 * Model templates: RULER wraps the task template in a model template
 * ("{task_template}" marks the place) and then appends the answer prefix;
 * pass chat_prompt(CHAT_QWEN2, "", "{task_template}") for an instruct
 * teacher, NULL for RULER's "base" template. With the default Qwen system
 * prompt the singular rewriting turns its "You are" into "You is", as RULER
 * would (tests/data/ruler/ref.json shows it); an empty system prompt avoids
 * that.
 */
#ifndef DASH_RULER_H
#define DASH_RULER_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h" // defines: Tokenizer, tokenizer_encode

typedef enum { RULER_NIAH, RULER_VT, RULER_CWE, RULER_FWE, RULER_QA } RulerKind;
typedef enum { RULER_MATCH_ALL, RULER_MATCH_PART } RulerMetric;
typedef enum { RULER_HAY_NOISE, RULER_HAY_ESSAY, RULER_HAY_NEEDLE } RulerHaystack;
typedef enum { RULER_WORDS, RULER_NUMBERS, RULER_UUIDS } RulerNeedleType;

/* one row of RULER's scripts/synthetic.yaml */
typedef struct {
	const char *name;       /* "niah_single_1" */
	RulerKind kind;
	RulerMetric metric;
	int tokens_to_generate; /* RULER's per-task limit */
	int runnable;           /* 0: qa_1/qa_2, not run here */
	/* niah */
	RulerHaystack haystack;
	RulerNeedleType type_k, type_v;
	int num_k, num_v, num_q; /* keys, values per key, queried keys */
	/* vt */
	int num_chains, num_hops;
	/* cwe */
	int freq_cw, freq_ucw, num_cw;
	/* fwe */
	double alpha;
} RulerTask;

extern const RulerTask ruler_tasks[]; /* the 13 tasks of config_tasks.sh, in its order */
extern const int ruler_ntasks;
/* ruler_task returns the task called name, or NULL */
const RulerTask *ruler_task(const char *name);

typedef struct {
	const Tokenizer *tok;       /* counts the tokens of prompts (required) */
	int max_seq_length;         /* prompt + generated tokens, e.g. 4096 */
	uint64_t seed;              /* RULER's default is 42 */
	const char *model_template; /* with "{task_template}"; NULL: RULER's "base" */
	const char *essay;          /* the essay haystack's text (niah essay tasks) */
	size_t essay_len;
	const char *words_dir;      /* adjectivelist.txt, nounlist.txt, verblist.txt; NULL: data/words */
	int num_haystack;           /* > 0: this haystack size, no search (tests) */
} RulerOpts;

/* one generated example */
typedef struct {
	char *prompt;             /* what the model reads: model template around the task text, then the answer prefix */
	size_t answer_prefix_at;  /* prompt[answer_prefix_at..] is RULER's answer_prefix, the rest its "input" */
	char **answers;           /* [nanswers] RULER's "outputs" */
	int nanswers;
	int tokens_to_generate;
	int length;               /* prompt tokens + tokens_to_generate (RULER's "length") */
	int num_haystack;         /* haystack units used: noise lines, essay words, needle lines, list words */
	/* what was hidden, for checks and diagnostics */
	char **needles;           /* [nneedles] niah needles, vt chain lines (in chain order) */
	size_t *needle_at;        /* [nneedles] byte offsets in prompt */
	double *needle_depth;     /* [nneedles] essay: the depth drawn (percent of the sentences); else the line's place (percent) */
	int nneedles;
	char **keys;              /* [nkeys] niah: the needles' keys (not the distractors'); vt: chain names, then the example's; cwe: common words, then the example's; fwe: the answers */
	int nkeys;
	char **values;            /* [nvalues] niah: every value; vt: the chain value, then the example's */
	int nvalues;
	size_t span_at[2], span_len[2]; /* the contexts in prompt (vt, cwe: example first, then the task's) */
	int nspans;
} RulerSample;

typedef struct RulerGen RulerGen;

/* ruler_gen_new prepares a task at opts->max_seq_length: it loads the word
 * lists, splits the essay into sentences and finds the haystack size as
 * RULER does (the largest whose prompt + generated tokens fit). It dies on
 * an unknown or not-run task, or when the task needs what is missing. */
RulerGen *ruler_gen_new(const RulerTask *task, const RulerOpts *opts);
void ruler_gen_free(RulerGen *g);
int ruler_gen_haystack(const RulerGen *g); /* the size the search found */

/* ruler_gen_sample makes example `index`: a function of (seed, task, index)
 * only. It shrinks the haystack by RULER's increment while the prompt does
 * not fit. */
void ruler_gen_sample(RulerGen *g, int index, RulerSample *s);
void ruler_sample_free(RulerSample *s);

/* ---------------------------------------------------------------------------
 * scoring, as scripts/eval/evaluate.py and scripts/eval/synthetic/constants.py */

/* ruler_postprocess returns pred stripped of whitespace (Python's str.strip
 * set, Unicode included), with every byte 0x01-0x1f made '\n', stripped
 * again (malloc'd). pred is a C string: pass a NUL byte of a decoded answer
 * as '\n', which is what RULER makes of it. */
char *ruler_postprocess(const char *pred);

/* ruler_score_one is one example's share: string_match_all gives the
 * fraction of refs found in pred, string_match_part 1 if any is; case is
 * ignored (Python's str.lower(); exact for ASCII references, simple Unicode
 * case mapping otherwise). pred is used as it is. */
double ruler_score_one(RulerMetric metric, const char *pred, char *const *refs, int nrefs);

/* ruler_score is RULER's task score: the mean of ruler_score_one over n
 * postprocessed predictions, x100, rounded to 2 decimals as Python's round()
 * does. refs[i] has nrefs[i] strings. */
double ruler_score(RulerMetric metric, const char *const *preds, char *const *const *refs, const int *nrefs,
                   int n);

#endif
