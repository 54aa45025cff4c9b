/* test_decode (GPU): the GPU decoder (kernels/gpu_decode.h) against the CPU
 * decoder (lib/decode.h, bf16 caches) on random models of head dim 64
 * (Qwen2-like: L 4, C 256, H 4, G 2, F 512, V 512, q, k, v biases, tied)
 * and 128 (Llama-like: L 3, C 256, H 4, G 1, F 384, V 384, an o bias,
 * untied; and H 16, G 1, the most query heads a kv head the decoder
 * takes), as the teacher and as hybrids that use fa, swa (window 16,
 * shorter than most prompts, and 200, which the longest prompt wraps), gdn
 * and gla (untrained, lop_init_teacher). The tiny fixtures of
 * tests/test_decode.c have head dims 16 and 24, which the GPU's attention
 * does not take.
 *
 * Per layout: B 5 sequences of cap 320, prompts of 7, 19, 33, 300 and 1
 * tokens prefilled, then 10 steps of subsets of them (all five, then
 * {4, 1, 2} and {3, 0}: gathered states and out-of-order rows), each
 * sequence fed the CPU's argmax on both sides; every prefill and step
 * logit is the CPU's within TOL of the row's max |logit| (bf16 activations
 * against float32: the bound test_gpu_model allows; the measured worst is
 * printed). The 300-token prompt takes 3 tiles of the attention: 3 splits
 * of a tile by default, and some layouts cap the splits (DASH_DECODE_SPLITS
 * 1 or 2) so that a split runs several tiles. Then: the states' bytes are B
 * decoder_state_bytes(m, hy, cap, DT_BF16); a reset sequence prefilled
 * again gives its first logits bit for bit; gpu_decoder_greedy on the
 * first 4 sequences gives the ids of the GPU's own step-by-step argmax
 * exactly, and the CPU's greedy ids wherever the CPU's top two are further
 * apart than twice the largest logit difference seen (up to the first
 * position where they are not); a stop id ends sequences before it, and
 * on_token sees every id. And gpu_lop_forward_state against
 * lop_forward_state from random states (gdn and gla, D 64 and 48: the
 * recurrent and the chunked kernel at T 1; T 1, 5, 70): a and the final
 * states within 5e-3 of their max (TF32 GEMMs). Prefilling a sequence that
 * holds tokens dies (a child process).
 *
 * With DASH_DECODE_BENCH=1 it times random:qwen2.5-0.5b (and a hybrid of
 * it with fa in layers 7, 15, 23 and gdn elsewhere): a prefill of 4096
 * tokens, a step of 32 sequences at context 4096, a step of 1, and the
 * teacher's step of 8 sequences at context 32768. Runs on a GPU: make
 * test-gpu. */
#include <string.h>
#include <sys/wait.h>

#include "../bench/stats.h" // defines: median
#include "gpu.h"
#include "gpu_decode.h"
#include "gpu_lop.h"
extern "C" {
#include "decode.h"
#include "hybrid.h"
#include "linear_op.h"
#include "model.h"
#include "test.h"
#include "util.h"
}
#include "gpu_test.h"

#define NB 5      /* sequences */
#define NG 4      /* of them in greedy */
#define MAX_NEW 10
#define WINDOW 16 /* swa, shorter than most prompts */
#define CAP 320
#define TOL 3e-2
#define LOP_TOL 5e-3

static const int lens[NB] = {7, 19, 33, 300, 1};

/* a hybrid of m with layer l running ops[l] (NULL ops: NULL, the teacher) */
static Hybrid *make_hybrid(const Model *m, const int *ops, int window)
{
	if (!ops)
		return NULL;
	Hybrid *h = (Hybrid *)callocCheck(1, sizeof *h);
	h->L = m->cfg.L;
	h->ops = (int32_t *)mallocCheck((size_t)h->L * sizeof(int32_t));
	h->lop = (LinearOp *)callocCheck((size_t)h->L, sizeof *h->lop);
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

static void drop_hybrid(Hybrid *h)
{
	if (h) {
		hybrid_free(h);
		free(h);
	}
}

/* the worst row's max |got - ref| relative to its max |ref|, and the
 * largest |got - ref|, over every row compared */
typedef struct {
	double worst, dmax;
	int rows;
} Cmp;

static void cmp_rows(Cmp *c, const float *got, const float *ref, int rows, int V)
{
	for (int r = 0; r < rows; r++) {
		double d = 0, mx = 0;
		for (int v = 0; v < V; v++) {
			double e = fabs((double)got[(size_t)r * V + v] - ref[(size_t)r * V + v]);
			d = e > d || isnan(e) ? (isnan(e) ? INFINITY : e) : d;
			mx = fmax(mx, fabs((double)ref[(size_t)r * V + v]));
		}
		c->worst = fmax(c->worst, d / (mx > 0 ? mx : 1));
		c->dmax = fmax(c->dmax, d);
		c->rows++;
	}
}

/* greedy by hand on the CPU: prefill sequences 0..ng-1, then step them all
 * together; logits (ng, MAX_NEW, V) of every decoded position, gen (ng,
 * MAX_NEW) their argmax */
static void greedy_cpu(Decoder *d, int32_t *const *prompts, int ng, float *logits, int32_t *gen)
{
	int V = d->m->cfg.V, seq[NB];
	int32_t next[NB];
	float *lg = (float *)mallocCheck((size_t)ng * V * sizeof(float));
	for (int b = 0; b < ng; b++) {
		decoder_reset(d, b);
		decoder_prefill(d, b, prompts[b], lens[b], lg + (size_t)b * V);
		seq[b] = b;
	}
	for (int k = 0; k < MAX_NEW; k++) {
		for (int b = 0; b < ng; b++) {
			memcpy(logits + ((size_t)b * MAX_NEW + k) * V, lg + (size_t)b * V, V * sizeof(float));
			next[b] = gen[b * MAX_NEW + k] = test_argmax(lg + (size_t)b * V, V);
		}
		if (k + 1 < MAX_NEW)
			decoder_step(d, seq, next, ng, lg);
	}
	free(lg);
}

/* the same on the GPU (the ids only) */
static void greedy_gpu(GpuDecoder *d, int V, int32_t *const *prompts, int ng, int32_t *gen)
{
	int seq[NB];
	int32_t next[NB];
	float *lg = (float *)mallocCheck((size_t)ng * V * sizeof(float));
	for (int b = 0; b < ng; b++) {
		gpu_decoder_reset(d, b);
		gpu_decoder_prefill(d, b, prompts[b], lens[b], lg + (size_t)b * V);
		seq[b] = b;
	}
	for (int k = 0; k < MAX_NEW; k++) {
		for (int b = 0; b < ng; b++)
			next[b] = gen[b * MAX_NEW + k] = test_argmax(lg + (size_t)b * V, V);
		if (k + 1 < MAX_NEW)
			gpu_decoder_step(d, seq, next, ng, lg);
	}
	free(lg);
}

/* on_token's record */
typedef struct {
	IdVec seen[NB];
} Seen;

static void on_token(void *ctx, int b, int32_t id)
{
	idvec_push(&((Seen *)ctx)->seen[b], id);
}

/* one layout; splits, when not NULL, caps the attention's splits a row
 * (DASH_DECODE_SPLITS, read by gpu_decoder_new) */
static void check_layout(const Model *m, const char *model, const char *name, const int *ops, int window,
                         const char *splits, int32_t *const *prompts)
{
	int V = m->cfg.V;
	char msg[300], what[160];
	snprintf(what, sizeof what, "%s %s%s%s", model, name, splits ? ", splits <= " : "", splits ? splits : "");
	Hybrid *hy = make_hybrid(m, ops, window);
	Decoder cd;
	decoder_init(&cd, m, hy, NB, CAP, DT_BF16);
	if (splits)
		setenv("DASH_DECODE_SPLITS", splits, 1);
	GpuDecoder *gd = gpu_decoder_new(m, hy, NB, CAP);
	unsetenv("DASH_DECODE_SPLITS");

	/* the states' bytes */
	size_t wb, sb, rb;
	gpu_decoder_bytes(gd, &wb, &sb, &rb);
	snprintf(msg, sizeof msg, "%s: the states are B decoder_state_bytes (%zu; weights %zu, rest %zu)", what, sb, wb,
	         rb);
	test_cond(msg, sb == (size_t)NB * decoder_state_bytes(m, hy, CAP, DT_BF16));

	/* prefills, then steps of subsets, the CPU's argmax fed to both */
	float *lc = (float *)mallocCheck((size_t)NB * V * sizeof(float));
	float *lg = (float *)mallocCheck((size_t)NB * V * sizeof(float));
	float *first2 = (float *)mallocCheck((size_t)V * sizeof(float));
	Cmp pre = {0, 0, 0}, stp = {0, 0, 0};
	int32_t cur[NB];
	for (int b = 0; b < NB; b++) {
		decoder_prefill(&cd, b, prompts[b], lens[b], lc + (size_t)b * V);
		gpu_decoder_prefill(gd, b, prompts[b], lens[b], lg + (size_t)b * V);
		cur[b] = test_argmax(lc + (size_t)b * V, V);
	}
	cmp_rows(&pre, lg, lc, NB, V);
	memcpy(first2, lg + 2 * (size_t)V, (size_t)V * sizeof(float));
	static const int sub[3][NB] = {{0, 1, 2, 3, 4}, {4, 1, 2}, {3, 0}};
	static const int nsub[3] = {5, 3, 2};
	for (int k = 0; k < MAX_NEW; k++) {
		const int *seq = sub[k % 3];
		int n = nsub[k % 3];
		int32_t ids[NB];
		for (int i = 0; i < n; i++)
			ids[i] = cur[seq[i]];
		decoder_step(&cd, seq, ids, n, lc);
		gpu_decoder_step(gd, seq, ids, n, lg);
		cmp_rows(&stp, lg, lc, n, V);
		for (int i = 0; i < n; i++)
			cur[seq[i]] = test_argmax(lc + (size_t)i * V, V);
	}
	printf("  %s: prefill logits worst %.3e of the row's max, steps %.3e (%d rows; largest difference %.3e)\n", what,
	       pre.worst, stp.worst, stp.rows, fmax(pre.dmax, stp.dmax));
	snprintf(msg, sizeof msg, "%s: prefill logits are the CPU decoder's within %g of max |logit| (worst %.2e)", what,
	         TOL, pre.worst);
	test_cond(msg, pre.worst <= TOL);
	snprintf(msg, sizeof msg, "%s: step logits of subsets of the sequences are the CPU's within %g (worst %.2e)", what,
	         TOL, stp.worst);
	test_cond(msg, stp.worst <= TOL);

	/* reset, then the same prefill again */
	gpu_decoder_reset(gd, 2);
	gpu_decoder_prefill(gd, 2, prompts[2], lens[2], lg);
	snprintf(msg, sizeof msg, "%s: a reset sequence prefilled again gives its first logits bit for bit", what);
	test_cond(msg, !memcmp(lg, first2, (size_t)V * sizeof(float)));

	/* greedy on the first NG sequences */
	Decoder c4;
	decoder_init(&c4, m, hy, NG, CAP, DT_BF16);
	float *rl = (float *)mallocCheck((size_t)NG * MAX_NEW * V * sizeof(float));
	int32_t genc[NG * MAX_NEW], geng[NG * MAX_NEW];
	greedy_cpu(&c4, prompts, NG, rl, genc);
	greedy_gpu(gd, V, prompts, NG, geng);
	IdVec out[NB];
	memset(out, 0, sizeof out);
	gpu_decoder_greedy(gd, NG, (const int32_t *const *)prompts, lens, MAX_NEW, NULL, 0, out, NULL, NULL);
	int same = 1, agree = 1, checked = 0;
	double clear = 2 * fmax(pre.dmax, stp.dmax);
	for (int b = 0; b < NG; b++) {
		same &= out[b].n == MAX_NEW && !memcmp(out[b].v, geng + b * MAX_NEW, MAX_NEW * sizeof(int32_t));
		for (int k = 0; k < MAX_NEW && k < (int)out[b].n; k++) {
			if (test_margin(rl + ((size_t)b * MAX_NEW + k) * V, V) <= clear)
				break; /* the CPU's top two too close: the rest may differ */
			agree &= out[b].v[k] == genc[b * MAX_NEW + k];
			checked++;
		}
		idvec_free(&out[b]);
	}
	snprintf(msg, sizeof msg, "%s: gpu_decoder_greedy gives the GPU's step-by-step argmax ids", what);
	test_cond(msg, same);
	snprintf(msg, sizeof msg, "%s: gpu_decoder_greedy gives the CPU's greedy ids where its top two are apart "
	         "(%d of %d checked)", what, checked, NG * MAX_NEW);
	test_cond(msg, agree && checked >= NG);

	/* a stop id (sequence 0's fourth): it ends each sequence before it; ids
	 * up to the first stop anywhere come from the same batch as geng's */
	int32_t stop[2] = {geng[3], -1};
	Seen seen;
	memset(&seen, 0, sizeof seen);
	gpu_decoder_greedy(gd, NG, (const int32_t *const *)prompts, lens, MAX_NEW, stop, 2, out, on_token, &seen);
	int kfirst = MAX_NEW, at[NG];
	for (int b = 0; b < NG; b++) {
		at[b] = MAX_NEW;
		for (int k = MAX_NEW - 1; k >= 0; k--)
			if (geng[b * MAX_NEW + k] == stop[0])
				at[b] = k;
		kfirst = at[b] < kfirst ? at[b] : kfirst;
	}
	int ok = 1;
	for (int b = 0; b < NG; b++) {
		for (size_t k = 0; k < out[b].n; k++)
			ok &= out[b].v[k] != stop[0] && ((int)k > kfirst || out[b].v[k] == geng[b * MAX_NEW + k]);
		if (at[b] == kfirst)
			ok &= (int)out[b].n == kfirst;
		ok &= seen.seen[b].n == out[b].n && !memcmp(seen.seen[b].v, out[b].v, out[b].n * sizeof(int32_t));
		idvec_free(&out[b]), idvec_free(&seen.seen[b]);
	}
	snprintf(msg, sizeof msg, "%s: a stop id ends each sequence before it, and on_token sees every id", what);
	test_cond(msg, ok && kfirst <= 3);

	free(rl), free(lc), free(lg), free(first2);
	decoder_free(&c4);
	decoder_free(&cd);
	gpu_decoder_free(gd);
	drop_hybrid(hy);
}

// ----------------------------------------------------------------------------
// gpu_lop_forward_state

static void check_lop_state(int kind, int D, int B, int T)
{
	int C = 64, H = 2, G = 1;
	LinearOp op;
	op_rand(&op, kind, C, H, G, D);
	size_t nu = (size_t)B * T * C, ns = (size_t)B * H * D * D;
	float *u = test_rnd(nu, 1), *S0 = test_rnd(ns, 0.2f);
	float *a = (float *)mallocCheck(nu * sizeof(float)), *S = (float *)mallocCheck(ns * sizeof(float));
	memcpy(S, S0, ns * sizeof(float));
	lop_forward_state(&op, a, u, B, T, S);
	GpuLop *g = gpu_lop_new(&op, B * T + 5, NULL);
	float *d_u = dev_f32(u, nu), *d_S = dev_f32(S0, ns), *d_a = (float *)gpu_alloc(nu * sizeof(float));
	gpu_lop_forward_state(g, d_a, d_u, B, T, d_S);
	float *ga = host_f32(d_a, nu), *gS = host_f32(d_S, ns);
	double ea = test_rel_err(ga, a, nu), es = test_rel_err(gS, S, ns);
	char msg[200];
	snprintf(msg, sizeof msg, "gpu_lop_forward_state %s D %d, B %d x T %d: a and the states are lop_forward_state's "
	         "(%.1e, %.1e of their max)", lop_name(kind), D, B, T, ea, es);
	test_cond(msg, ea <= LOP_TOL && es <= LOP_TOL);
	gpu_lop_free(g);
	gpu_free(d_u), gpu_free(d_S), gpu_free(d_a);
	free(u), free(S0), free(a), free(S), free(ga), free(gS);
	lop_free(&op);
}

// ----------------------------------------------------------------------------
// models

static void config_d64(ModelConfig *c)
{
	memset(c, 0, sizeof *c);
	c->arch = ARCH_QWEN2, c->L = 4, c->C = 256, c->H = 4, c->G = 2, c->D = 64, c->F = 512, c->V = 512;
	c->eps = 1e-6f, c->rope_theta = 1e4, c->rope_type = ROPE_DEFAULT, c->qkv_bias = 1, c->tied = 1;
	c->bos_id = c->eos_id = -1, c->max_pos = 4096;
}

static void config_d128(ModelConfig *c)
{
	memset(c, 0, sizeof *c);
	c->arch = ARCH_LLAMA, c->L = 3, c->C = 256, c->H = 4, c->G = 1, c->D = 128, c->F = 384, c->V = 384;
	c->eps = 1e-5f, c->rope_theta = 5e5, c->rope_type = ROPE_DEFAULT, c->qkv_bias = 0, c->tied = 0;
	c->bos_id = c->eos_id = -1, c->max_pos = 4096;
}

/* an o bias in every layer (small, bf16), into bo (L) to free later */
static void add_o_bias(Model *m, uint16_t **bo)
{
	m->cfg.o_bias = 1;
	for (int l = 0; l < m->cfg.L; l++) {
		bo[l] = (uint16_t *)mallocCheck((size_t)m->cfg.C * sizeof(uint16_t));
		for (int i = 0; i < m->cfg.C; i++)
			bo[l][i] = f32_to_bf16(0.1f * test_frand());
		Tensor t;
		memset(&t, 0, sizeof t);
		t.dtype = DT_BF16, t.ndim = 1, t.shape[0] = m->cfg.C, t.data = bo[l];
		m->layers[l].bo = t;
	}
}

static void check_model(const char *model, Model *m, const int (*layouts)[4], const char *const *names,
                        const int *windows, const char *const *splits, int nlayouts)
{
	int32_t *prompts[NB];
	for (int b = 0; b < NB; b++) {
		prompts[b] = (int32_t *)mallocCheck((size_t)lens[b] * sizeof(int32_t));
		for (int t = 0; t < lens[b]; t++)
			prompts[b][t] = (int32_t)((test_frand() + 1) / 2 * (m->cfg.V - 1));
	}
	for (int i = 0; i < nlayouts; i++)
		check_layout(m, model, names[i], layouts[i][0] < 0 ? NULL : layouts[i], windows[i], splits[i], prompts);
	for (int b = 0; b < NB; b++)
		free(prompts[b]);
}

/* the child of the error case: a prefill into a sequence that holds tokens */
static int die_prefill(void)
{
	ModelConfig c;
	config_d64(&c);
	Model m;
	model_init_random(&m, &c, 3);
	GpuDecoder *d = gpu_decoder_new(&m, NULL, 1, 16);
	int32_t ids[3] = {1, 2, 3};
	gpu_decoder_prefill(d, 0, ids, 3, NULL);
	gpu_decoder_prefill(d, 0, ids, 3, NULL); /* dies */
	return 0;
}

// ----------------------------------------------------------------------------
// timing (DASH_DECODE_BENCH=1)

/* B sequences prefilled with N random ids, then S steps of all of them and
 * S of sequence 0 alone; medians in ms */
static void bench_one(const char *name, const Model *m, const Hybrid *hy, int B, int N, int S)
{
	int V = m->cfg.V;
	GpuDecoder *d = gpu_decoder_new(m, hy, B, N + 2 * S + 2); /* sequence 0: 2 + S + S steps */
	int32_t *ids = (int32_t *)mallocCheck((size_t)N * sizeof(int32_t)), *tok;
	for (int i = 0; i < N; i++)
		ids[i] = (int32_t)((test_frand() + 1) / 2 * (V - 1));
	double *pre = (double *)mallocCheck((size_t)B * sizeof(double)), *st = (double *)mallocCheck(S * sizeof(double));
	double *st1 = (double *)mallocCheck(S * sizeof(double));
	for (int b = 0; b < B; b++) {
		gpu_sync();
		double t0 = now_seconds();
		gpu_decoder_prefill(d, b, ids, N, NULL);
		gpu_sync();
		pre[b] = 1e3 * (now_seconds() - t0);
	}
	int *seq = (int *)mallocCheck((size_t)B * sizeof(int));
	tok = (int32_t *)callocCheck((size_t)B, sizeof(int32_t));
	for (int b = 0; b < B; b++)
		seq[b] = b;
	for (int s = 0; s < S + 2; s++) { /* two warm-ups */
		double t0 = now_seconds();
		gpu_decoder_step(d, seq, tok, B, NULL);
		gpu_sync();
		if (s >= 2)
			st[s - 2] = 1e3 * (now_seconds() - t0);
	}
	for (int s = 0; s < S; s++) {
		double t0 = now_seconds();
		gpu_decoder_step(d, seq, tok, 1, NULL);
		gpu_sync();
		st1[s] = 1e3 * (now_seconds() - t0);
	}
	size_t wb, sb, rb;
	gpu_decoder_bytes(d, &wb, &sb, &rb);
	double mp = median(pre + (B > 3 ? 3 : 0), B > 3 ? B - 3 : B), ms = median(st, S), m1 = median(st1, S);
	printf("BENCH %s: prefill %d tokens %.2f ms (%.0f tok/s); step of %d at context %d: %.3f ms (%.0f tok/s); "
	       "step of 1: %.3f ms; GiB weights %.2f states %.2f rest %.2f\n",
	       name, N, mp, N / mp * 1e3, B, N, ms, B / ms * 1e3, m1, wb / 1073741824.0, sb / 1073741824.0,
	       rb / 1073741824.0);
	fflush(stdout);
	free(ids), free(pre), free(st), free(st1), free(seq), free(tok);
	gpu_decoder_free(d);
}

static void bench(void)
{
	Model m;
	model_load(&m, "random:qwen2.5-0.5b");
	int ops[64];
	for (int l = 0; l < m.cfg.L; l++)
		ops[l] = l % 8 == 7 ? ARCH_FA : ARCH_GDN;
	Hybrid *hy = make_hybrid(&m, ops, 0);
	bench_one("qwen2.5-0.5b teacher", &m, NULL, 32, 4096, 20);
	bench_one("qwen2.5-0.5b 3 fa + 21 gdn", &m, hy, 32, 4096, 20);
	bench_one("qwen2.5-0.5b teacher (32K)", &m, NULL, 8, 32768, 10);
	drop_hybrid(hy);
	model_free(&m);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	if (cuda_device_count() == 0) {
		printf("SKIP: no GPU\n");
		return 0;
	}
	if (argc > 1 && !strcmp(argv[1], "--die-prefill"))
		return die_prefill();
	test_seed(8);

	/* gpu_lop_forward_state: T 1 (a step), T a prompt, several sequences */
	for (int kind = LOP_GDN; kind <= LOP_GLA; kind++)
		for (int D = 64; D >= 48; D -= 16) {
			check_lop_state(kind, D, 3, 1);
			check_lop_state(kind, D, 1, 70);
			check_lop_state(kind, D, 2, 5);
		}

	/* layout 0 is the teacher (no hybrid) */
	ModelConfig c;
	Model m;
	config_d64(&c);
	model_init_random(&m, &c, 5);
	model_unpack(&m);
	static const int l64[5][4] = {{-1},
	                              {-1},
	                              {ARCH_FA, ARCH_SWA, ARCH_GDN, ARCH_GLA},
	                              {ARCH_GLA, ARCH_GDN, ARCH_SWA, ARCH_FA},
	                              {ARCH_SWA, ARCH_SWA, ARCH_GDN, ARCH_SWA}};
	static const char *const n64[] = {"teacher", "teacher", "fa,swa,gdn,gla", "gla,gdn,swa,fa",
	                                  "swa,swa,gdn,swa W=200"};
	static const int w64[] = {0, 0, WINDOW, WINDOW, 200};
	static const char *const s64[] = {NULL, "2", NULL, "1", NULL};
	check_model("d64", &m, l64, n64, w64, s64, 5);
	model_free(&m);

	uint16_t *bo[8];
	config_d128(&c);
	model_init_random(&m, &c, 6);
	add_o_bias(&m, bo);
	model_unpack(&m);
	static const int l128[3][4] = {{-1}, {ARCH_SWA, ARCH_GDN, ARCH_FA}, {ARCH_GLA, ARCH_FA, ARCH_SWA}};
	static const char *const n128[] = {"teacher", "swa,gdn,fa", "gla,fa,swa W=200"};
	static const int w128[] = {0, WINDOW, 200};
	static const char *const s128[] = {NULL, NULL, "2"};
	check_model("d128+bo", &m, l128, n128, w128, s128, 3);
	model_free(&m);
	for (int l = 0; l < c.L; l++)
		free(bo[l]);

	/* 16 query heads a kv head (the largest the decoder takes) */
	config_d128(&c);
	c.L = 3, c.H = 16, c.G = 1, c.F = 256, c.V = 256;
	model_init_random(&m, &c, 7);
	model_unpack(&m);
	static const int l16[2][4] = {{-1}, {ARCH_SWA, ARCH_GLA, ARCH_FA}};
	static const char *const n16[] = {"teacher", "swa,gla,fa"};
	static const int w16[] = {0, WINDOW};
	static const char *const s16[] = {NULL, "2"};
	check_model("d128 H16/G1", &m, l16, n16, w16, s16, 2);
	model_free(&m);

	/* an error: prefill into a sequence that holds tokens dies (exit 1) */
	char cmd[1100];
	snprintf(cmd, sizeof cmd, "'%s' --die-prefill", argv[0]);
	fflush(stdout);
	int st = system(cmd);
	test_cond("a prefill into a sequence that holds tokens dies", st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1);

	const char *b = getenv("DASH_DECODE_BENCH");
	if (b && !strcmp(b, "1"))
		bench();
	return test_report();
}
