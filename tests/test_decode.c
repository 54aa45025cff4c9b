/* test_decode: the batched decoder (lib/decode.h) against the full forward
 * (model_forward with hybrid_hook) on the tiny fixtures, as the teacher and
 * as hybrids that use every operator (untrained candidates of
 * lop_init_teacher; swa with a window shorter than the prompts). Prompts of
 * different lengths, prefilled in chunks shorter than the prompts. */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "decode.h"
#include "hybrid.h"
#include "linear_op.h"
#include "model.h"
#include "test.h"
#include "util.h"

#define NB 3      /* prompts */
#define MAX_NEW 10
#define WINDOW 6  /* swa, shorter than every prompt */
#define CHUNK 8   /* prefill, shorter than most prompts */

static const int lens[NB] = {7, 19, 33};

/* a hybrid of m with layer l running ops[l] (NULL ops: NULL, the teacher) */
static Hybrid *make_hybrid(const Model *m, const int *ops, int window)
{
	if (!ops)
		return NULL;
	Hybrid *h = callocCheck(1, sizeof *h);
	h->L = m->cfg.L;
	h->ops = mallocCheck((size_t)h->L * sizeof(int32_t));
	h->lop = callocCheck((size_t)h->L, sizeof *h->lop);
	for (int l = 0; l < h->L; l++) {
		h->ops[l] = ops[l];
		h->n_fa += ops[l] == ARCH_FA;
		if (ops[l] == ARCH_FA)
			continue;
		int kind = ops[l] == ARCH_GDN ? LOP_GDN : ops[l] == ARCH_GLA ? LOP_GLA : LOP_SWA;
		lop_init_teacher(&h->lop[l], kind, m, l, 7);
		h->lop[l].window = window;
	}
	return h;
}

/* logits (T, V) of the full forward of ids (T) */
static float *forward_logits(const Model *m, Hybrid *hy, const int32_t *ids, int T)
{
	float *hidden = mallocCheck((size_t)T * m->cfg.C * sizeof(float));
	float *logits = mallocCheck((size_t)T * m->cfg.V * sizeof(float));
	model_forward(m, ids, 1, T, hidden, hy ? hybrid_hook : NULL, hy);
	model_logits(m, hidden, T, logits);
	free(hidden);
	return logits;
}

static double *to_double(const float *x, size_t n)
{
	double *d = mallocCheck(n * sizeof(double));
	for (size_t i = 0; i < n; i++)
		d[i] = x[i];
	return d;
}

static float max_absf(const float *x, size_t n)
{
	float m = 0;
	for (size_t i = 0; i < n; i++)
		m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
	return m;
}

/* prefill every prompt, then MAX_NEW - 1 greedy steps of every sequence
 * together; logits (NB, MAX_NEW, V) of every decoded position, gen (NB,
 * MAX_NEW) the argmax ids */
static void decode_by_hand(Decoder *d, int32_t *const *prompts, const int *which, int nb, float *logits, int32_t *gen)
{
	int V = d->m->cfg.V;
	float *lg = mallocCheck((size_t)nb * V * sizeof(float));
	int seq[NB];
	int32_t next[NB];
	for (int i = 0; i < nb; i++) {
		decoder_reset(d, i);
		decoder_prefill(d, i, prompts[which[i]], lens[which[i]], lg + (size_t)i * V);
		seq[i] = i;
	}
	for (int k = 0; k < MAX_NEW; k++) {
		for (int i = 0; i < nb; i++) {
			memcpy(logits + ((size_t)i * MAX_NEW + k) * V, lg + (size_t)i * V, V * sizeof(float));
			next[i] = gen[i * MAX_NEW + k] = test_argmax(lg + (size_t)i * V, V);
		}
		if (k + 1 < MAX_NEW)
			decoder_step(d, seq, next, nb, lg);
	}
	free(lg);
}

static size_t bytes_by_formula(const Model *m, const int *ops, int window, long long n, size_t e)
{
	const ModelConfig *c = &m->cfg;
	size_t s = 0;
	for (int l = 0; l < c->L; l++) {
		int op = ops ? ops[l] : ARCH_FA;
		long long w = n < window ? n : window;
		s += op == ARCH_FA    ? 2 * (size_t)n * c->G * c->D * e
		     : op == ARCH_SWA ? 2 * (size_t)w * c->G * c->D * e
		                      : (size_t)c->H * c->D * c->D * 4;
	}
	return s;
}

static void check_layout(const Model *m, const char *model, const char *name, const int *ops, int window,
                         int32_t *const *prompts, DType kv)
{
	const ModelConfig *c = &m->cfg;
	int V = c->V, cap = lens[NB - 1] + MAX_NEW, f32 = kv == DT_F32;
	char msg[300], what[160];
	snprintf(what, sizeof what, "%s %s, %s cache", model, name, f32 ? "f32" : "bf16");
	Hybrid *hy = make_hybrid(m, ops, window);
	Decoder d;
	decoder_init(&d, m, hy, NB, cap, kv);
	d.chunk = CHUNK;

	/* the state's bytes */
	size_t e = f32 ? 4 : 2;
	snprintf(msg, sizeof msg, "%s: state bytes a sequence follow the formula (%zu at cap %d, %zu at 100000)", what,
	         d.seq_bytes, cap, decoder_state_bytes(m, hy, 100000, kv));
	test_cond(msg, d.seq_bytes == bytes_by_formula(m, ops, window, cap, e) &&
	                   decoder_state_bytes(m, hy, 100000, kv) == bytes_by_formula(m, ops, window, 100000, e));

	/* the batch, by hand: logits of every decoded position against the
	 * forward of prompt + generated ids */
	int all[NB] = {0, 1, 2};
	float *logits = mallocCheck((size_t)NB * MAX_NEW * V * sizeof(float));
	int32_t gen[NB * MAX_NEW];
	decode_by_hand(&d, prompts, all, NB, logits, gen);
	int ok_logits = 1, ok_ids = 1, checked = 0;
	for (int b = 0; b < NB; b++) {
		int T = lens[b] + MAX_NEW - 1;
		int32_t *ids = mallocCheck((size_t)T * sizeof(int32_t));
		memcpy(ids, prompts[b], (size_t)lens[b] * sizeof(int32_t));
		memcpy(ids + lens[b], gen + b * MAX_NEW, (MAX_NEW - 1) * sizeof(int32_t));
		float *ref = forward_logits(m, hy, ids, T);
		const float *rows = ref + (size_t)(lens[b] - 1) * V; /* (MAX_NEW, V) */
		size_t n = (size_t)MAX_NEW * V;
		double *rd = to_double(rows, n);
		double tol = (f32 ? 1e-4 : 3e-2) * max_abs(rd, n);
		char name2[32];
		snprintf(name2, sizeof name2, "logits[%d]", b);
		ok_logits &= check_tensor(name2, logits + (size_t)b * n, rd, n, tol, 0);
		/* greedy ids are the forward's argmax (with a bf16 cache, where
		 * the forward's top two are further apart than twice the largest
		 * difference of the logits, so that rounding cannot swap them) */
		double dmax = 0;
		for (size_t i = 0; i < n; i++)
			dmax = fmax(dmax, fabs(logits[(size_t)b * n + i] - rd[i]));
		for (int k = 0; k < MAX_NEW; k++)
			if (f32 || test_margin(rows + (size_t)k * V, V) > 2 * dmax) {
				ok_ids &= test_argmax(rows + (size_t)k * V, V) == gen[b * MAX_NEW + k];
				checked++;
			}
		free(ids), free(ref), free(rd);
	}
	snprintf(msg, sizeof msg, "%s: every decoded position's logits equal the full forward's (prompts of %d, %d, %d)",
	         what, lens[0], lens[1], lens[2]);
	test_cond(msg, ok_logits);
	snprintf(msg, sizeof msg, "%s: greedy ids are the argmax of the forward re-run on prompt + ids (%d of %d checked)",
	         what, checked, NB * MAX_NEW);
	test_cond(msg, ok_ids && checked >= NB * MAX_NEW / 3);

	/* each prompt alone decodes as in the batch */
	Decoder one;
	decoder_init(&one, m, hy, 1, cap, kv);
	one.chunk = CHUNK;
	float *l1 = mallocCheck((size_t)MAX_NEW * V * sizeof(float));
	double maxd = 0;
	int same = 1;
	for (int b = 0; b < NB; b++) {
		int32_t g1[MAX_NEW];
		int which = b;
		decode_by_hand(&one, prompts, &which, 1, l1, g1);
		same &= !memcmp(g1, gen + b * MAX_NEW, sizeof g1);
		for (size_t i = 0; i < (size_t)MAX_NEW * V; i++) {
			double dd = fabs((double)l1[i] - logits[(size_t)b * MAX_NEW * V + i]);
			maxd = dd > maxd ? dd : maxd;
		}
	}
	snprintf(msg, sizeof msg, "%s: each prompt alone gives the batch's ids and logits (maxdiff %.1e)", what, maxd);
	test_cond(msg, same && maxd <= 1e-6 * max_absf(logits, (size_t)NB * MAX_NEW * V));

	/* decoder_greedy: the same ids; a stop id ends a sequence before it */
	IdVec out[NB] = {{0}};
	decoder_greedy(&d, (const int32_t *const *)prompts, lens, MAX_NEW, NULL, 0, out, NULL, NULL);
	int ok = 1;
	for (int b = 0; b < NB; b++)
		ok &= out[b].n == MAX_NEW && !memcmp(out[b].v, gen + b * MAX_NEW, MAX_NEW * sizeof(int32_t));
	snprintf(msg, sizeof msg, "%s: decoder_greedy gives the step-by-step ids", what);
	test_cond(msg, ok);
	int32_t stop[2] = {gen[3], -1}; /* sequence 0's fourth id */
	for (int b = 0; b < NB; b++)
		idvec_free(&out[b]);
	decoder_greedy(&d, (const int32_t *const *)prompts, lens, MAX_NEW, stop, 2, out, NULL, NULL);
	ok = 1;
	for (int b = 0; b < NB; b++) {
		size_t want = 0;
		while (want < MAX_NEW && gen[b * MAX_NEW + want] != stop[0])
			want++;
		ok &= out[b].n == want && !memcmp(out[b].v, gen + b * MAX_NEW, want * sizeof(int32_t));
		idvec_free(&out[b]);
	}
	snprintf(msg, sizeof msg, "%s: a stop id ends each sequence before it", what);
	test_cond(msg, ok);

	/* teacher forcing (float32): prefill in two pieces, then the rest of the
	 * longest prompt a step at a time; every position's logits */
	if (f32) {
		int T = lens[NB - 1], p1 = 4, p2 = 13;
		const int32_t *ids = prompts[NB - 1];
		float *ref = forward_logits(m, hy, ids, T);
		float *got = mallocCheck((size_t)T * V * sizeof(float));
		one.chunk = 5;
		decoder_reset(&one, 0);
		decoder_prefill(&one, 0, ids, p1, got + (size_t)(p1 - 1) * V);
		decoder_prefill(&one, 0, ids + p1, p2, got + (size_t)(p1 + p2 - 1) * V);
		int zero = 0;
		for (int t = p1 + p2; t < T; t++)
			decoder_step(&one, &zero, ids + t, 1, got + (size_t)t * V);
		int ok2 = 1;
		for (int t = p1 - 1; t < T; t++) {
			if (t >= p1 && t < p1 + p2 - 1)
				continue; /* inside the second piece: no logits */
			double *rd = to_double(ref + (size_t)t * V, V);
			int good = check_tensor("pos", got + (size_t)t * V, rd, V, 1e-4 * max_abs(rd, V), 0);
			ok2 &= good;
			free(rd);
		}
		snprintf(msg, sizeof msg, "%s: a prompt prefilled in pieces, then stepped, matches at every position", what);
		test_cond(msg, ok2);
		free(ref), free(got);
	}

	free(l1), free(logits);
	decoder_free(&one);
	decoder_free(&d);
	if (hy) {
		hybrid_free(hy);
		free(hy);
	}
}

static void check_model(const char *model, const int (*layouts)[3], const char *const *names, int nlayouts)
{
	char dir[256];
	snprintf(dir, sizeof dir, "tests/data/%s", model);
	Model m;
	model_load(&m, dir);
	int32_t *prompts[NB];
	for (int b = 0; b < NB; b++) {
		prompts[b] = mallocCheck((size_t)lens[b] * sizeof(int32_t));
		for (int t = 0; t < lens[b]; t++)
			prompts[b][t] = (int32_t)((test_frand() + 1) / 2 * (m.cfg.V - 1));
	}
	for (int i = 0; i < nlayouts; i++)
		for (int f = 0; f < 2; f++)
			check_layout(&m, model, names[i], i ? layouts[i] : NULL, WINDOW, prompts, f ? DT_BF16 : DT_F32);
	/* swa with a window longer than the cache: a ring that never wraps */
	static const int swa[3] = {ARCH_SWA, ARCH_SWA, ARCH_SWA};
	check_layout(&m, model, "swa W=64", swa, 64, prompts, DT_F32);
	for (int b = 0; b < NB; b++)
		free(prompts[b]);
	model_free(&m);
}

int main(void)
{
	/* at these shapes the decoder's own loops stay on one thread (their if
	 * clauses), and ops_cpu's parallel regions only cost: on a loaded
	 * machine with two threads this test took 18 s, with one 0.5 s (as
	 * t0410). OMP_NUM_THREADS, when set, wins. */
#ifdef _OPENMP
	if (!getenv("OMP_NUM_THREADS"))
		omp_set_num_threads(1);
#endif
	test_seed(8);
	/* layout 0 is the teacher (no hybrid) */
	static const int qwen[3][3] = {{0}, {ARCH_SWA, ARCH_GDN}, {ARCH_GLA, ARCH_FA}};
	static const char *const qwen_names[] = {"teacher", "swa,gdn", "gla,fa"};
	static const int llama[3][3] = {{0}, {ARCH_GDN, ARCH_SWA, ARCH_FA}, {ARCH_FA, ARCH_GLA, ARCH_SWA}};
	static const char *const llama_names[] = {"teacher", "gdn,swa,fa", "fa,gla,swa"};
	check_model("tiny-qwen2", qwen, qwen_names, 3);
	check_model("tiny-llama", llama, llama_names, 3);
	return test_report();
}
