/*
 * ruler: RULER's synthetic tasks and scoring (see ruler.h for what follows
 * RULER exactly and what is ours). The generators follow the shape of
 * RULER's scripts/data/synthetic/{niah,variable_tracking,
 * common_words_extraction,freq_words_extraction}.py: build one example for a
 * haystack size, search the size, shrink per sample while it does not fit.
 */
#include "ruler.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "util.h" // defines: die, mallocCheck, reallocCheck, strdupCheck, read_file, path_join

// ----------------------------------------------------------------------------
// RULER's text (scripts/data/synthetic/constants.py, niah.py)

static const char NIAH_TEMPLATE[] =
	"Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
	"I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic "
	"{type_needle_v} for {query} mentioned in the provided text?";
static const char NIAH_PREFIX[] = " The special magic {type_needle_v} for {query} mentioned in the provided text are";
static const char VT_TEMPLATE[] =
	"Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
	"Question: Find all variables that are assigned the value {query} in the text above.";
static const char VT_PREFIX[] = " Answer: According to the chain(s) of variable assignment in the text above, {num_v} "
	"variables are assigned the value {query}, they are: ";
static const char CWE_TEMPLATE[] =
	"Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones "
	"that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?";
static const char CWE_PREFIX[] = " Answer: The top 10 words that appear most often in the list are:";
static const char FWE_TEMPLATE[] =
	"Read the following coded text and track the frequency of each coded word. Find the three most frequently "
	"appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. "
	"What are the three most frequently appeared words in the above coded text?";
static const char FWE_PREFIX[] = " Answer: According to the coded text above, the three most frequently appeared words are:";
static const char NEEDLE[] = "One of the special magic {type_needle_v} for {key} is: {value}.";
static const char NOISE[] = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

// ----------------------------------------------------------------------------
// the task table: scripts/synthetic.yaml, in the order of config_tasks.sh

#define NIAH(name, hay, k, v, nk, nv, nq) \
	{ name, RULER_NIAH, RULER_MATCH_ALL, 128, 1, hay, k, v, nk, nv, nq, 0, 0, 0, 0, 0, 0 }
const RulerTask ruler_tasks[] = {
	NIAH("niah_single_1", RULER_HAY_NOISE, RULER_WORDS, RULER_NUMBERS, 1, 1, 1),
	NIAH("niah_single_2", RULER_HAY_ESSAY, RULER_WORDS, RULER_NUMBERS, 1, 1, 1),
	NIAH("niah_single_3", RULER_HAY_ESSAY, RULER_WORDS, RULER_UUIDS, 1, 1, 1),
	NIAH("niah_multikey_1", RULER_HAY_ESSAY, RULER_WORDS, RULER_NUMBERS, 4, 1, 1),
	NIAH("niah_multikey_2", RULER_HAY_NEEDLE, RULER_WORDS, RULER_NUMBERS, 1, 1, 1),
	NIAH("niah_multikey_3", RULER_HAY_NEEDLE, RULER_UUIDS, RULER_UUIDS, 1, 1, 1),
	NIAH("niah_multivalue", RULER_HAY_ESSAY, RULER_WORDS, RULER_NUMBERS, 1, 4, 1),
	NIAH("niah_multiquery", RULER_HAY_ESSAY, RULER_WORDS, RULER_NUMBERS, 1, 1, 4),
	{ "vt", RULER_VT, RULER_MATCH_ALL, 30, 1, RULER_HAY_NOISE, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0 },
	{ "cwe", RULER_CWE, RULER_MATCH_ALL, 120, 1, 0, 0, 0, 0, 0, 0, 0, 0, 30, 3, 10, 0 },
	{ "fwe", RULER_FWE, RULER_MATCH_ALL, 50, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2.0 },
	{ "qa_1", RULER_QA, RULER_MATCH_PART, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
	{ "qa_2", RULER_QA, RULER_MATCH_PART, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
};
const int ruler_ntasks = sizeof ruler_tasks / sizeof ruler_tasks[0];

const RulerTask *ruler_task(const char *name)
{
	for (int i = 0; i < ruler_ntasks; i++)
		if (!strcmp(ruler_tasks[i].name, name))
			return &ruler_tasks[i];
	return NULL;
}

// ----------------------------------------------------------------------------
// strings

typedef struct {
	char *s;
	size_t n, cap;
} Str;

static void str_add(Str *b, const char *p, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		b->cap = (b->n + n + 1) * 2;
		b->s = reallocCheck(b->s, b->cap);
	}
	memcpy(b->s + b->n, p, n);
	b->n += n;
	b->s[b->n] = 0;
}
static void str_puts(Str *b, const char *p) { str_add(b, p, strlen(p)); }
static void str_printf(Str *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void str_printf(Str *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	ASSERT(n >= 0 && (size_t)n < sizeof tmp);
	str_add(b, tmp, (size_t)n);
}
static char *str_take(Str *b)
{
	if (!b->s)
		str_add(b, "", 0);
	char *s = b->s;
	*b = (Str){ 0 };
	return s;
}

/* replace_all returns s with every `from` replaced by `to` (Python's
 * str.replace), malloc'd */
static char *replace_all(const char *s, const char *from, const char *to)
{
	Str b = { 0 };
	size_t fl = strlen(from);
	const char *p;
	while ((p = strstr(s, from))) {
		str_add(&b, s, (size_t)(p - s));
		str_puts(&b, to);
		s = p + fl;
	}
	str_puts(&b, s);
	return str_take(&b);
}

/* format appends tpl to b with each "{name}" replaced by its value (Python's
 * str.format for plain fields); *ctx_at gets where {context} went. */
static void tpl_format(Str *b, const char *tpl, const char *const *names, const char *const *vals, int nf,
                   size_t *ctx_at)
{
	for (const char *p = tpl; *p;) {
		int hit = -1;
		if (*p == '{')
			for (int i = 0; i < nf && hit < 0; i++) {
				size_t l = strlen(names[i]);
				if (!strncmp(p + 1, names[i], l) && p[1 + l] == '}')
					hit = i;
			}
		if (hit < 0) {
			str_add(b, p++, 1);
			continue;
		}
		if (!strcmp(names[hit], "context") && ctx_at)
			*ctx_at = b->n;
		str_puts(b, vals[hit]);
		p += strlen(names[hit]) + 2;
	}
}

// ----------------------------------------------------------------------------
// random numbers: xoshiro256** seeded through splitmix64, integers only, so
// that every machine draws the same

typedef struct {
	uint64_t s[4];
} Rng;

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}
static void rng_seed(Rng *r, uint64_t seed, const char *task, uint64_t stream)
{
	uint64_t x = hash_u64(hash_str(hash_u64(HASH_INIT, seed), task), stream);
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
}
static uint64_t rng_next(Rng *r)
{
	uint64_t *s = r->s, t = s[1] << 17;
	uint64_t res = s[1] * 5;
	res = ((res << 7) | (res >> 57)) * 9;
	s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t;
	s[3] = (s[3] << 45) | (s[3] >> 19);
	return res;
}
/* uniform in [0, n), unbiased */
static uint64_t rng_below(Rng *r, uint64_t n)
{
	ASSERT(n > 0);
	uint64_t lim = -n % n, x;
	while ((x = rng_next(r)) < lim)
		;
	return x % n;
}
/* Fisher-Yates over n pointers */
static void shuffle(Rng *r, void *v, size_t n, size_t size)
{
	char tmp[64], *a = v;
	ASSERT(size <= sizeof tmp);
	for (size_t i = n; i > 1; i--) {
		size_t j = rng_below(r, i);
		memcpy(tmp, a + (i - 1) * size, size);
		memcpy(a + (i - 1) * size, a + j * size, size);
		memcpy(a + j * size, tmp, size);
	}
}
/* k distinct integers of [0, n) in draw order (random.sample(range(n), k)) */
static void sample_distinct(Rng *r, long n, int k, long *out)
{
	ASSERT(k <= n);
	for (int i = 0; i < k; i++) {
		long x;
		int dup;
		do {
			x = (long)rng_below(r, (uint64_t)n);
			dup = 0;
			for (int j = 0; j < i; j++)
				dup |= out[j] == x;
		} while (dup);
		out[i] = x;
	}
}
static int cmp_long_asc(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;
	return (x > y) - (x < y);
}
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// ----------------------------------------------------------------------------
// the generator

typedef struct {
	char **w;
	size_t n;
	char *buf;
} WordList;

struct RulerGen {
	const RulerTask *t;
	RulerOpts o;
	char *tpl;          /* model template around the task template, then the answer prefix */
	char *tpl_bare;     /* the same without the model template (vt's example) */
	const char *prefix; /* the answer prefix's template text */
	TokEncoder *enc;
	IdVec ids;
	WordList adj, noun, cwe; /* cwe: nouns + adjectives + verbs, sorted, unique */
	/* essay: the words of the whitespace-normalised text and, for each,
	 * whether a sentence ends after it (the last word: before the first) */
	char *essay;
	char **ew;
	size_t *ewl, new_;
	unsigned char *eend;
	int num_haystack, incremental;
	/* vt: the example, made once, and its tokens */
	char *icl;
	char *icl_vars[16];
	size_t icl_span_at, icl_span_len;
	int icl_nvars, icl_tokens;
	int fwe_vocab;
};

static int count_tokens(RulerGen *g, const char *text)
{
	g->ids.n = 0;
	tokenizer_encode(g->enc, text, strlen(text), 0, &g->ids);
	return (int)g->ids.n;
}

/* load_words reads one word a line, each rstrip()'d, as wonderwords does */
static void load_words(WordList *l, const char *dir, const char *name)
{
	char *path = path_join(dir, name);
	size_t len;
	l->buf = read_file(path, &len);
	free(path);
	size_t cap = 1024;
	l->w = mallocCheck(cap * sizeof *l->w);
	l->n = 0;
	for (char *p = l->buf; *p;) {
		char *e = strchr(p, '\n'), *next = e ? e + 1 : p + strlen(p);
		if (!e)
			e = p + strlen(p);
		while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
			e--;
		*e = 0;
		if (l->n == cap)
			l->w = reallocCheck(l->w, (cap *= 2) * sizeof *l->w);
		l->w[l->n++] = p;
		p = next;
	}
}

// ----------------------------------------------------------------------------
// the essay haystack: words and sentence ends

static int is_closer(const char *w, size_t *l)
{
	if (*l && strchr("\"')]", w[*l - 1])) {
		(*l)--;
		return 1;
	}
	if (*l >= 3 && (unsigned char)w[*l - 3] == 0xe2 && (unsigned char)w[*l - 2] == 0x80 &&
	    ((unsigned char)w[*l - 1] == 0x9d || (unsigned char)w[*l - 1] == 0x99)) {
		*l -= 3;
		return 1;
	}
	return 0;
}

/* sentence_ends says whether a sentence ends after word w (wl bytes) when
 * word nx follows: w ends in . ! or ? (before closing quotes or brackets),
 * nx starts with a capital or a digit (after opening ones), and a final
 * period is not that of an abbreviation, an initial or a dotted word
 * ("U.S."). Our rule, standing in for RULER's nltk punkt. */
static int sentence_ends(const char *w, size_t wl, const char *nx)
{
	static const char *abbrev[] = { "Mr", "Mrs", "Ms", "Dr", "St", "Jr", "Sr", "Gen", "Gov", "Sen", "Rep",
		"Reps", "Hon", "Pres", "Lt", "Col", "Capt", "Maj", "Sgt", "Adm", "Mt", "No", "Nos", "Vol", "vs",
		"Inc", "Co", "Corp", "Ltd", "Bros", "Messrs", "Prof", "Rev", "Ft", "Jan", "Feb", "Mar", "Apr", "Jun",
		"Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec" };
	while (is_closer(w, &wl))
		;
	if (!wl || !strchr(".!?", w[wl - 1]))
		return 0;
	while (*nx && strchr("\"'([", *nx))
		nx++;
	if ((unsigned char)nx[0] == 0xe2 && (unsigned char)nx[1] == 0x80 &&
	    ((unsigned char)nx[2] == 0x9c || (unsigned char)nx[2] == 0x98))
		nx += 3;
	if (!((*nx >= 'A' && *nx <= 'Z') || (*nx >= '0' && *nx <= '9')))
		return 0;
	if (w[wl - 1] != '.')
		return 1;
	size_t b = 0;
	while (b < wl && strchr("\"'([", w[b]))
		b++;
	const char *s = w + b;
	size_t sl = wl - 1 - b;
	if (sl <= 1 || memchr(s, '.', sl))
		return 0;
	for (size_t i = 0; i < sizeof abbrev / sizeof *abbrev; i++)
		if (strlen(abbrev[i]) == sl && !memcmp(abbrev[i], s, sl))
			return 0;
	return 1;
}

static int py_space(int32_t c);

/* space_at gives the length of the whitespace character at p (Python's \s
 * in a str pattern, Unicode included), 0 if there is none */
static size_t space_at(const char *p)
{
	int32_t c;
	utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)p, 4, &c);
	return *p && k > 0 && py_space(c) ? (size_t)k : 0;
}

/* essay_init splits the text at whitespace runs (RULER: re.sub(r'\s+', " ",
 * essay).split(" ")) and marks the sentence ends, the last word against the
 * first because RULER repeats the essay when it is short. */
static void essay_init(RulerGen *g, const char *text, size_t n)
{
	g->essay = mallocCheck(n + 1);
	memcpy(g->essay, text, n);
	g->essay[n] = 0;
	size_t cap = 1024, nw = 0;
	g->ew = mallocCheck(cap * sizeof *g->ew);
	g->ewl = mallocCheck(cap * sizeof *g->ewl);
	for (char *p = g->essay; *p;) {
		size_t k;
		while ((k = space_at(p)))
			p += k;
		if (!*p)
			break;
		char *e = p;
		while (*e && !space_at(e))
			e++;
		if (nw == cap) {
			cap *= 2;
			g->ew = reallocCheck(g->ew, cap * sizeof *g->ew);
			g->ewl = reallocCheck(g->ewl, cap * sizeof *g->ewl);
		}
		g->ew[nw] = p, g->ewl[nw++] = (size_t)(e - p);
		p = e;
	}
	if (nw < 2)
		die("ruler: the essay haystack has fewer than 2 words");
	g->new_ = nw;
	g->eend = mallocCheck(nw);
	for (size_t i = 0; i < nw; i++)
		g->eend[i] = (unsigned char)sentence_ends(g->ew[i], g->ewl[i], g->ew[(i + 1) % nw]);
}

// ----------------------------------------------------------------------------
// a sample under construction

static void push_str(char ***v, int *n, const char *s, size_t len)
{
	*v = reallocCheck(*v, (size_t)(*n + 1) * sizeof **v);
	char *c = mallocCheck(len + 1);
	memcpy(c, s, len);
	c[len] = 0;
	(*v)[(*n)++] = c;
}
static void push(char ***v, int *n, const char *s) { push_str(v, n, s, strlen(s)); }
static void push_needle(RulerSample *s, const char *text, size_t at, double depth)
{
	push(&s->needles, &s->nneedles, text);
	s->needle_at = reallocCheck(s->needle_at, (size_t)s->nneedles * sizeof *s->needle_at);
	s->needle_depth = reallocCheck(s->needle_depth, (size_t)s->nneedles * sizeof *s->needle_depth);
	s->needle_at[s->nneedles - 1] = at;
	s->needle_depth[s->nneedles - 1] = depth;
}

void ruler_sample_free(RulerSample *s)
{
	free(s->prompt);
	for (int i = 0; i < s->nanswers; i++)
		free(s->answers[i]);
	for (int i = 0; i < s->nneedles; i++)
		free(s->needles[i]);
	for (int i = 0; i < s->nkeys; i++)
		free(s->keys[i]);
	for (int i = 0; i < s->nvalues; i++)
		free(s->values[i]);
	free(s->answers), free(s->needles), free(s->needle_at), free(s->needle_depth), free(s->keys),
		free(s->values);
	*s = (RulerSample){ 0 };
}

/* the answer prefix starts at the last occurrence of its template's first
 * 10 characters (RULER: input_text.rfind(answer_prefix[:10])) */
static size_t prefix_at(const char *prompt, const char *prefix)
{
	size_t n = strlen(prompt), k = strlen(prefix) < 10 ? strlen(prefix) : 10;
	for (size_t i = n >= k ? n - k + 1 : 0; i-- > 0;)
		if (!strncmp(prompt + i, prefix, k))
			return i;
	return n;
}

// ----------------------------------------------------------------------------
// niah

static void draw(RulerGen *g, Rng *r, RulerNeedleType type, Str *out)
{
	out->n = 0;
	if (type == RULER_NUMBERS) { /* random.randint(10**6, 10**7 - 1) */
		str_printf(out, "%d", 1000000 + (int)rng_below(r, 9000000));
	} else if (type == RULER_WORDS) { /* an adjective-noun of wonderwords */
		str_puts(out, g->adj.w[rng_below(r, g->adj.n)]);
		str_puts(out, "-");
		str_puts(out, g->noun.w[rng_below(r, g->noun.n)]);
	} else { /* uuid4: 122 random bits, version 4, variant RFC 4122 */
		uint64_t hi = rng_next(r), lo = rng_next(r);
		hi = (hi & ~0xf000ULL) | 0x4000ULL;
		lo = (lo & ~(3ULL << 62)) | (2ULL << 62);
		str_printf(out, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(hi >> 32), (unsigned)(hi >> 16) & 0xffff,
		           (unsigned)hi & 0xffff, (unsigned)(lo >> 48), (unsigned long long)(lo & 0xffffffffffffULL));
	}
}

static const char *type_name(RulerNeedleType t)
{
	return t == RULER_NUMBERS ? "numbers" : t == RULER_WORDS ? "words" : "uuids";
}

static void niah_needle(Str *b, const char *type_v, const char *key, const char *value)
{
	const char *names[] = { "type_needle_v", "key", "value" }, *vals[] = { type_v, key, value };
	tpl_format(b, NEEDLE, names, vals, 3, NULL);
}

/* the 40 depths of RULER: np.round(np.linspace(0, 100, 40)) (no ties) */
static int depth_of(int i) { return (int)floor(100.0 * i / 39 + 0.5); }

static void niah_build(RulerGen *g, Rng *r, int n, RulerSample *s)
{
	const RulerTask *t = g->t;
	int nk = t->num_k > t->num_q ? t->num_k : t->num_q, nv = t->num_v, m = nk * nv;
	const char *tv = type_name(t->type_v);
	Str tmp = { 0 }, b = { 0 };
	char **needles = NULL;
	int nneedles = 0;
	for (int i = 0; i < nk; i++) {
		int dup;
		do { /* distinct keys */
			draw(g, r, t->type_k, &tmp);
			dup = 0;
			for (int j = 0; j < s->nkeys; j++)
				dup |= !strcmp(s->keys[j], tmp.s);
		} while (dup);
		push(&s->keys, &s->nkeys, tmp.s);
		for (int j = 0; j < nv; j++) {
			draw(g, r, t->type_v, &tmp);
			push(&s->values, &s->nvalues, tmp.s);
			b.n = 0;
			niah_needle(&b, tv, s->keys[i], tmp.s);
			push(&needles, &nneedles, b.s);
		}
	}
	shuffle(r, needles, (size_t)m, sizeof *needles);

	/* the context, with each needle's offset in it and its depth */
	Str ctx = { 0 };
	size_t *at = mallocCheck((size_t)m * sizeof *at);
	double *dep = mallocCheck((size_t)m * sizeof *dep);
	if (t->haystack == RULER_HAY_ESSAY) {
		/* the first n words (repeated when short), split into sentences */
		long S = 0;
		for (long i = 0; i < n; i++)
			S += i == n - 1 || g->eend[i % g->new_];
		long di[40], pos[42];
		sample_distinct(r, 40, m, di);
		qsort(di, (size_t)m, sizeof *di, cmp_long_asc);
		pos[0] = 0, pos[m + 1] = S;
		for (int i = 0; i < m; i++) {
			dep[i] = depth_of((int)di[i]);
			pos[i + 1] = (long)((double)S * (dep[i] / 100.0));
		}
		/* " ".join(chunk, needle, chunk, ..., chunk), chunks of sentences,
		 * empty ones included as RULER joins them */
		long w = 0, sent = 0;
		for (int i = 1; i < m + 2; i++) {
			if (i > 1)
				str_puts(&ctx, " ");
			int first = 1;
			while (sent < pos[i]) { /* one sentence */
				for (;;) {
					size_t k = (size_t)(w % (long)g->new_);
					if (!first)
						str_puts(&ctx, " ");
					first = 0;
					str_add(&ctx, g->ew[k], g->ewl[k]);
					w++;
					if (w == n || g->eend[k])
						break;
				}
				sent++;
			}
			if (i - 1 < m) {
				str_puts(&ctx, " ");
				at[i - 1] = ctx.n;
				str_puts(&ctx, needles[i - 1]);
			}
		}
	} else {
		/* n lines of noise or distractor needles; the needles inserted at
		 * random.sample(range(n), m), in descending order */
		int nl = n + m;
		char **lines = mallocCheck((size_t)nl * sizeof *lines);
		char **owned = callocCheck((size_t)n, sizeof *owned);
		for (int i = 0; i < n; i++) {
			if (t->haystack == RULER_HAY_NOISE) {
				lines[i] = (char *)NOISE;
				continue;
			}
			Str k = { 0 }, v = { 0 };
			int dup;
			do {
				draw(g, r, t->type_k, &k);
				dup = 0;
				for (int j = 0; j < s->nkeys; j++)
					dup |= !strcmp(s->keys[j], k.s);
			} while (dup);
			draw(g, r, t->type_v, &v);
			b.n = 0;
			niah_needle(&b, tv, k.s, v.s);
			owned[i] = lines[i] = strdupCheck(b.s);
			free(k.s), free(v.s);
		}
		long idx[64];
		ASSERT(m <= 64);
		sample_distinct(r, n, m, idx);
		qsort(idx, (size_t)m, sizeof *idx, cmp_long_asc);
		int cur = n;
		for (int j = 0; j < m; j++) { /* needles[j] at idx[m-1-j], the largest first */
			long p = idx[m - 1 - j];
			memmove(lines + p + 1, lines + p, (size_t)(cur - p) * sizeof *lines);
			lines[p] = needles[j];
			cur++;
		}
		for (int i = 0, j = 0; i < nl; i++) {
			if (i)
				str_puts(&ctx, "\n");
			for (int q = 0; q < m; q++)
				if (lines[i] == needles[q]) {
					/* needles[] order is text order after this loop */
					char *tmpn = needles[j];
					needles[j] = needles[q], needles[q] = tmpn;
					at[j] = ctx.n, dep[j] = 100.0 * i / nl;
					j++;
					break;
				}
			str_puts(&ctx, lines[i]);
		}
		for (int i = 0; i < n; i++)
			free(owned[i]);
		free(owned), free(lines);
	}

	/* the query: random.sample(range(nk), q), answers in query order */
	long qi[64];
	sample_distinct(r, nk, t->num_q, qi);
	Str query = { 0 };
	for (int i = 0; i < t->num_q; i++) {
		if (i)
			str_puts(&query, i == t->num_q - 1 ? ", and " : ", ");
		str_puts(&query, s->keys[qi[i]]);
		for (int j = 0; j < nv; j++)
			push(&s->answers, &s->nanswers, s->values[qi[i] * nv + j]);
	}
	if (!query.s)
		str_puts(&query, "");

	/* one value asked for: RULER makes the whole template singular */
	char *tpl = strdupCheck(g->tpl);
	char tvs[16];
	snprintf(tvs, sizeof tvs, "%s", tv);
	if (t->num_q * t->num_v == 1) {
		static const char *rep[][2] = { { "Some", "A" }, { "are all", "is" }, { "are", "is" },
			{ "answers", "answer" } };
		for (int i = 0; i < 4; i++) {
			char *x = replace_all(tpl, rep[i][0], rep[i][1]);
			free(tpl);
			tpl = x;
		}
		tvs[strlen(tvs) - 1] = 0;
	}
	const char *names[] = { "type_needle_v", "context", "query" }, *vals[] = { tvs, ctx.s, query.s };
	Str out = { 0 };
	size_t cat = 0;
	tpl_format(&out, tpl, names, vals, 3, &cat);
	s->prompt = str_take(&out);
	s->nspans = 1, s->span_at[0] = cat, s->span_len[0] = ctx.n;
	for (int i = 0; i < m; i++)
		push_needle(s, needles[i], cat + at[i], dep[i]);
	s->num_haystack = n;
	for (int i = 0; i < m; i++)
		free(needles[i]);
	free(needles), free(at), free(dep), free(tpl), free(ctx.s), free(query.s), free(tmp.s), free(b.s);
}

// ----------------------------------------------------------------------------
// vt

static void random_upper(Rng *r, int k, char *out)
{
	for (int i = 0; i < k; i++)
		out[i] = (char)('A' + rng_below(r, 26));
	out[k] = 0;
}

/* vt_build is RULER's generate_input_output for the noise haystack: one
 * chain of num_hops + 1 distinct names (3 letters and value 12345 in the
 * example, 5 letters and a value in [10000, 99999) otherwise) inserted in
 * order among n noise lines. */
static void vt_build(RulerGen *g, Rng *r, int n, int is_icl, RulerSample *s)
{
	const RulerTask *t = g->t;
	int k = is_icl ? 3 : 5, hops = is_icl && t->num_hops > 10 ? 10 : t->num_hops, nc = t->num_chains;
	int nvar = nc * (hops + 1);
	char (*vars)[8] = mallocCheck((size_t)nvar * sizeof *vars);
	for (int i = 0; i < nvar; i++) {
		int dup;
		do {
			random_upper(r, k, vars[i]);
			dup = 0;
			for (int j = 0; j < i; j++)
				dup |= !strcmp(vars[i], vars[j]);
		} while (dup);
	}
	char value[16], cvalue[16];
	/* the lines: noise, and each chain's lines at sorted random positions
	 * (each shifted by the chain lines before it) */
	int nl = n + nvar, cur = n;
	char **lines = mallocCheck((size_t)nl * sizeof *lines);
	int *chain_line = mallocCheck((size_t)nl * sizeof *chain_line);
	for (int i = 0; i < n; i++)
		lines[i] = (char *)NOISE, chain_line[i] = -1;
	char **cl = mallocCheck((size_t)nvar * sizeof *cl);
	for (int c = 0; c < nc; c++) {
		long pos[64];
		ASSERT(hops + 1 <= 64);
		if (is_icl)
			snprintf(cvalue, sizeof cvalue, "12345");
		else /* np.random.randint(10000, 99999) */
			snprintf(cvalue, sizeof cvalue, "%d", 10000 + (int)rng_below(r, 89999));
		if (c == 0) /* the query is the first chain's value */
			memcpy(value, cvalue, sizeof value);
		for (int j = 0; j <= hops; j++) {
			Str l = { 0 };
			const char *v = vars[c * (hops + 1) + j];
			if (j == 0)
				str_printf(&l, "VAR %s = %s", v, cvalue);
			else
				str_printf(&l, "VAR %s = VAR %s ", v, vars[c * (hops + 1) + j - 1]);
			cl[c * (hops + 1) + j] = str_take(&l);
		}
		sample_distinct(r, cur, hops + 1, pos);
		qsort(pos, (size_t)hops + 1, sizeof *pos, cmp_long_asc);
		for (int j = 0; j <= hops; j++) {
			long p = pos[j] + j;
			memmove(lines + p + 1, lines + p, (size_t)(cur - p) * sizeof *lines);
			memmove(chain_line + p + 1, chain_line + p, (size_t)(cur - p) * sizeof *chain_line);
			lines[p] = cl[c * (hops + 1) + j], chain_line[p] = c * (hops + 1) + j;
			cur++;
		}
	}
	Str ctx = { 0 };
	size_t *at = mallocCheck((size_t)nvar * sizeof *at);
	for (int i = 0; i < nl; i++) {
		if (i)
			str_puts(&ctx, "\n");
		if (chain_line[i] >= 0)
			at[chain_line[i]] = ctx.n;
		str_puts(&ctx, lines[i]);
	}
	/* context.replace(". \n", ".\n") changes nothing here: no line ends in ". " */
	char num_v[16];
	snprintf(num_v, sizeof num_v, "%d", hops + 1);
	const char *names[] = { "context", "query", "num_v" }, *vals[] = { ctx.s, value, num_v };
	Str out = { 0 };
	size_t cat = 0;
	tpl_format(&out, is_icl ? g->tpl_bare : g->tpl, names, vals, 3, &cat);
	s->prompt = str_take(&out);
	s->nspans = 1, s->span_at[0] = cat, s->span_len[0] = ctx.n;
	for (int i = 0; i < nvar; i++) {
		push_needle(s, cl[i], cat + at[i], 100.0 * (double)(at[i]) / (double)(ctx.n ? ctx.n : 1));
		push(&s->keys, &s->nkeys, vars[i]);
	}
	for (int j = 0; j <= hops; j++)
		push(&s->answers, &s->nanswers, vars[j]);
	push(&s->values, &s->nvalues, value);
	s->num_haystack = n;
	for (int i = 0; i < nvar; i++)
		free(cl[i]);
	free(cl), free(vars), free(lines), free(chain_line), free(at), free(ctx.s);
}

/* vt_icl makes RULER's in-context example once: the largest noise count
 * (from 5, step 5) whose bare template fits 500 tokens, then input + " " +
 * the names + "\n". */
static void vt_icl(RulerGen *g)
{
	Rng r;
	rng_seed(&r, g->o.seed, g->t->name, 0xffffffff01ULL);
	int inc = 5, maxlen = 500;
	RulerSample s = { 0 };
	vt_build(g, &r, inc, 1, &s);
	double tph = (double)count_tokens(g, s.prompt) / inc;
	ruler_sample_free(&s);
	int lo = inc, hi = (int)((maxlen / tph) * 3), best = -1;
	if (hi < inc * 2)
		hi = inc * 2;
	while (lo <= hi) {
		int mid = (lo + hi) / 2;
		vt_build(g, &r, mid, 1, &s);
		int tot = count_tokens(g, s.prompt);
		ruler_sample_free(&s);
		if (tot <= maxlen)
			best = mid, lo = mid + 1;
		else
			hi = mid - 1;
	}
	int n = best > 0 ? best : inc;
	for (;;) {
		vt_build(g, &r, n, 1, &s);
		if (count_tokens(g, s.prompt) <= maxlen || n <= inc)
			break;
		ruler_sample_free(&s);
		n -= inc;
	}
	Str b = { 0 };
	str_puts(&b, s.prompt);
	for (int j = 0; j < s.nanswers; j++) {
		str_puts(&b, " ");
		str_puts(&b, s.answers[j]);
	}
	str_puts(&b, "\n");
	g->icl = str_take(&b);
	g->icl_nvars = s.nanswers;
	ASSERT(g->icl_nvars <= 16);
	for (int j = 0; j < s.nanswers; j++)
		g->icl_vars[j] = strdupCheck(s.answers[j]);
	g->icl_span_at = s.span_at[0], g->icl_span_len = s.span_len[0];
	g->icl_tokens = count_tokens(g, g->icl);
	ruler_sample_free(&s);
}

/* vt_sample builds the task's prompt and puts a randomized copy of the
 * example before the task template (RULER's randomize_icl: each name
 * replaced everywhere by new random letters, then 12345 by a new value). */
static void vt_sample(RulerGen *g, Rng *r, int n, RulerSample *s)
{
	vt_build(g, r, n, 0, s);
	char *icl = strdupCheck(g->icl);
	char **newv = mallocCheck((size_t)g->icl_nvars * sizeof *newv);
	for (int j = 0; j < g->icl_nvars; j++) {
		char nv[16];
		random_upper(r, (int)strlen(g->icl_vars[j]), nv);
		char *x = replace_all(icl, g->icl_vars[j], nv);
		free(icl);
		icl = x;
		newv[j] = strdupCheck(nv);
	}
	char val[16];
	snprintf(val, sizeof val, "%d", 10000 + (int)rng_below(r, 89999));
	char *x = replace_all(icl, "12345", val);
	free(icl);
	icl = x;
	/* insert at the task template's first 20 characters */
	char head[21];
	memcpy(head, VT_TEMPLATE, 20);
	head[20] = 0;
	char *p = strstr(s->prompt, head);
	ASSERT(p);
	size_t cut = (size_t)(p - s->prompt), il = strlen(icl);
	Str b = { 0 };
	str_add(&b, s->prompt, cut);
	str_puts(&b, icl);
	str_puts(&b, "\n");
	str_puts(&b, p);
	free(s->prompt);
	s->prompt = str_take(&b);
	for (int i = 0; i < s->nneedles; i++)
		if (s->needle_at[i] >= cut)
			s->needle_at[i] += il + 1;
	s->span_at[1] = s->span_at[0] + (s->span_at[0] >= cut ? il + 1 : 0), s->span_len[1] = s->span_len[0];
	s->span_at[0] = cut + g->icl_span_at, s->span_len[0] = g->icl_span_len;
	s->nspans = 2;
	for (int j = 0; j < g->icl_nvars; j++) {
		push(&s->keys, &s->nkeys, newv[j]);
		free(newv[j]);
	}
	push(&s->values, &s->nvalues, val);
	free(newv), free(icl);
}

// ----------------------------------------------------------------------------
// cwe

/* cwe_list draws num distinct words, repeats the first ncw cr times and the
 * rest ur times, shuffles them and writes "1. w 2. w ..." to ctx; common
 * gets the first ncw */
static void cwe_list(RulerGen *g, Rng *r, int num, int cr, int ur, int ncw, Str *ctx, char ***common, int *ncommon)
{
	if ((size_t)num > g->cwe.n)
		die("ruler: cwe needs %d distinct words, data/words has %zu (RULER switches to a larger list "
		    "there, not copied here)", num, g->cwe.n);
	long *idx = mallocCheck(g->cwe.n * sizeof *idx);
	for (size_t i = 0; i < g->cwe.n; i++)
		idx[i] = (long)i;
	for (int i = 0; i < num; i++) { /* partial Fisher-Yates: random.sample */
		size_t j = (size_t)i + rng_below(r, g->cwe.n - (size_t)i);
		long tmp = idx[i];
		idx[i] = idx[j], idx[j] = tmp;
	}
	size_t total = (size_t)ncw * (size_t)cr + (size_t)(num - ncw) * (size_t)ur;
	long *list = mallocCheck((total ? total : 1) * sizeof *list);
	size_t k = 0;
	for (int i = 0; i < ncw && i < num; i++)
		for (int c = 0; c < cr; c++)
			list[k++] = idx[i];
	for (int i = ncw; i < num; i++)
		for (int c = 0; c < ur; c++)
			list[k++] = idx[i];
	shuffle(r, list, k, sizeof *list);
	for (size_t i = 0; i < k; i++)
		str_printf(ctx, "%s%zu. %s", i ? " " : "", i + 1, g->cwe.w[list[i]]);
	if (!ctx->s)
		str_puts(ctx, "");
	for (int i = 0; i < ncw && i < num; i++)
		push(common, ncommon, g->cwe.w[idx[i]]);
	free(idx), free(list);
}

static void cwe_build(RulerGen *g, Rng *r, int n, RulerSample *s)
{
	const RulerTask *t = g->t;
	int small = g->o.max_seq_length < 4096;
	int ex_n = small ? 20 : 40, ex_cr = small ? 3 : 10, ex_ur = small ? 1 : 3;
	int cr = small ? 6 : t->freq_cw, ur = small ? 1 : t->freq_ucw;
	char num_cw[16];
	snprintf(num_cw, sizeof num_cw, "%d", t->num_cw);
	/* the example: the whole template, then " 1. a 2. b ... 10. j" */
	Str ectx = { 0 }, ctx = { 0 }, out = { 0 };
	char **ecommon = NULL;
	int necommon = 0;
	cwe_list(g, r, ex_n, ex_cr, ex_ur, t->num_cw, &ectx, &ecommon, &necommon);
	const char *names[] = { "num_cw", "context", "query" }, *ev[] = { num_cw, ectx.s, "" };
	size_t eat = 0, cat = 0;
	tpl_format(&out, g->tpl, names, ev, 3, &eat);
	str_puts(&out, " ");
	for (int i = 0; i < necommon; i++)
		str_printf(&out, "%s%d. %s", i ? " " : "", i + 1, ecommon[i]);
	str_puts(&out, "\n");
	cwe_list(g, r, n, cr, ur, t->num_cw, &ctx, &s->answers, &s->nanswers);
	const char *cv[] = { num_cw, ctx.s, "" };
	tpl_format(&out, g->tpl, names, cv, 3, &cat);
	s->prompt = str_take(&out);
	s->nspans = 2;
	s->span_at[0] = eat, s->span_len[0] = ectx.n;
	s->span_at[1] = cat, s->span_len[1] = ctx.n;
	for (int i = 0; i < s->nanswers; i++)
		push(&s->keys, &s->nkeys, s->answers[i]);
	for (int i = 0; i < necommon; i++) {
		push(&s->keys, &s->nkeys, ecommon[i]);
		free(ecommon[i]);
	}
	s->num_haystack = n;
	free(ecommon), free(ectx.s), free(ctx.s);
}

// ----------------------------------------------------------------------------
// fwe

#define ZETA2 1.6449340668482264 /* scipy.special.zeta(2.0) */

/* fwe_build: a vocabulary of distinct 6-letter coded words, shuffled, the
 * first made "..."; word k (1-based) appears int(n * k^-alpha / zeta(alpha))
 * times; the words shuffled and joined by spaces. The answer: ranks 2-4. */
static void fwe_build(RulerGen *g, Rng *r, int n, RulerSample *s)
{
	int V = g->fwe_vocab, wl = 6;
	double zeta = ZETA2; /* alpha 2.0, the only one in RULER's table */
	ASSERT(g->t->alpha == 2.0);
	char (*voc)[8] = mallocCheck((size_t)V * sizeof *voc);
	for (int i = 0; i < V; i++) {
		int dup;
		do {
			for (int c = 0; c < wl; c++)
				voc[i][c] = (char)('a' + rng_below(r, 26));
			voc[i][wl] = 0;
			dup = 0;
			for (int j = 0; j < i && !dup; j++)
				dup = !strcmp(voc[i], voc[j]);
		} while (dup);
	}
	shuffle(r, voc, (size_t)V, sizeof *voc);
	snprintf(voc[0], sizeof voc[0], "...");
	size_t total = 0;
	long *cnt = mallocCheck((size_t)V * sizeof *cnt);
	for (int k = 1; k <= V; k++) {
		cnt[k - 1] = (long)((double)n * pow((double)k, -g->t->alpha) / zeta);
		total += (size_t)cnt[k - 1];
	}
	int *list = mallocCheck((total ? total : 1) * sizeof *list);
	size_t m = 0;
	for (int k = 0; k < V; k++)
		for (long c = 0; c < cnt[k]; c++)
			list[m++] = k;
	shuffle(r, list, m, sizeof *list);
	Str ctx = { 0 }, out = { 0 };
	for (size_t i = 0; i < m; i++) {
		if (i)
			str_puts(&ctx, " ");
		str_puts(&ctx, voc[list[i]]);
	}
	if (!ctx.s)
		str_puts(&ctx, "");
	const char *names[] = { "context", "query" }, *vals[] = { ctx.s, "" };
	size_t cat = 0;
	tpl_format(&out, g->tpl, names, vals, 2, &cat);
	s->prompt = str_take(&out);
	s->nspans = 1, s->span_at[0] = cat, s->span_len[0] = ctx.n;
	for (int k = 1; k < 4 && k < V; k++) {
		push(&s->answers, &s->nanswers, voc[k]);
		push(&s->keys, &s->nkeys, voc[k]);
	}
	s->num_haystack = n;
	free(voc), free(cnt), free(list), free(ctx.s);
}

// ----------------------------------------------------------------------------
// sizing and samples

static void build(RulerGen *g, Rng *r, int n, RulerSample *s)
{
	*s = (RulerSample){ 0 };
	switch (g->t->kind) {
	case RULER_NIAH: niah_build(g, r, n, s); break;
	case RULER_VT: vt_sample(g, r, n, s); break;
	case RULER_CWE: cwe_build(g, r, n, s); break;
	case RULER_FWE: fwe_build(g, r, n, s); break;
	default: BUG("task %s", g->t->name);
	}
}

/* a probe's tokens; vt counts its example apart, and not in the first
 * probe that estimates tokens per unit (RULER's sample_tokens) */
static int probe_tokens(RulerGen *g, Rng *r, int n, int with_icl)
{
	RulerSample s = { 0 };
	int tok;
	if (g->t->kind == RULER_VT) {
		vt_build(g, r, n, 0, &s);
		tok = count_tokens(g, s.prompt) + (with_icl ? g->icl_tokens : 0);
	} else {
		build(g, r, n, &s);
		tok = count_tokens(g, s.prompt);
	}
	ruler_sample_free(&s);
	return tok;
}

/* search_size is RULER's binary search: from a probe of `est` units it
 * guesses an upper bound, then finds the largest size whose prompt +
 * generated tokens fit; `inc` when none does. */
static int search_size(RulerGen *g, Rng *r, int inc, int est, int cwe_style)
{
	int max = g->o.max_seq_length, ttg = g->t->tokens_to_generate;
	double tph = (double)probe_tokens(g, r, est, 0) / est;
	int hi = cwe_style ? (int)floor(max / tph) * 2 : (int)((max / tph) * 3), lo = inc, best = -1;
	if (hi < inc * 2)
		hi = inc * 2;
	while (lo <= hi) {
		int mid = (lo + hi) / 2;
		int fits = !(cwe_style && (size_t)mid > g->cwe.n) && probe_tokens(g, r, mid, 1) + ttg <= max;
		if (fits)
			best = mid, lo = mid + 1;
		else
			hi = mid - 1;
	}
	if (cwe_style && best >= (int)g->cwe.n - inc)
		die("ruler: cwe at %d tokens needs more than the %zu words of data/words", max, g->cwe.n);
	return best > 0 ? best : inc;
}

/* fwe_size is RULER's fwe search: grow from max_len/6 words by max_len/32
 * until the prompt reaches max_len tokens, then step back once */
static int fwe_size(RulerGen *g, Rng *r)
{
	int maxlen = g->o.max_seq_length - g->t->tokens_to_generate, n = maxlen / 6;
	while (probe_tokens(g, r, n, 0) < maxlen)
		n += g->incremental;
	return n - g->incremental;
}

RulerGen *ruler_gen_new(const RulerTask *t, const RulerOpts *o)
{
	if (!t)
		die("ruler: no such task");
	if (!t->runnable)
		die("ruler: task '%s' is not run here (its data set is not available)", t->name);
	if (!o->tok || o->max_seq_length <= t->tokens_to_generate)
		die("ruler: task '%s' needs a tokenizer and a max_seq_length above %d", t->name,
		    t->tokens_to_generate);
	RulerGen *g = callocCheck(1, sizeof *g);
	g->t = t, g->o = *o;
	g->enc = tok_encoder_new(o->tok);
	const char *dir = o->words_dir ? o->words_dir : "data/words";
	const char *task_tpl = t->kind == RULER_NIAH ? NIAH_TEMPLATE
	                       : t->kind == RULER_VT ? VT_TEMPLATE
	                       : t->kind == RULER_CWE ? CWE_TEMPLATE
	                                              : FWE_TEMPLATE;
	g->prefix = t->kind == RULER_NIAH ? NIAH_PREFIX
	            : t->kind == RULER_VT ? VT_PREFIX
	            : t->kind == RULER_CWE ? CWE_PREFIX
	                                   : FWE_PREFIX;
	/* prepare.py: model_template.format(task_template=...) + answer_prefix */
	const char *mt = o->model_template ? o->model_template : "{task_template}";
	if (!strstr(mt, "{task_template}"))
		die("ruler: the model template has no {task_template}");
	char *x = replace_all(mt, "{task_template}", task_tpl);
	Str b = { 0 };
	str_puts(&b, x);
	str_puts(&b, g->prefix);
	g->tpl = str_take(&b);
	free(x);
	str_puts(&b, task_tpl);
	str_puts(&b, g->prefix);
	g->tpl_bare = str_take(&b);

	Rng r;
	rng_seed(&r, o->seed, t->name, 0xffffffff00ULL);
	int max = o->max_seq_length;
	switch (t->kind) {
	case RULER_NIAH:
		if (t->type_k == RULER_WORDS || t->type_v == RULER_WORDS) {
			load_words(&g->adj, dir, "adjectivelist.txt");
			load_words(&g->noun, dir, "nounlist.txt");
		}
		if (t->haystack == RULER_HAY_ESSAY) {
			if (!o->essay)
				die("ruler: task '%s' needs an essay haystack", t->name);
			essay_init(g, o->essay, o->essay_len);
		}
		g->incremental = t->haystack == RULER_HAY_ESSAY ? 500 : max < 4096 ? 5 : 25;
		g->num_haystack = o->num_haystack > 0 ? o->num_haystack
		                                      : search_size(g, &r, g->incremental, g->incremental, 0);
		break;
	case RULER_VT:
		vt_icl(g);
		g->incremental = max < 4096 ? 5 : 10;
		g->num_haystack = o->num_haystack > 0 ? o->num_haystack
		                                      : search_size(g, &r, g->incremental, g->incremental, 0);
		break;
	case RULER_CWE: {
		WordList a, n, v;
		load_words(&n, dir, "nounlist.txt");
		load_words(&a, dir, "adjectivelist.txt");
		load_words(&v, dir, "verblist.txt");
		/* sorted(set(nouns + adjs + verbs)) */
		size_t tot = n.n + a.n + v.n;
		g->cwe.w = mallocCheck(tot * sizeof *g->cwe.w);
		size_t bytes = 0;
		WordList *ls[] = { &n, &a, &v };
		for (int i = 0; i < 3; i++)
			for (size_t j = 0; j < ls[i]->n; j++)
				bytes += strlen(ls[i]->w[j]) + 1;
		g->cwe.buf = mallocCheck(bytes);
		char *p = g->cwe.buf;
		for (int i = 0; i < 3; i++)
			for (size_t j = 0; j < ls[i]->n; j++) {
				strcpy(p, ls[i]->w[j]);
				g->cwe.w[g->cwe.n++] = p;
				p += strlen(p) + 1;
			}
		qsort(g->cwe.w, g->cwe.n, sizeof *g->cwe.w, cmp_str);
		size_t u = 0;
		for (size_t i = 0; i < g->cwe.n; i++)
			if (!u || strcmp(g->cwe.w[u - 1], g->cwe.w[i]))
				g->cwe.w[u++] = g->cwe.w[i];
		g->cwe.n = u;
		for (int i = 0; i < 3; i++)
			free(ls[i]->w), free(ls[i]->buf);
		g->incremental = 10;
		g->num_haystack = o->num_haystack > 0 ? o->num_haystack : search_size(g, &r, 10, 4096, 1);
		break;
	}
	case RULER_FWE:
		g->fwe_vocab = (max - t->tokens_to_generate) / 50;
		if (g->fwe_vocab < 4)
			die("ruler: fwe needs max_seq_length >= %d", 4 * 50 + t->tokens_to_generate);
		g->incremental = (max - t->tokens_to_generate) / 32;
		g->num_haystack = o->num_haystack > 0 ? o->num_haystack : fwe_size(g, &r);
		break;
	default: BUG("task %s", t->name);
	}
	return g;
}

int ruler_gen_haystack(const RulerGen *g) { return g->num_haystack; }

void ruler_gen_sample(RulerGen *g, int index, RulerSample *s)
{
	Rng r;
	rng_seed(&r, g->o.seed, g->t->name, (uint64_t)index);
	int ttg = g->t->tokens_to_generate, n = g->num_haystack, inc = g->incremental;
	int limit = g->t->kind == RULER_FWE ? g->o.max_seq_length - ttg : g->o.max_seq_length;
	for (;;) {
		build(g, &r, n, s);
		int tok = count_tokens(g, s->prompt);
		s->length = tok + ttg;
		if ((g->t->kind == RULER_FWE ? tok : s->length) <= limit || n <= inc)
			break;
		ruler_sample_free(s);
		n -= inc;
	}
	s->tokens_to_generate = ttg;
	s->answer_prefix_at = prefix_at(s->prompt, g->prefix);
}

void ruler_gen_free(RulerGen *g)
{
	if (!g)
		return;
	free(g->tpl), free(g->tpl_bare);
	tok_encoder_free(g->enc);
	idvec_free(&g->ids);
	free(g->adj.w), free(g->adj.buf), free(g->noun.w), free(g->noun.buf), free(g->cwe.w), free(g->cwe.buf);
	free(g->essay), free(g->ew), free(g->ewl), free(g->eend);
	free(g->icl);
	for (int i = 0; i < g->icl_nvars; i++)
		free(g->icl_vars[i]);
	free(g);
}

// ----------------------------------------------------------------------------
// scoring

/* Python's str.isspace() code points, which strip() removes */
static int py_space(int32_t c)
{
	return (c >= 9 && c <= 13) || (c >= 28 && c <= 32) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
	       (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
	       c == 0x3000;
}

/* strip_range narrows [*b, *e) of s past Python whitespace at both ends */
static void strip_range(const char *s, size_t *b, size_t *e)
{
	while (*b < *e) {
		int32_t c;
		utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + *b, (utf8proc_ssize_t)(*e - *b), &c);
		if (k <= 0 || !py_space(c))
			break;
		*b += (size_t)k;
	}
	while (*e > *b) {
		size_t p = *e - 1;
		while (p > *b && ((unsigned char)s[p] & 0xc0) == 0x80 && *e - p < 4)
			p--;
		int32_t c;
		utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + p, (utf8proc_ssize_t)(*e - p), &c);
		if (k <= 0 || (size_t)k != *e - p || !py_space(c))
			break;
		*e = p;
	}
}

char *ruler_postprocess(const char *pred)
{
	size_t b = 0, e = strlen(pred);
	strip_range(pred, &b, &e);
	char *s = mallocCheck(e - b + 1);
	for (size_t i = b; i < e; i++)
		s[i - b] = (unsigned char)pred[i] < 0x20 ? '\n' : pred[i];
	s[e - b] = 0;
	size_t b2 = 0, e2 = e - b;
	strip_range(s, &b2, &e2);
	memmove(s, s + b2, e2 - b2);
	s[e2 - b2] = 0;
	return s;
}

/* lower: Python's str.lower() for one string (simple case mapping, and
 * U+0130 to "i" + U+0307 as Python's full mapping); invalid bytes kept */
static char *lower(const char *s)
{
	size_t n = strlen(s);
	Str b = { 0 };
	str_add(&b, "", 0);
	for (size_t i = 0; i < n;) {
		int32_t c;
		utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
		if (k <= 0) {
			str_add(&b, s + i, 1);
			i++;
			continue;
		}
		i += (size_t)k;
		if (c == 0x130) {
			str_puts(&b, "i\xcc\x87");
			continue;
		}
		utf8proc_uint8_t enc[4];
		utf8proc_ssize_t el = utf8proc_encode_char(utf8proc_tolower(c), enc);
		str_add(&b, (const char *)enc, (size_t)el);
	}
	return str_take(&b);
}

double ruler_score_one(RulerMetric metric, const char *pred, char *const *refs, int nrefs)
{
	if (nrefs <= 0)
		return 0;
	char *p = lower(pred);
	double hits = 0;
	for (int i = 0; i < nrefs; i++) {
		char *r = lower(refs[i]);
		double h = strstr(p, r) ? 1.0 : 0.0;
		hits = metric == RULER_MATCH_ALL ? hits + h : (h > hits ? h : hits);
		free(r);
	}
	free(p);
	return metric == RULER_MATCH_ALL ? hits / nrefs : hits;
}

double ruler_score(RulerMetric metric, const char *const *preds, char *const *const *refs, const int *nrefs, int n)
{
	if (n <= 0)
		return 0;
	double tot = 0;
	for (int i = 0; i < n; i++) {
		char *p = ruler_postprocess(preds[i]);
		tot += ruler_score_one(metric, p, refs[i], nrefs[i]);
		free(p);
	}
	char buf[64];
	snprintf(buf, sizeof buf, "%.2f", tot / n * 100); /* round(x, 2): correctly rounded, as Python's */
	return strtod(buf, NULL);
}
