/*
 * forward: the teacher's forward pass on the CPU, layer by layer over the
 * reference operators of ops_cpu. The specification of every GPU forward.
 */
#include <stdlib.h>
#include <string.h>

#include "fp8.h"
#include "model.h"
#include "ops_cpu.h"
#include "util.h"

void layer_scratch_init(LayerScratch *s, const ModelConfig *c, int n)
{
	size_t nC = (size_t)n * c->C, nH = (size_t)n * c->H * c->D, nG = (size_t)n * c->G * c->D;
	size_t nF = (size_t)n * c->F;
	s->u = mallocCheck(nC * sizeof(float)), s->a = mallocCheck(nC * sizeof(float));
	s->h = mallocCheck(nC * sizeof(float)), s->u2 = mallocCheck(nC * sizeof(float));
	s->q = mallocCheck(nH * sizeof(float)), s->att = mallocCheck(nH * sizeof(float));
	s->k = mallocCheck(nG * sizeof(float)), s->v = mallocCheck(nG * sizeof(float));
	s->g = mallocCheck(nF * sizeof(float)), s->up = mallocCheck(nF * sizeof(float));
	s->act = mallocCheck(nF * sizeof(float));
	s->fp8 = 0;
}

void layer_scratch_free(LayerScratch *s)
{
	free(s->u), free(s->a), free(s->h), free(s->u2), free(s->q), free(s->att);
	free(s->k), free(s->v), free(s->g), free(s->up), free(s->act);
	memset(s, 0, sizeof *s);
}

/* out (n, OC) = x w^T + b: float32, or through e4m3 under s->fp8 */
static void product(const LayerScratch *s, float *out, const float *x, const Tensor *w, const Tensor *b, int n, int IC,
                    int OC)
{
	(s->fp8 ? matmul_forward_fp8_cpu : matmul_forward_cpu)(out, x, w, b, n, IC, OC);
}

void layer_forward(const Model *m, int l, const float *x, float *xout, LayerScratch *s, int B, int T,
                   LayerHook hook, void *ctx)
{
	const ModelConfig *c = &m->cfg;
	const LayerWeights *w = &m->layers[l];
	int n = B * T, C = c->C, HD = c->H * c->D, GD = c->G * c->D, F = c->F;
	/* attention block: u = norm(x), a = Wo attn(rope(Wq u), rope(Wk u), Wv u) */
	rmsnorm_forward_cpu(s->u, x, &w->ln1, n, C, c->eps);
	product(s, s->q, s->u, &w->wq, &w->bq, n, C, HD);
	product(s, s->k, s->u, &w->wk, &w->bk, n, C, GD);
	product(s, s->v, s->u, &w->wv, &w->bv, n, C, GD);
	rope_forward_cpu(s->q, m->inv_freq, B, T, 0, c->H, c->D);
	rope_forward_cpu(s->k, m->inv_freq, B, T, 0, c->G, c->D);
	attention_forward_cpu(s->att, s->q, s->k, s->v, B, T, c->H, c->G, c->D, 0);
	product(s, s->a, s->att, &w->wo, &w->bo, n, HD, C);
	if (hook)
		hook(ctx, l, s->u, s->a, B, T);
	/* h = x + a; MLP block: x' = h + Wdown(silu(Wgate u2) * Wup u2), u2 = norm(h) */
	memcpy(s->h, x, (size_t)n * C * sizeof(float));
	residual_forward_cpu(s->h, s->a, (int64_t)n * C);
	rmsnorm_forward_cpu(s->u2, s->h, &w->ln2, n, C, c->eps);
	product(s, s->g, s->u2, &w->wgate, &w->bgate, n, C, F);
	product(s, s->up, s->u2, &w->wup, &w->bup, n, C, F);
	swiglu_forward_cpu(s->act, s->g, s->up, (int64_t)n * F);
	product(s, xout, s->act, &w->wdown, &w->bdown, n, F, C);
	residual_forward_cpu(xout, s->h, (int64_t)n * C);
}

static void forward(const Model *m, const int32_t *ids, int B, int T, float *hidden, LayerHook hook, void *ctx, int fp8)
{
	const ModelConfig *c = &m->cfg;
	int n = B * T;
	float *x = mallocCheck((size_t)n * c->C * sizeof(float)); // (B*T, C) residual stream
	float *y = mallocCheck((size_t)n * c->C * sizeof(float));
	LayerScratch s;
	layer_scratch_init(&s, c, n);
	s.fp8 = fp8;
	embedding_forward_cpu(x, ids, &m->embed, n, c->C);
	for (int l = 0; l < c->L; l++) {
		layer_forward(m, l, x, y, &s, B, T, hook, ctx);
		float *t = x;
		x = y, y = t;
	}
	rmsnorm_forward_cpu(hidden, x, &m->norm, n, c->C, c->eps);
	layer_scratch_free(&s);
	free(x), free(y);
}

void model_forward(const Model *m, const int32_t *ids, int B, int T, float *hidden, LayerHook hook, void *ctx)
{
	forward(m, ids, B, T, hidden, hook, ctx, 0);
}

void model_forward_fp8(const Model *m, const int32_t *ids, int B, int T, float *hidden, LayerHook hook, void *ctx)
{
	forward(m, ids, B, T, hidden, hook, ctx, 1);
}

void model_logits(const Model *m, const float *hidden, int n, float *logits)
{
	matmul_forward_cpu(logits, hidden, &m->lm_head, NULL, n, m->cfg.C, m->cfg.V);
}

// ----------------------------------------------------------------------------
// decoding, one token at a time over a key/value cache

void kvcache_init(KVCache *kv, const Model *m, int cap)
{
	const ModelConfig *c = &m->cfg;
	kv->cap = cap;
	kv->n = 0;
	kv->gd = c->G * c->D;
	kv->k = mallocCheck((size_t)c->L * cap * kv->gd * sizeof(float));
	kv->v = mallocCheck((size_t)c->L * cap * kv->gd * sizeof(float));
}

void kvcache_free(KVCache *kv)
{
	free(kv->k), free(kv->v);
	memset(kv, 0, sizeof *kv);
}

void model_step(const Model *m, KVCache *kv, int32_t token, float *logits)
{
	const ModelConfig *c = &m->cfg;
	int C = c->C, HD = c->H * c->D, GD = kv->gd, F = c->F, pos = kv->n;
	ASSERT(pos < kv->cap && token >= 0 && token < c->V);
	float *x = mallocCheck((size_t)C * sizeof(float)), *u = mallocCheck((size_t)C * sizeof(float));
	float *a = mallocCheck((size_t)C * sizeof(float)), *q = mallocCheck((size_t)HD * sizeof(float));
	float *att = mallocCheck((size_t)HD * sizeof(float));
	float *g = mallocCheck((size_t)F * sizeof(float)), *up = mallocCheck((size_t)F * sizeof(float));
	embedding_forward_cpu(x, &token, &m->embed, 1, C);
	for (int l = 0; l < c->L; l++) {
		const LayerWeights *w = &m->layers[l];
		float *kc = kv->k + (size_t)l * kv->cap * GD, *vc = kv->v + (size_t)l * kv->cap * GD;
		rmsnorm_forward_cpu(u, x, &w->ln1, 1, C, c->eps);
		matmul_forward_cpu(q, u, &w->wq, &w->bq, 1, C, HD);
		matmul_forward_cpu(kc + (size_t)pos * GD, u, &w->wk, &w->bk, 1, C, GD);
		matmul_forward_cpu(vc + (size_t)pos * GD, u, &w->wv, &w->bv, 1, C, GD);
		rope_forward_cpu(q, m->inv_freq, 1, 1, pos, c->H, c->D);
		rope_forward_cpu(kc + (size_t)pos * GD, m->inv_freq, 1, 1, pos, c->G, c->D);
		attention_step_cpu(att, q, kc, vc, pos + 1, c->H, c->G, c->D, 0);
		matmul_forward_cpu(a, att, &w->wo, &w->bo, 1, HD, C);
		residual_forward_cpu(x, a, C);
		rmsnorm_forward_cpu(u, x, &w->ln2, 1, C, c->eps);
		matmul_forward_cpu(g, u, &w->wgate, &w->bgate, 1, C, F);
		matmul_forward_cpu(up, u, &w->wup, &w->bup, 1, C, F);
		swiglu_forward_cpu(g, g, up, F);
		matmul_forward_cpu(a, g, &w->wdown, &w->bdown, 1, F, C);
		residual_forward_cpu(x, a, C);
	}
	kv->n++;
	rmsnorm_forward_cpu(u, x, &m->norm, 1, C, c->eps);
	model_logits(m, u, 1, logits);
	free(x), free(u), free(a), free(q), free(att), free(g), free(up);
}

void model_unpack(Model *m)
{
	const ModelConfig *c = &m->cfg;
	Tensor *all[] = {&m->embed, &m->lm_head};
	int tied = m->lm_head.data == m->embed.data;
	for (size_t i = 0; i < 2; i++)
		if (!(i == 1 && tied))
			unpack_tensor(m, all[i]);
	if (tied)
		m->lm_head = m->embed;
	for (int l = 0; l < c->L; l++) {
		Tensor *t = (Tensor *)&m->layers[l];
		for (size_t i = 0; i < sizeof(LayerWeights) / sizeof(Tensor); i++)
			unpack_tensor(m, &t[i]);
	}
}
