/*
 * test_ruler: lib/ruler against NVIDIA/RULER's own generators and scoring
 * (tests/data/ruler/ref.json, made by tests/make_ruler_ref.py), plus checks
 * of our samples that cannot pass by accident: the needles and answers agree,
 * the prompt fits and nearly fills max_seq_length, seeds reproduce.
 *
 * Skeletons (the same rules as make_ruler_ref.py): each context span becomes
 * <CONTEXT>; cwe's example answer (after the first answer prefix, up to the
 * newline) becomes " <ANSWER>"; for niah and vt every key becomes <KEY> and
 * every value <VALUE>, longest first.
 */
#include <cJSON.h>
#include <math.h>
#include <string.h>

#include "ruler.h"     // defines: ruler_gen_new, ruler_gen_sample, ruler_score, ruler_postprocess
#include "test.h"      // defines: test_cond, test_report
#include "textio.h"    // defines: docs_read
#include "tokenizer.h" // defines: tokenizer_load, chat_prompt
#include "util.h"      // defines: read_file, now_seconds

// ----------------------------------------------------------------------------
// skeletons

static char *replace_all(const char *s, const char *from, const char *to)
{
	size_t fl = strlen(from), tl = strlen(to), n = 0;
	for (const char *p = s; (p = strstr(p, from)); p += fl)
		n++;
	char *out = malloc(strlen(s) + n * tl + 1), *o = out;
	const char *p;
	while ((p = strstr(s, from))) {
		memcpy(o, s, (size_t)(p - s));
		o += p - s;
		memcpy(o, to, tl);
		o += tl;
		s = p + fl;
	}
	strcpy(o, s);
	return out;
}

typedef struct {
	const char *s, *ph;
} Subst;
static int cmp_subst(const void *a, const void *b)
{
	size_t x = strlen(((const Subst *)a)->s), y = strlen(((const Subst *)b)->s);
	return (x < y) - (x > y);
}

/* subst_all replaces each string of sub by its placeholder, longest first
 * (a stable order for equal lengths: Python's sorted is stable too) */
static char *subst_all(const char *text, Subst *sub, int n)
{
	/* insertion sort: stable */
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && cmp_subst(&sub[j - 1], &sub[j]) > 0; j--) {
			Subst t = sub[j];
			sub[j] = sub[j - 1], sub[j - 1] = t;
		}
	char *cur = strdup(text);
	for (int i = 0; i < n; i++) {
		char *x = replace_all(cur, sub[i].s, sub[i].ph);
		free(cur);
		cur = x;
	}
	return cur;
}

static int make_subst(const RulerSample *s, int kind, Subst *sub)
{
	int n = 0;
	if (kind != RULER_NIAH && kind != RULER_VT)
		return 0;
	for (int i = 0; i < s->nkeys; i++)
		sub[n++] = (Subst){ s->keys[i], "<KEY>" };
	for (int i = 0; i < s->nvalues; i++)
		sub[n++] = (Subst){ s->values[i], "<VALUE>" };
	return n;
}

static char *skeleton(const RulerSample *s, int kind)
{
	/* regions: the spans, and cwe's example answer */
	size_t rb[3], re[3];
	const char *rp[3];
	int nr = 0;
	for (int i = 0; i < s->nspans; i++)
		rb[nr] = s->span_at[i], re[nr] = s->span_at[i] + s->span_len[i], rp[nr++] = "<CONTEXT>";
	if (kind == RULER_CWE) {
		const char *ap = s->prompt + s->answer_prefix_at, *f = strstr(s->prompt, ap);
		size_t i = (size_t)(f - s->prompt) + strlen(ap);
		const char *nl = strchr(s->prompt + i, '\n');
		rb[nr] = i, re[nr] = (size_t)(nl - s->prompt), rp[nr++] = " <ANSWER>";
	}
	size_t len = strlen(s->prompt);
	char *out = malloc(len + 64), *o = out;
	size_t at = 0;
	for (;;) {
		int next = -1;
		for (int i = 0; i < nr; i++)
			if (rb[i] >= at && (next < 0 || rb[i] < rb[next]))
				next = i;
		size_t upto = next < 0 ? len : rb[next];
		memcpy(o, s->prompt + at, upto - at);
		o += upto - at;
		if (next < 0)
			break;
		strcpy(o, rp[next]);
		o += strlen(rp[next]);
		at = re[next];
	}
	*o = 0;
	Subst sub[64];
	int ns = make_subst(s, kind, sub);
	char *x = subst_all(out, sub, ns);
	free(out);
	return x;
}

/* numbered splits "1. a 2. b c 3. d" at " N. " for the next N */
static int numbered(const char *t, size_t n, char ***out)
{
	char *s = strndup(t, n);
	int cnt = 0, cap = 64;
	*out = malloc((size_t)cap * sizeof **out);
	if (strncmp(s, "1. ", 3)) {
		free(s);
		return 0;
	}
	char *at = s + 3;
	for (int i = 1;; i++) {
		char sep[32];
		snprintf(sep, sizeof sep, " %d. ", i + 1);
		char *j = strstr(at, sep);
		if (cnt == cap)
			*out = realloc(*out, (size_t)(cap *= 2) * sizeof **out);
		if (!j) {
			(*out)[cnt++] = strdup(at);
			break;
		}
		(*out)[cnt++] = strndup(at, (size_t)(j - at));
		at = j + strlen(sep);
	}
	free(s);
	return cnt;
}

/* counts of each distinct string, descending; returns how many */
static int counts_desc(char **w, int n, int *cnt, char **top)
{
	int nd = 0;
	char **d = malloc((size_t)n * sizeof *d);
	for (int i = 0; i < n; i++) {
		int j = 0;
		while (j < nd && strcmp(d[j], w[i]))
			j++;
		if (j == nd)
			d[nd] = w[i], cnt[nd++] = 0;
		cnt[j]++;
	}
	int best = 0;
	for (int i = 1; i < nd; i++)
		if (cnt[i] > cnt[best])
			best = i;
	if (top)
		*top = nd ? d[best] : NULL;
	for (int i = 1; i < nd; i++) /* sort descending */
		for (int j = i; j > 0 && cnt[j] > cnt[j - 1]; j--) {
			int t = cnt[j];
			cnt[j] = cnt[j - 1], cnt[j - 1] = t;
		}
	free(d);
	return nd;
}

static int count_of(char **w, int n, const char *x)
{
	int c = 0;
	for (int i = 0; i < n; i++)
		c += !strcmp(w[i], x);
	return c;
}

static const char *kind_of(const char *a)
{
	size_t n = strlen(a);
	int dig = 1, up = 1, low = 1;
	for (size_t i = 0; i < n; i++)
		dig &= a[i] >= '0' && a[i] <= '9', up &= a[i] >= 'A' && a[i] <= 'Z', low &= a[i] >= 'a' && a[i] <= 'z';
	if (n == 7 && dig)
		return "num7";
	if (n == 36 && a[8] == '-' && a[13] == '-' && a[14] == '4' && a[18] == '-' && strchr("89ab", a[19]) &&
	    a[23] == '-')
		return "uuid4";
	if (n == 5 && up)
		return "upper5";
	if (n == 6 && low)
		return "lower6";
	return "word";
}

static int cmp_strp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int str_array_eq(cJSON *arr, char **v, int n)
{
	if (cJSON_GetArraySize(arr) != n)
		return 0;
	for (int i = 0; i < n; i++)
		if (strcmp(cJSON_GetArrayItem(arr, i)->valuestring, v[i]))
			return 0;
	return 1;
}

// ----------------------------------------------------------------------------
// one setting against RULER's sample

static const Tokenizer *TOK;
static const char *ESSAY;
static size_t ESSAY_LEN;

static void check_setting(cJSON *ref)
{
	const char *name = cJSON_GetObjectItem(ref, "task")->valuestring;
	int L = cJSON_GetObjectItem(ref, "max_seq_length")->valueint;
	cJSON *mtj = cJSON_GetObjectItem(ref, "model_template");
	const char *mt = cJSON_IsString(mtj) ? mtj->valuestring : NULL;
	const RulerTask *t = ruler_task(name);
	char what[160], d[256];
	snprintf(what, sizeof what, "%s %d %s", name, L, mt ? "chat" : "base");
	RulerOpts o = { .tok = TOK, .max_seq_length = L, .seed = 42, .model_template = mt, .essay = ESSAY,
		        .essay_len = ESSAY_LEN };
	RulerGen *g = ruler_gen_new(t, &o);
	RulerSample s;
	ruler_gen_sample(g, 0, &s);

	/* the text around the contexts and needles: RULER's exactly */
	char *sk = skeleton(&s, t->kind);
	const char *rsk = cJSON_GetObjectItem(ref, "skeleton")->valuestring;
	snprintf(d, sizeof d, "%s: prompt skeleton is RULER's", what);
	test_cond(d, !strcmp(sk, rsk));
	if (strcmp(sk, rsk))
		printf("  ours:  %s\n  RULER: %s\n", sk, rsk);
	Subst sub[64];
	int ns = make_subst(&s, t->kind, sub);
	char *apk = subst_all(s.prompt + s.answer_prefix_at, sub, ns);
	snprintf(d, sizeof d, "%s: answer prefix split where RULER splits it", what);
	test_cond(d, !strcmp(apk, cJSON_GetObjectItem(ref, "answer_prefix_skeleton")->valuestring));
	snprintf(d, sizeof d, "%s: tokens to generate %d", what, s.tokens_to_generate);
	test_cond(d, s.tokens_to_generate == t->tokens_to_generate &&
	                     s.tokens_to_generate == cJSON_GetObjectItem(ref, "tokens_to_generate")->valueint);

	/* answers: as many, of the same kinds */
	cJSON *ans = cJSON_GetObjectItem(ref, "answers"), *kinds = cJSON_GetObjectItem(ref, "answer_kinds");
	int ok = cJSON_GetArraySize(ans) == s.nanswers;
	if (t->kind == RULER_NIAH || t->kind == RULER_VT)
		for (int i = 0; ok && i < s.nanswers; i++)
			ok = !strcmp(kind_of(s.answers[i]), cJSON_GetArrayItem(kinds, i)->valuestring);
	snprintf(d, sizeof d, "%s: %d answers of RULER's kinds", what, s.nanswers);
	test_cond(d, ok);

	/* needle sentences and chain lines in skeleton form */
	cJSON *nd = cJSON_GetObjectItem(ref, "needles");
	if (nd) {
		char **sn = malloc((size_t)s.nneedles * sizeof *sn);
		for (int i = 0; i < s.nneedles; i++)
			sn[i] = subst_all(s.needles[i], sub, ns);
		if (t->kind == RULER_NIAH)
			qsort(sn, (size_t)s.nneedles, sizeof *sn, cmp_strp);
		snprintf(d, sizeof d, "%s: %d needles of RULER's form", what, s.nneedles);
		test_cond(d, str_array_eq(nd, sn, s.nneedles));
		for (int i = 0; i < s.nneedles; i++)
			free(sn[i]);
		free(sn);
	}

	/* the haystack size: near the one RULER's search found */
	int rn = cJSON_GetObjectItem(ref, "num_haystack")->valueint, rl = cJSON_GetObjectItem(ref, "length")->valueint;
	/* both may drop one increment in the sample (RULER's per-sample step) */
	int tol = t->kind == RULER_NIAH ? (t->haystack == RULER_HAY_ESSAY ? 600 : L < 4096 ? 8 : 28)
	          : t->kind == RULER_VT ? (L < 4096 ? 8 : 13)
	          : t->kind == RULER_CWE ? 13
	                                 : (L - 50) / 32;
	snprintf(d, sizeof d, "%s: haystack %d (RULER %d), length %d (RULER %d) of %d", what, s.num_haystack, rn,
	         s.length, rl, L);
	test_cond(d, abs(s.num_haystack - rn) <= tol && s.length <= L);

	/* lines of the noise and needle haystacks */
	if (t->kind == RULER_NIAH && t->haystack != RULER_HAY_ESSAY) {
		const char *c = s.prompt + s.span_at[0];
		int lines = 1, noise = 0, other = 0;
		for (size_t i = 0; i < s.span_len[0]; i++)
			lines += c[i] == '\n';
		for (const char *p = c; p < c + s.span_len[0];) {
			const char *e = memchr(p, '\n', (size_t)(c + s.span_len[0] - p));
			if (!e)
				e = c + s.span_len[0];
			if ((size_t)(e - p) == strlen("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.") &&
			    !strncmp(p, "The grass is green.", 19))
				noise++;
			else if (strncmp(p, "One of the special magic", 24))
				other++;
			p = e + 1;
		}
		if (t->haystack == RULER_HAY_NOISE) {
			snprintf(d, sizeof d, "%s: %d noise lines and the needles, nothing else (RULER: %d)", what, noise,
			         cJSON_GetObjectItem(ref, "noise_lines")->valueint);
			test_cond(d, noise == s.num_haystack && other == 0 && lines == noise + s.nneedles &&
			                     cJSON_IsTrue(cJSON_GetObjectItem(ref, "lines_are_noise_or_needles")));
		} else {
			snprintf(d, sizeof d, "%s: %d needle lines (RULER: %d for %d)", what, lines,
			         cJSON_GetObjectItem(ref, "needle_lines")->valueint, rn);
			test_cond(d, lines == s.num_haystack + 1 && other == 0 &&
			                     cJSON_GetObjectItem(ref, "needle_lines")->valueint == rn + 1);
		}
	}
	if (t->kind == RULER_VT) {
		const char *c = s.prompt + s.span_at[1];
		int noise = 0;
		for (const char *p = c; (p = strstr(p, "There and back again.")) && p < c + s.span_len[1]; p++)
			noise++;
		cJSON *icl = cJSON_GetObjectItem(ref, "icl_needles");
		char **sn = malloc(16 * sizeof *sn);
		int n = 0;
		const char *ic = s.prompt + s.span_at[0];
		for (const char *p = ic; p < ic + s.span_len[0];) {
			const char *e = memchr(p, '\n', (size_t)(ic + s.span_len[0] - p));
			if (!e)
				e = ic + s.span_len[0];
			if (!strncmp(p, "VAR ", 4) && n < 16) {
				char *l = strndup(p, (size_t)(e - p));
				sn[n++] = subst_all(l, sub, ns);
				free(l);
			}
			p = e + 1;
		}
		snprintf(d, sizeof d, "%s: %d noise lines (RULER %d); the example's chain is RULER's form", what, noise,
		         cJSON_GetObjectItem(ref, "noise_lines")->valueint);
		test_cond(d, noise == s.num_haystack && str_array_eq(icl, sn, n));
		for (int i = 0; i < n; i++)
			free(sn[i]);
		free(sn);
	}

	/* cwe: the counts of the example and of the list */
	if (t->kind == RULER_CWE) {
		cJSON *rc = cJSON_GetObjectItem(ref, "cwe_counts");
		ok = 1;
		for (int k = 0; k < 2; k++) {
			char **w;
			int n = numbered(s.prompt + s.span_at[k], s.span_len[k], &w);
			int *cnt = malloc((size_t)n * sizeof *cnt), nd2 = counts_desc(w, n, cnt, NULL);
			cJSON *r = cJSON_GetArrayItem(rc, k);
			int rnd = cJSON_GetArraySize(r);
			/* the same two counts, 10 common words; the example as large */
			int rtop = cJSON_GetArrayItem(r, 0)->valueint, rrest = cJSON_GetArrayItem(r, rnd - 1)->valueint;
			for (int i = 0; i < nd2; i++)
				ok &= cnt[i] == (i < 10 ? rtop : rrest);
			ok &= cJSON_GetArrayItem(r, 9)->valueint == rtop && cJSON_GetArrayItem(r, 10)->valueint == rrest;
			if (k == 0)
				ok &= nd2 == rnd;
			if (k == 1) /* the answers are the common words */
				for (int i = 0; i < s.nanswers; i++)
					ok &= count_of(w, n, s.answers[i]) == rtop;
			if (k == 0) /* the example's answer lists its common words */
				for (int i = s.nanswers; i < s.nkeys; i++)
					ok &= count_of(w, n, s.keys[i]) == rtop;
			for (int i = 0; i < n; i++)
				free(w[i]);
			free(w), free(cnt);
		}
		snprintf(d, sizeof d, "%s: example and list counts are RULER's (%dx/%dx)", what,
		         cJSON_GetArrayItem(cJSON_GetArrayItem(rc, 1), 0)->valueint,
		         cJSON_GetArrayItem(cJSON_GetArrayItem(rc, 1), 10)->valueint);
		test_cond(d, ok && cJSON_IsTrue(cJSON_GetObjectItem(ref, "cwe_answers_are_top")) &&
		                     cJSON_IsTrue(cJSON_GetObjectItem(ref, "cwe_example_answer_in_list")));
		const char *ex = cJSON_GetObjectItem(ref, "example_answer")->valuestring;
		snprintf(d, sizeof d, "%s: the example's answer is RULER's numbered list", what);
		const char *ap = s.prompt + s.answer_prefix_at, *f = strstr(s.prompt, ap) + strlen(ap);
		char *ea = strndup(f, (size_t)(strchr(f, '\n') - f)), *eas;
		for (int i = s.nanswers; i < s.nkeys; i++) /* keys after the answers: the example's words */
			sub[i - s.nanswers] = (Subst){ s.keys[i], "<KEY>" };
		eas = subst_all(ea, sub, s.nkeys - s.nanswers);
		test_cond(d, !strcmp(eas, ex));
		free(ea), free(eas);
	}

	/* fwe: zeta counts, "..." on top, answers ranks 2-4 */
	if (t->kind == RULER_FWE) {
		cJSON *rc = cJSON_GetObjectItem(ref, "fwe_counts");
		int rnv = cJSON_GetArraySize(rc);
		ok = 1;
		for (int k = 1; k <= rnv; k++) /* our formula gives RULER's counts for RULER's size */
			ok &= (long)((double)rn * pow((double)k, -2.0) / 1.6449340668482264) ==
			      cJSON_GetArrayItem(rc, k - 1)->valueint;
		snprintf(d, sizeof d, "%s: int(n k^-2 / zeta(2)) is RULER's count for its n = %d", what, rn);
		test_cond(d, ok && (long)((double)rn * pow(rnv + 1.0, -2.0) / 1.6449340668482264) == 0);
		char *ctx = strndup(s.prompt + s.span_at[0], s.span_len[0]);
		int n = 0, cap = 1024;
		char **w = malloc((size_t)cap * sizeof *w);
		for (char *p = strtok(ctx, " "); p; p = strtok(NULL, " ")) {
			if (n == cap)
				w = realloc(w, (size_t)(cap *= 2) * sizeof *w);
			w[n++] = p;
		}
		int *cnt = malloc((size_t)n * sizeof *cnt);
		char *top;
		int nd2 = counts_desc(w, n, cnt, &top);
		ok = !strcmp(top, "...") && !strcmp(cJSON_GetObjectItem(ref, "fwe_top")->valuestring, "...");
		for (int k = 1; k <= nd2; k++)
			ok &= cnt[k - 1] == (long)((double)s.num_haystack * pow((double)k, -2.0) / 1.6449340668482264);
		for (int i = 0; i < s.nanswers; i++)
			ok &= count_of(w, n, s.answers[i]) == cnt[i + 1];
		ok &= cnt[1] > cnt[2] && cnt[2] > cnt[3] && cnt[3] > cnt[4];
		snprintf(d, sizeof d, "%s: ours too (n = %d, %d words used, RULER %d); '...' first, answers ranks 2-4",
		         what, s.num_haystack, nd2, cJSON_GetObjectItem(ref, "fwe_vocab_used")->valueint);
		test_cond(d, ok);
		free(ctx), free(w), free(cnt);
	}

	free(sk), free(apk);
	ruler_sample_free(&s);
	ruler_gen_free(g);
}

// ----------------------------------------------------------------------------
// our own samples: what cannot pass by accident

static void check_own(const char *name, int L)
{
	const RulerTask *t = ruler_task(name);
	char d[256];
	RulerOpts o = { .tok = TOK, .max_seq_length = L, .seed = 7, .essay = ESSAY, .essay_len = ESSAY_LEN };
	RulerGen *g = ruler_gen_new(t, &o);
	TokEncoder *e = tok_encoder_new(TOK);
	IdVec ids = { 0 };
	int fits = 1, full = 1, found = 1, agree = 1, depth = 1, full_ok = 1;
	double minfill = 1;
	for (int i = 0; i < 3; i++) {
		RulerSample s;
		ruler_gen_sample(g, i, &s);
		ids.n = 0;
		tokenizer_encode(e, s.prompt, strlen(s.prompt), 0, &ids);
		fits &= (int)ids.n <= L - t->tokens_to_generate && (int)ids.n + t->tokens_to_generate == s.length;
		/* RULER's sizing leaves at most one increment of haystack units
		 * unused (the search's last probe fit; a sample that does not fit
		 * drops one increment) */
		int inc = t->kind == RULER_NIAH ? (t->haystack == RULER_HAY_ESSAY ? 500 : L < 4096 ? 5 : 25)
		          : t->kind == RULER_VT ? (L < 4096 ? 5 : 10)
		          : t->kind == RULER_CWE ? 10
		                                 : (L - 50) / 32;
		double unit = (double)ids.n / s.num_haystack;
		full_ok &= s.length >= L - (t->kind == RULER_FWE ? 2 : 1) * inc * unit - 64; /* fwe steps back once */
		double fill = (double)s.length / L;
		minfill = fill < minfill ? fill : minfill;
		for (int k = 0; k < s.nneedles; k++)
			found &= !strncmp(s.prompt + s.needle_at[k], s.needles[k], strlen(s.needles[k]));
		if (t->kind == RULER_NIAH) {
			/* each answer is the value of a needle whose key is asked */
			for (int a = 0; a < s.nanswers; a++) {
				int hit = 0;
				for (int k = 0; k < s.nneedles; k++) {
					char end[128];
					snprintf(end, sizeof end, " is: %s.", s.answers[a]);
					const char *p = strstr(s.needles[k], end), *f = strstr(s.needles[k], " for ");
					if (p && f && p[strlen(end)] == 0) {
						char *key = strndup(f + 5, (size_t)(p - f - 5));
						const char *q = strstr(s.prompt + s.answer_prefix_at, key);
						hit |= q != NULL && strstr(s.prompt + s.span_at[0] + s.span_len[0], key) != NULL;
						free(key);
					}
				}
				agree &= hit;
			}
			if (t->haystack == RULER_HAY_ESSAY)
				for (int k = 0; k < s.nneedles; k++) {
					double at = 100.0 * (double)(s.needle_at[k] - s.span_at[0]) / (double)s.span_len[0];
					depth &= fabs(at - s.needle_depth[k]) < 8;
				}
		} else if (t->kind == RULER_VT) {
			/* VAR a0 = value, then VAR a(j+1) = VAR a(j); the value asked */
			char l[64];
			snprintf(l, sizeof l, "VAR %s = %s", s.answers[0], s.values[0]);
			agree &= !strcmp(s.needles[0], l) && strstr(s.prompt + s.answer_prefix_at, s.values[0]) != NULL;
			for (int j = 1; j < s.nanswers; j++) {
				snprintf(l, sizeof l, "VAR %s = VAR %s ", s.answers[j], s.answers[j - 1]);
				agree &= !strcmp(s.needles[j], l) && s.needle_at[j] > s.needle_at[j - 1];
			}
		}
		/* same seed, same sample; another index, another sample */
		RulerSample s2, s3;
		ruler_gen_sample(g, i, &s2);
		ruler_gen_sample(g, i + 100, &s3);
		full &= !strcmp(s.prompt, s2.prompt) && strcmp(s.prompt, s3.prompt);
		ruler_sample_free(&s), ruler_sample_free(&s2), ruler_sample_free(&s3);
	}
	snprintf(d, sizeof d, "%s %d: prompt + %d generated tokens fit", name, L, t->tokens_to_generate);
	test_cond(d, fits);
	snprintf(d, sizeof d, "%s %d: and fill it to one haystack increment (lowest %.3f)", name, L, minfill);
	test_cond(d, full_ok);
	snprintf(d, sizeof d, "%s %d: every needle is in the prompt where recorded", name, L);
	test_cond(d, found);
	snprintf(d, sizeof d, "%s %d: the answers are what the needles say, for the keys asked", name, L);
	test_cond(d, agree);
	if (t->kind == RULER_NIAH && t->haystack == RULER_HAY_ESSAY) {
		snprintf(d, sizeof d, "%s %d: each needle sits at its drawn depth (sentences, within 8%% of the bytes)", name, L);
		test_cond(d, depth);
	}
	snprintf(d, sizeof d, "%s %d: a sample is a function of its index", name, L);
	test_cond(d, full);
	/* another generator, same seed: the same; another seed: another */
	RulerGen *g2 = ruler_gen_new(t, &o);
	o.seed = 8;
	RulerGen *g3 = ruler_gen_new(t, &o);
	RulerSample a, b, c;
	ruler_gen_sample(g, 0, &a), ruler_gen_sample(g2, 0, &b), ruler_gen_sample(g3, 0, &c);
	snprintf(d, sizeof d, "%s %d: the same seed gives the same prompt, another seed another", name, L);
	test_cond(d, !strcmp(a.prompt, b.prompt) && strcmp(a.prompt, c.prompt));
	ruler_sample_free(&a), ruler_sample_free(&b), ruler_sample_free(&c);
	ruler_gen_free(g), ruler_gen_free(g2), ruler_gen_free(g3);
	idvec_free(&ids);
	tok_encoder_free(e);
}

// ----------------------------------------------------------------------------

int main(void)
{
	double t0 = now_seconds();
	size_t len;
	char *js = read_file("tests/data/ruler/ref.json", &len);
	cJSON *ref = cJSON_Parse(js);
	test_cond("ref.json parses", ref != NULL);
	if (!ref)
		return test_report();
	printf("# RULER %s\n", cJSON_GetObjectItem(ref, "ruler_commit")->valuestring);

	/* scoring: postprocess_pred, then each metric one by one and together */
	cJSON *cases = cJSON_GetObjectItem(ref, "cases"), *scores = cJSON_GetObjectItem(ref, "scores");
	int nc = cJSON_GetArraySize(cases), post_ok = 1;
	const char **preds = malloc((size_t)nc * sizeof *preds);
	char ***refs = malloc((size_t)nc * sizeof *refs);
	int *nrefs = malloc((size_t)nc * sizeof *nrefs);
	for (int i = 0; i < nc; i++) {
		cJSON *c = cJSON_GetArrayItem(cases, i), *r = cJSON_GetObjectItem(c, "refs");
		preds[i] = cJSON_GetObjectItem(c, "pred")->valuestring;
		nrefs[i] = cJSON_GetArraySize(r);
		refs[i] = malloc((size_t)nrefs[i] * sizeof **refs);
		for (int j = 0; j < nrefs[i]; j++)
			refs[i][j] = cJSON_GetArrayItem(r, j)->valuestring;
		char *p = ruler_postprocess(preds[i]);
		if (strcmp(p, cJSON_GetObjectItem(c, "post")->valuestring)) {
			post_ok = 0;
			printf("  postprocess case %d: got '%s'\n", i, p);
		}
		free(p);
	}
	test_cond("postprocess_pred: RULER's output on every case", post_ok);
	for (int m = 0; m < 2; m++) {
		cJSON *sc = cJSON_GetArrayItem(scores, m);
		RulerMetric metric = m == 0 ? RULER_MATCH_ALL : RULER_MATCH_PART;
		cJSON *each = cJSON_GetObjectItem(sc, "each");
		int ok = 1;
		for (int i = 0; i < nc; i++) {
			double got = ruler_score(metric, &preds[i], (char *const *const *)&refs[i], &nrefs[i], 1);
			if (got != cJSON_GetArrayItem(each, i)->valuedouble) {
				ok = 0;
				printf("  %s case %d: got %g, RULER %g\n", cJSON_GetObjectItem(sc, "metric")->valuestring, i, got,
				       cJSON_GetArrayItem(each, i)->valuedouble);
			}
		}
		char d[160];
		snprintf(d, sizeof d, "%s: RULER's score on each of %d cases", cJSON_GetObjectItem(sc, "metric")->valuestring,
		         nc);
		test_cond(d, ok);
		double all = ruler_score(metric, preds, (char *const *const *)refs, nrefs, nc);
		snprintf(d, sizeof d, "%s: %.2f over all cases (RULER %.2f)", cJSON_GetObjectItem(sc, "metric")->valuestring,
		         all, cJSON_GetObjectItem(sc, "all")->valuedouble);
		test_cond(d, all == cJSON_GetObjectItem(sc, "all")->valuedouble);
	}

	/* the generator */
	Tokenizer *tok = tokenizer_load(cJSON_GetObjectItem(ref, "tokenizer")->valuestring);
	TOK = tok;
	Docs docs = { 0 };
	docs_read(&docs, "data/text/sotu.jsonl.zst", "text", 0);
	size_t cap = 0;
	for (size_t i = docs.n - 12; i < docs.n; i++)
		cap += docs.len[i] + 1;
	char *essay = malloc(cap + 1), *p = essay;
	for (size_t i = docs.n - 12; i < docs.n; i++) {
		if (i > docs.n - 12)
			*p++ = '\n';
		memcpy(p, docs.text[i], docs.len[i]);
		p += docs.len[i];
	}
	*p = 0;
	ESSAY = essay, ESSAY_LEN = (size_t)(p - essay);

	char *chat = chat_prompt(CHAT_QWEN2, NULL, "{task_template}");
	cJSON *samples = cJSON_GetObjectItem(ref, "samples"), *s;
	cJSON_ArrayForEach(s, samples)
	{
		cJSON *mt = cJSON_GetObjectItem(s, "model_template");
		if (cJSON_IsString(mt))
			test_cond("the chat template is chat_prompt(CHAT_QWEN2, NULL, \"{task_template}\")",
			          !strcmp(mt->valuestring, chat));
		check_setting(s);
	}
	free(chat);
	printf("# RULER's samples checked in %.1f s\n", now_seconds() - t0);

	check_own("niah_single_2", 4096);
	check_own("niah_multikey_1", 4096);
	check_own("niah_multiquery", 2048);
	check_own("niah_multikey_3", 2048);
	check_own("vt", 2048);
	check_own("fwe", 2048);
	check_own("cwe", 2048);

	test_cond("qa_1 and qa_2 are known and marked not run",
	          ruler_task("qa_1") && !ruler_task("qa_1")->runnable && ruler_task("qa_2") &&
	                  !ruler_task("qa_2")->runnable && ruler_ntasks == 13);
	printf("# %.1f s\n", now_seconds() - t0);

	for (int i = 0; i < nc; i++)
		free(refs[i]);
	free(refs), free(nrefs), free(preds), free(essay);
	docs_free(&docs);
	tokenizer_free(tok);
	cJSON_Delete(ref);
	free(js);
	return test_report();
}
