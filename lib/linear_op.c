/*
 * linear_op: the gdn and gla candidate operators, forward and backward to
 * every parameter and to the input (the contract is in linear_op.h). The
 * recurrences are lib/linear_attn.c's; around them, projections, feature
 * maps, gates and the gated RMSNorm, each with its hand-written backward.
 */
#include "linear_op.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fp8.h"
#include "linear_attn.h"
#include "ops_cpu.h"
#include "util.h"

#define L2_EPS 1e-6f   /* fla's l2norm */
#define NORM_EPS 1e-5f /* the gated RMSNorm on the output */

int lop_kind(const char *name)
{
	return !strcmp(name, "gdn") ? LOP_GDN : !strcmp(name, "gla") ? LOP_GLA : !strcmp(name, "swa") ? LOP_SWA : -1;
}

const char *lop_name(int kind)
{
	return kind == LOP_GDN ? "gdn" : kind == LOP_GLA ? "gla" : "swa";
}

static void add(LinearOp *op, const char *name, int rows, int cols)
{
	if (op->np == LOP_MAX_PARAMS)
		BUG("lop: more than %d parameter blocks", LOP_MAX_PARAMS);
	op->p[op->np++] = (LopParam){name, rows, cols, op->n};
	op->n += (size_t)rows * cols;
}

void lop_init(LinearOp *op, int kind, int C, int H, int G, int D)
{
	if (kind != LOP_GDN && kind != LOP_GLA && kind != LOP_SWA)
		BUG("lop_init: kind %d", kind);
	if (H % G)
		BUG("lop_init: H %d not a multiple of G %d", H, G);
	memset(op, 0, sizeof *op);
	op->kind = kind, op->C = C, op->H = H, op->G = G, op->D = D, op->R = LOP_GLA_RANK;
	int HD = H * D, GD = G * D;
	add(op, "wq", HD, C), add(op, "bq", HD, 1);
	add(op, "wk", GD, C), add(op, "bk", GD, 1);
	add(op, "wv", GD, C), add(op, "bv", GD, 1);
	if (kind == LOP_GDN) {
		add(op, "wa", H, C), add(op, "dt_bias", H, 1), add(op, "A_log", H, 1);
		add(op, "wb", H, C);
	} else if (kind == LOP_GLA) {
		add(op, "wgk1", op->R, C), add(op, "wgk2", HD, op->R), add(op, "bgk", HD, 1);
	}
	if (kind != LOP_SWA)
		add(op, "wg", HD, C), add(op, "onorm", D, 1);
	add(op, "wo", C, HD), add(op, "bo", C, 1);
	op->w = callocCheck(op->n, sizeof(float));
	if (kind == LOP_SWA) {
		op->window = LOP_SWA_WINDOW;
		op->inv_freq = mallocCheck((size_t)(D / 2 > 0 ? D / 2 : 1) * sizeof(float));
		for (int i = 0; i < D / 2; i++)
			op->inv_freq[i] = (float)pow(10000.0, -2.0 * i / D);
	}
}

void lop_free(LinearOp *op)
{
	free(op->w), free(op->inv_freq);
	op->w = op->inv_freq = NULL;
}

const LopParam *lop_param(const LinearOp *op, const char *name)
{
	for (int i = 0; i < op->np; i++)
		if (!strcmp(op->p[i].name, name))
			return &op->p[i];
	return NULL;
}

static float *P(const LinearOp *op, const char *name)
{
	const LopParam *p = lop_param(op, name);
	if (!p)
		BUG("lop: no parameter %s in %s", name, lop_name(op->kind));
	return op->w + p->off;
}

/* a teacher tensor (rows x cols, any float dtype) into dst; zeros when it
 * is absent */
static void copy_tensor(float *dst, const Tensor *t, int rows, int cols)
{
	if (!t->data) {
		memset(dst, 0, (size_t)rows * cols * sizeof(float));
		return;
	}
	if (tensor_numel(t) != (int64_t)rows * cols)
		BUG("lop_init_teacher: a teacher tensor has %lld values, want %d x %d", (long long)tensor_numel(t), rows,
		    cols);
	size_t rowb = dtype_row_bytes(t->dtype, cols);
	for (int r = 0; r < rows; r++)
		convert_to_f32(dst + (size_t)r * cols, (const uint8_t *)t->data + (size_t)r * rowb, t->dtype, (size_t)cols);
}

/* splitmix64, for the new projections */
static double uniform01(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}

void lop_init_teacher(LinearOp *op, int kind, const Model *m, int l, uint64_t seed)
{
	const ModelConfig *c = &m->cfg;
	const LayerWeights *w = &m->layers[l];
	lop_init(op, kind, c->C, c->H, c->G, c->D);
	int HD = c->H * c->D, GD = c->G * c->D;
	copy_tensor(P(op, "wq"), &w->wq, HD, c->C), copy_tensor(P(op, "bq"), &w->bq, HD, 1);
	copy_tensor(P(op, "wk"), &w->wk, GD, c->C), copy_tensor(P(op, "bk"), &w->bk, GD, 1);
	copy_tensor(P(op, "wv"), &w->wv, GD, c->C), copy_tensor(P(op, "bv"), &w->bv, GD, 1);
	copy_tensor(P(op, "wo"), &w->wo, c->C, HD), copy_tensor(P(op, "bo"), &w->bo, c->C, 1);
	uint64_t s = seed * 0x2545f4914f6cdd1dULL + (uint64_t)l;
	const char *fresh[] = {"wa", "wb", "wgk1", "wgk2", "wg"};
	for (size_t i = 0; i < sizeof fresh / sizeof fresh[0]; i++) {
		const LopParam *p = lop_param(op, fresh[i]);
		if (!p)
			continue;
		double bound = 1 / sqrt((double)p->cols); /* nn.Linear's default */
		for (size_t j = 0; j < (size_t)p->rows * p->cols; j++)
			op->w[p->off + j] = (float)((2 * uniform01(&s) - 1) * bound);
	}
	if (kind == LOP_SWA) {
		memcpy(op->inv_freq, m->inv_freq, (size_t)(c->D / 2) * sizeof(float));
		return;
	}
	float *on = P(op, "onorm");
	for (int i = 0; i < c->D; i++)
		on[i] = 1;
	if (kind == LOP_GDN) {
		/* fla: A ~ U(0, 16); dt = exp(U(log 1e-3, log 0.1)) at least 1e-4,
		 * dt_bias its inverse softplus */
		float *A = P(op, "A_log"), *dt = P(op, "dt_bias");
		for (int h = 0; h < c->H; h++) {
			A[h] = (float)log(16 * uniform01(&s) + 1e-6);
			double t = exp(log(1e-3) + uniform01(&s) * (log(0.1) - log(1e-3)));
			t = t < 1e-4 ? 1e-4 : t;
			dt[h] = (float)(t + log(-expm1(-t)));
		}
	}
}

// ----------------------------------------------------------------------------
// pieces

static inline float sigmoidf_(float x) { return 1 / (1 + expf(-x)); }
static inline float siluf_(float x) { return x * sigmoidf_(x); }
static inline float silu_grad(float x)
{
	float s = sigmoidf_(x);
	return s * (1 + x * (1 - s));
}
static inline float softplusf_(float x) { return x > 20 ? x : log1pf(expf(x)); }
static inline float logsigmoidf_(float x) { return x < 0 ? x - log1pf(expf(x)) : -log1pf(expf(-x)); }

/* out (n, OC) = x (n, IC) W^T + b, W (OC, IC) float32, b (OC) or NULL;
 * through e4m3 where f8 (matmul_forward_fp8_cpu: gdn under --forward fp8) */
static void lin8(int f8, float *out, const float *x, const float *W, const float *b, int n, int IC, int OC)
{
	Tensor w = {DT_F32, 2, {OC, IC}, W}, bt = {DT_F32, 1, {OC}, b};
	(f8 ? matmul_forward_fp8_cpu : matmul_forward_cpu)(out, x, &w, b ? &bt : NULL, n, IC, OC);
}

static void lin(float *out, const float *x, const float *W, const float *b, int n, int IC, int OC)
{
	lin8(0, out, x, W, b, n, IC, OC);
}

/* the backward of lin: dx += dout W (dx may be NULL), dW += dout^T x,
 * db += sum of dout rows (db may be NULL; dW NULL: neither) */
static void lin_back(float *dx, float *dW, float *db, const float *dout, const float *x, const float *W, int n,
                     int IC, int OC)
{
	if (dx) {
		float *t = mallocCheck((size_t)n * IC * sizeof(float));
		Tensor w = {DT_F32, 2, {OC, IC}, W};
		matmul_backward_cpu(t, dout, &w, n, IC, OC);
		for (size_t i = 0; i < (size_t)n * IC; i++)
			dx[i] += t[i];
		free(t);
	}
	if (!dW)
		return;
	/* dW += dout^T x as the blocked matmul's out = A B^T with A = dout^T
	 * (OC, n) and B = x^T (IC, n) */
	float *dT = mallocCheck((size_t)OC * n * sizeof(float)), *xT = mallocCheck((size_t)IC * n * sizeof(float));
	float *t = mallocCheck((size_t)OC * IC * sizeof(float));
	for (int i = 0; i < n; i++)
		for (int o = 0; o < OC; o++)
			dT[(size_t)o * n + i] = dout[(size_t)i * OC + o];
	for (int i = 0; i < n; i++)
		for (int c = 0; c < IC; c++)
			xT[(size_t)c * n + i] = x[(size_t)i * IC + c];
	Tensor bx = {DT_F32, 2, {IC, n}, xT};
	matmul_forward_cpu(t, dT, &bx, NULL, OC, n, IC);
	for (size_t i = 0; i < (size_t)OC * IC; i++)
		dW[i] += t[i];
	if (db)
		for (int o = 0; o < OC; o++) {
			double sb = 0;
			for (int i = 0; i < n; i++)
				sb += dT[(size_t)o * n + i];
			db[o] += (float)sb;
		}
	free(dT), free(xT), free(t);
}

/* x (rows of D) scaled to unit norm in place; nrm (rows) keeps 1/norm */
static void l2norm_rows(float *x, float *inv, size_t rows, int D)
{
	for (size_t r = 0; r < rows; r++) {
		double s = 0;
		for (int i = 0; i < D; i++)
			s += (double)x[r * D + i] * x[r * D + i];
		inv[r] = (float)(1 / sqrt(s + L2_EPS));
		for (int i = 0; i < D; i++)
			x[r * D + i] *= inv[r];
	}
}

/* dx of y = x / |x| from dy and y, in place of dy */
static void l2norm_back(float *d, const float *y, const float *inv, size_t rows, int D)
{
	for (size_t r = 0; r < rows; r++) {
		double s = 0;
		for (int i = 0; i < D; i++)
			s += (double)d[r * D + i] * y[r * D + i];
		for (int i = 0; i < D; i++)
			d[r * D + i] = (float)(inv[r] * (d[r * D + i] - y[r * D + i] * s));
	}
}

/* (n, G, D) rows repeated to (n, H, D): head h reads kv head h / (H / G) */
static void repeat_heads(float *dst, const float *src, int n, int H, int G, int D)
{
	for (int t = 0; t < n; t++)
		for (int h = 0; h < H; h++)
			memcpy(dst + ((size_t)t * H + h) * D, src + ((size_t)t * G + h / (H / G)) * D, (size_t)D * sizeof(float));
}

/* its backward: the heads of a group summed */
static void sum_heads(float *dst, const float *src, int n, int H, int G, int D)
{
	memset(dst, 0, (size_t)n * G * D * sizeof(float));
	for (int t = 0; t < n; t++)
		for (int h = 0; h < H; h++)
			for (int i = 0; i < D; i++)
				dst[((size_t)t * G + h / (H / G)) * D + i] += src[((size_t)t * H + h) * D + i];
}

/* everything the forward computes, for the backward */
typedef struct {
	float *pq, *pk, *pv;  /* projections (n, HD), (n, GD), (n, GD) */
	float *q, *k, *v;     /* the recurrence's inputs, (n, HD) each (k, v repeated) */
	float *kg, *vg;       /* k and v before the repeat (n, GD) */
	float *qinv, *kinv;   /* 1/norms, (n H) and (n G) (gdn) */
	float *za, *g, *zb, *beta; /* (n, H) (gdn) */
	float *h1, *zgk, *gk; /* (n, R), (n, HD), (n, HD) (gla) */
	float *o, *rstd, *zg, *y; /* (n, HD), (n H), (n, HD), (n, HD) */
} Cache;

/* gdn and gla; S (B, H, D, D) the state in and out, or NULL for a zero
 * start; f8: gdn's products through e4m3 (lop_forward_fp8) */
static void forward(const LinearOp *op, Cache *c, float *a, const float *u, int B, int T, float *S0, int f8)
{
	int n = B * T, C = op->C, H = op->H, G = op->G, D = op->D, HD = H * D, GD = G * D, gdn = op->kind == LOP_GDN;
	size_t nHD = (size_t)n * HD, nGD = (size_t)n * GD;
#define ALLOC(x, count) (c->x = mallocCheck((size_t)(count) * sizeof(float)))
	ALLOC(pq, nHD), ALLOC(pk, nGD), ALLOC(pv, nGD), ALLOC(q, nHD), ALLOC(k, nHD), ALLOC(v, nHD);
	ALLOC(kg, nGD), ALLOC(vg, nGD), ALLOC(o, nHD), ALLOC(rstd, (size_t)n * H), ALLOC(zg, nHD), ALLOC(y, nHD);
	lin8(f8, c->pq, u, P(op, "wq"), P(op, "bq"), n, C, HD);
	lin8(f8, c->pk, u, P(op, "wk"), P(op, "bk"), n, C, GD);
	lin8(f8, c->pv, u, P(op, "wv"), P(op, "bv"), n, C, GD);
	if (gdn) {
		ALLOC(qinv, (size_t)n * H), ALLOC(kinv, (size_t)n * G);
		for (size_t i = 0; i < nHD; i++)
			c->q[i] = siluf_(c->pq[i]);
		for (size_t i = 0; i < nGD; i++)
			c->kg[i] = siluf_(c->pk[i]), c->vg[i] = siluf_(c->pv[i]);
		l2norm_rows(c->q, c->qinv, (size_t)n * H, D);
		l2norm_rows(c->kg, c->kinv, (size_t)n * G, D);
		ALLOC(za, (size_t)n * H), ALLOC(g, (size_t)n * H), ALLOC(zb, (size_t)n * H), ALLOC(beta, (size_t)n * H);
		lin8(f8, c->za, u, P(op, "wa"), P(op, "dt_bias"), n, C, H);
		lin8(f8, c->zb, u, P(op, "wb"), NULL, n, C, H);
		const float *A = P(op, "A_log");
		for (int t = 0; t < n; t++)
			for (int h = 0; h < H; h++) {
				size_t i = (size_t)t * H + h;
				c->g[i] = -expf(A[h]) * softplusf_(c->za[i]);
				c->beta[i] = sigmoidf_(c->zb[i]);
			}
	} else {
		memcpy(c->q, c->pq, nHD * sizeof(float));
		memcpy(c->kg, c->pk, nGD * sizeof(float));
		memcpy(c->vg, c->pv, nGD * sizeof(float));
		ALLOC(h1, (size_t)n * op->R), ALLOC(zgk, nHD), ALLOC(gk, nHD);
		lin(c->h1, u, P(op, "wgk1"), NULL, n, C, op->R);
		lin(c->zgk, c->h1, P(op, "wgk2"), P(op, "bgk"), n, op->R, HD);
		for (size_t i = 0; i < nHD; i++)
			c->gk[i] = logsigmoidf_(c->zgk[i]) / 16;
	}
#undef ALLOC
	repeat_heads(c->k, c->kg, n, H, G, D);
	repeat_heads(c->v, c->vg, n, H, G, D);
	float *S = S0 ? S0 : callocCheck((size_t)B * H * D * D, sizeof(float)), scale = 1 / sqrtf((float)D);
	if (gdn)
		gdn_forward_chunked(c->o, S, c->q, c->k, c->v, c->g, c->beta, B, T, H, D, D, scale, 64);
	else
		gla_forward_chunked(c->o, S, c->q, c->k, c->v, c->gk, B, T, H, D, D, scale, 64);
	if (!S0)
		free(S);
	/* y = rmsnorm over D (per head) * onorm * silu(Wg u) */
	lin8(f8, c->zg, u, P(op, "wg"), NULL, n, C, HD);
	const float *on = P(op, "onorm");
	for (size_t r = 0; r < (size_t)n * H; r++) {
		double s = 0;
		for (int i = 0; i < D; i++)
			s += (double)c->o[r * D + i] * c->o[r * D + i];
		c->rstd[r] = (float)(1 / sqrt(s / D + NORM_EPS));
		for (int i = 0; i < D; i++)
			c->y[r * D + i] = c->o[r * D + i] * c->rstd[r] * on[i] * siluf_(c->zg[r * D + i]);
	}
	lin8(f8, a, c->y, P(op, "wo"), P(op, "bo"), n, HD, C);
}

static void cache_free(Cache *c)
{
	float **all = (float **)c;
	for (size_t i = 0; i < sizeof *c / sizeof(float *); i++)
		free(all[i]);
}

/* swa: q (n, HD) and k (n, GD) after RoPE at positions pos0.., v (n, GD),
 * the attention's output o (n, HD) */
static void swa_project(const LinearOp *op, Cache *c, const float *u, int B, int T, long long pos0)
{
	int n = B * T, C = op->C, H = op->H, G = op->G, D = op->D, HD = H * D, GD = G * D;
	c->q = mallocCheck((size_t)n * HD * sizeof(float)), c->o = mallocCheck((size_t)n * HD * sizeof(float));
	c->kg = mallocCheck((size_t)n * GD * sizeof(float)), c->vg = mallocCheck((size_t)n * GD * sizeof(float));
	lin(c->q, u, P(op, "wq"), P(op, "bq"), n, C, HD);
	lin(c->kg, u, P(op, "wk"), P(op, "bk"), n, C, GD);
	lin(c->vg, u, P(op, "wv"), P(op, "bv"), n, C, GD);
	rope_forward_cpu(c->q, op->inv_freq, B, T, (int)pos0, H, D);
	rope_forward_cpu(c->kg, op->inv_freq, B, T, (int)pos0, G, D);
}

static void swa_forward(const LinearOp *op, Cache *c, float *a, const float *u, int B, int T)
{
	swa_project(op, c, u, B, T, 0);
	attention_forward_cpu(c->o, c->q, c->kg, c->vg, B, T, op->H, op->G, op->D, op->window);
	lin(a, c->o, P(op, "wo"), P(op, "bo"), B * T, op->H * op->D, op->C);
}

void lop_forward(const LinearOp *op, float *a, const float *u, int B, int T)
{
	Cache c = {0};
	if (op->kind == LOP_SWA)
		swa_forward(op, &c, a, u, B, T);
	else
		forward(op, &c, a, u, B, T, NULL, 0);
	cache_free(&c);
}

void lop_forward_fp8(const LinearOp *op, float *a, const float *u, int B, int T)
{
	if (op->kind != LOP_GDN)
		BUG("lop_forward_fp8: %s, not gdn", lop_name(op->kind));
	Cache c = {0};
	forward(op, &c, a, u, B, T, NULL, 1);
	cache_free(&c);
}

void lop_forward_state(const LinearOp *op, float *a, const float *u, int B, int T, float *S)
{
	if (op->kind == LOP_SWA)
		BUG("lop_forward_state: swa carries no recurrent state");
	Cache c = {0};
	forward(op, &c, a, u, B, T, S, 0);
	cache_free(&c);
}

/* the backward of swa_forward, gradients as lop_backward's */
static void swa_backward(const LinearOp *op, float *grad, float *du, const float *da, const float *u, int B, int T)
{
	int n = B * T, C = op->C, H = op->H, G = op->G, D = op->D, HD = H * D, GD = G * D;
	Cache c = {0};
	float *a = mallocCheck((size_t)n * C * sizeof(float));
	swa_forward(op, &c, a, u, B, T);
	free(a);
#define G_(name) (grad ? grad + lop_param(op, name)->off : NULL)
	float *dy = callocCheck((size_t)n * HD, sizeof(float)), *dq = mallocCheck((size_t)n * HD * sizeof(float));
	float *dk = mallocCheck((size_t)n * GD * sizeof(float)), *dv = mallocCheck((size_t)n * GD * sizeof(float));
	lin_back(dy, G_("wo"), G_("bo"), da, c.o, P(op, "wo"), n, HD, C);
	attention_backward_cpu(dq, dk, dv, dy, c.q, c.kg, c.vg, B, T, H, G, D, op->window);
	rope_backward_cpu(dq, op->inv_freq, B, T, 0, H, D);
	rope_backward_cpu(dk, op->inv_freq, B, T, 0, G, D);
	if (du)
		memset(du, 0, (size_t)n * C * sizeof(float));
	lin_back(du, G_("wq"), G_("bq"), dq, u, P(op, "wq"), n, C, HD);
	lin_back(du, G_("wk"), G_("bk"), dk, u, P(op, "wk"), n, C, GD);
	lin_back(du, G_("wv"), G_("bv"), dv, u, P(op, "wv"), n, C, GD);
#undef G_
	free(dy), free(dq), free(dk), free(dv);
	cache_free(&c);
}

/* lop_backward, or with fp8 (LOP_FP8_ bits) lop_backward_fp8 (grad NULL,
 * gdn) */
static void backward(const LinearOp *op, float *grad, float *du, const float *da, const float *u, int B, int T,
                     int fp8)
{
	if (op->kind == LOP_SWA) {
		swa_backward(op, grad, du, da, u, B, T);
		return;
	}
	int n = B * T, C = op->C, H = op->H, G = op->G, D = op->D, HD = H * D, GD = G * D, gdn = op->kind == LOP_GDN;
	size_t nHD = (size_t)n * HD, nGD = (size_t)n * GD;
	Cache c = {0};
	float *a = mallocCheck((size_t)n * C * sizeof(float));
	forward(op, &c, a, u, B, T, NULL, fp8 & LOP_FP8_FWD);
	free(a);
	fp8 &= LOP_FP8_GRAD;
#define G_(name) (grad ? grad + lop_param(op, name)->off : NULL)
	if (du)
		memset(du, 0, (size_t)n * C * sizeof(float));
	/* a = Wo y + bo */
	float *dy = callocCheck(nHD, sizeof(float));
	if (fp8)
		matmul_backward_fp8_f32_cpu(dy, da, P(op, "wo"), n, HD, C);
	else
		lin_back(dy, G_("wo"), G_("bo"), da, c.y, P(op, "wo"), n, HD, C);
	/* y = o rstd onorm silu(zg) */
	float *dO = mallocCheck(nHD * sizeof(float)), *dzg = mallocCheck(nHD * sizeof(float));
	const float *on = P(op, "onorm");
	float *don = G_("onorm");
	for (size_t r = 0; r < (size_t)n * H; r++) {
		double sm = 0;
		for (int i = 0; i < D; i++) {
			size_t j = r * D + i;
			float xh = c.o[j] * c.rstd[r], gt = siluf_(c.zg[j]);
			dzg[j] = dy[j] * xh * on[i] * silu_grad(c.zg[j]);
			if (don)
				don[i] += dy[j] * xh * gt;
			float m = dy[j] * on[i] * gt; /* dL/dxhat */
			dO[j] = m;
			sm += (double)m * xh;
		}
		for (int i = 0; i < D; i++) {
			size_t j = r * D + i;
			dO[j] = (float)(c.rstd[r] * (dO[j] - c.o[j] * c.rstd[r] * sm / D));
		}
	}
	if (!fp8)
		lin_back(du, G_("wg"), NULL, dzg, u, P(op, "wg"), n, C, HD);
	/* the recurrence */
	float *dq = mallocCheck(nHD * sizeof(float)), *dk = mallocCheck(nHD * sizeof(float));
	float *dv = mallocCheck(nHD * sizeof(float)), scale = 1 / sqrtf((float)D);
	float *dpk = mallocCheck(nGD * sizeof(float)), *dpv = mallocCheck(nGD * sizeof(float));
	float *dg = NULL, *db = NULL;
	if (gdn) {
		dg = mallocCheck((size_t)n * H * sizeof(float)), db = mallocCheck((size_t)n * H * sizeof(float));
		gdn_backward(dq, dk, dv, dg, db, NULL, dO, NULL, c.q, c.k, c.v, c.g, c.beta, NULL, B, T, H, D, D, scale);
		/* beta = sigmoid(zb); g = -exp(A) softplus(za) */
		const float *A = P(op, "A_log");
		float *dA = G_("A_log");
		for (int t = 0; t < n; t++)
			for (int h = 0; h < H; h++) {
				size_t i = (size_t)t * H + h;
				db[i] *= c.beta[i] * (1 - c.beta[i]);
				if (dA)
					dA[h] += dg[i] * c.g[i];
				dg[i] *= -expf(A[h]) * sigmoidf_(c.za[i]);
			}
		if (!fp8) {
			lin_back(du, G_("wb"), NULL, db, u, P(op, "wb"), n, C, H);
			lin_back(du, G_("wa"), G_("dt_bias"), dg, u, P(op, "wa"), n, C, H);
		}
		/* q = l2norm(silu(pq)), k likewise before the repeat, v = silu(pv) */
		l2norm_back(dq, c.q, c.qinv, (size_t)n * H, D);
		for (size_t i = 0; i < nHD; i++)
			dq[i] *= silu_grad(c.pq[i]);
		sum_heads(dpk, dk, n, H, G, D);
		sum_heads(dpv, dv, n, H, G, D);
		l2norm_back(dpk, c.kg, c.kinv, (size_t)n * G, D);
		for (size_t i = 0; i < nGD; i++)
			dpk[i] *= silu_grad(c.pk[i]), dpv[i] *= silu_grad(c.pv[i]);
	} else {
		float *dgk = mallocCheck(nHD * sizeof(float));
		gla_backward(dq, dk, dv, dgk, NULL, dO, NULL, c.q, c.k, c.v, c.gk, NULL, B, T, H, D, D, scale);
		/* gk = logsigmoid(zgk) / 16, zgk = Wgk2 h1 + bgk, h1 = Wgk1 u */
		for (size_t i = 0; i < nHD; i++)
			dgk[i] *= (1 - sigmoidf_(c.zgk[i])) / 16;
		float *dh1 = callocCheck((size_t)n * op->R, sizeof(float));
		lin_back(dh1, G_("wgk2"), G_("bgk"), dgk, c.h1, P(op, "wgk2"), n, op->R, HD);
		lin_back(du, G_("wgk1"), NULL, dh1, u, P(op, "wgk1"), n, C, op->R);
		free(dgk), free(dh1);
		sum_heads(dpk, dk, n, H, G, D);
		sum_heads(dpv, dv, n, H, G, D);
	}
	if (fp8) { /* the six projections' gradients as one row, their weights stacked (PJ_ order on the GPU) */
		const char *nm[] = {"wq", "wk", "wv", "wa", "wb", "wg"};
		Tensor w[6];
		const Tensor *wp[6];
		int oc[] = {HD, GD, GD, H, H, HD};
		for (int j = 0; j < 6; j++)
			w[j] = (Tensor){DT_F32, 2, {oc[j], C}, P(op, nm[j])}, wp[j] = &w[j];
		matmul_backward_fp8_cat_cpu(du, n, C, 6, (const float *[]){dq, dpk, dpv, dg, db, dzg}, wp, oc);
	} else {
		lin_back(du, G_("wq"), G_("bq"), dq, u, P(op, "wq"), n, C, HD);
		lin_back(du, G_("wk"), G_("bk"), dpk, u, P(op, "wk"), n, C, GD);
		lin_back(du, G_("wv"), G_("bv"), dpv, u, P(op, "wv"), n, C, GD);
	}
#undef G_
	free(dy), free(dO), free(dzg), free(dq), free(dk), free(dv), free(dpk), free(dpv), free(dg), free(db);
	cache_free(&c);
}

void lop_backward(const LinearOp *op, float *grad, float *du, const float *da, const float *u, int B, int T)
{
	backward(op, grad, du, da, u, B, T, 0);
}

void lop_backward_fp8(const LinearOp *op, float *du, const float *da, const float *u, int B, int T, int fp8)
{
	if (op->kind != LOP_GDN)
		BUG("lop_backward_fp8: %s, not gdn", lop_name(op->kind));
	if (!du)
		BUG("lop_backward_fp8: no du");
	backward(op, NULL, du, da, u, B, T, fp8);
}

// ----------------------------------------------------------------------------
// decoding

void lop_state_init(LopState *s, const LinearOp *op, int B)
{
	memset(s, 0, sizeof *s);
	s->B = B;
	if (op->kind == LOP_SWA) {
		if (op->window < 1)
			BUG("lop_state_init: swa window %d", op->window);
		size_t n = (size_t)B * op->window * op->G * op->D;
		s->kc = callocCheck(n, sizeof(float)), s->vc = callocCheck(n, sizeof(float));
	} else {
		s->S = callocCheck((size_t)B * op->H * op->D * op->D, sizeof(float));
	}
}

void lop_state_free(LopState *s)
{
	free(s->S), free(s->kc), free(s->vc);
	memset(s, 0, sizeof *s);
}

void lop_decode(const LinearOp *op, LopState *s, float *a, const float *u)
{
	int B = s->B;
	Cache c = {0};
	if (op->kind != LOP_SWA) {
		forward(op, &c, a, u, B, 1, s->S, 0); /* the chunked form at T = 1 is the recurrent step */
		cache_free(&c);
		s->pos++;
		return;
	}
	int H = op->H, G = op->G, D = op->D, W = op->window, GD = G * D;
	swa_project(op, &c, u, B, 1, s->pos);
	int n = s->pos + 1 < W ? (int)s->pos + 1 : W; /* positions in view, the new one last */
	float *kl = mallocCheck((size_t)n * GD * sizeof(float)), *vl = mallocCheck((size_t)n * GD * sizeof(float));
	for (int b = 0; b < B; b++) {
		float *kc = s->kc + (size_t)b * W * GD, *vc = s->vc + (size_t)b * W * GD;
		memcpy(kc + (size_t)(s->pos % W) * GD, c.kg + (size_t)b * GD, GD * sizeof(float));
		memcpy(vc + (size_t)(s->pos % W) * GD, c.vg + (size_t)b * GD, GD * sizeof(float));
		for (int i = 0; i < n; i++) { /* the ring in time order */
			long long p = s->pos - n + 1 + i;
			memcpy(kl + (size_t)i * GD, kc + (size_t)(p % W) * GD, GD * sizeof(float));
			memcpy(vl + (size_t)i * GD, vc + (size_t)(p % W) * GD, GD * sizeof(float));
		}
		attention_step_cpu(c.o + (size_t)b * H * D, c.q + (size_t)b * H * D, kl, vl, n, H, G, D, 0);
	}
	lin(a, c.o, P(op, "wo"), P(op, "bo"), B, H * D, op->C);
	free(kl), free(vl);
	cache_free(&c);
	s->pos++;
}
