/*
 * forward: the teacher's forward pass on the CPU, layer by layer over the
 * reference operators of ops_cpu. The specification of every GPU forward.
 */
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "ops_cpu.h"
#include "util.h"

void model_forward(const Model *m, const int32_t *ids, int B, int T, float *hidden,
                   LayerHook hook, void *ctx)
{
	const ModelConfig *c = &m->cfg;
	int n = B * T, C = c->C, HD = c->H * c->D, GD = c->G * c->D, F = c->F;
	float *x = mallocCheck((size_t)n * C * sizeof(float));   // (B*T, C) residual stream
	float *u = mallocCheck((size_t)n * C * sizeof(float));   // (B*T, C) normed input
	float *a = mallocCheck((size_t)n * C * sizeof(float));   // (B*T, C) operator output
	float *q = mallocCheck((size_t)n * HD * sizeof(float));  // (B*T, H, D)
	float *k = mallocCheck((size_t)n * GD * sizeof(float));  // (B*T, G, D)
	float *v = mallocCheck((size_t)n * GD * sizeof(float));  // (B*T, G, D)
	float *att = mallocCheck((size_t)n * HD * sizeof(float)); // (B*T, H, D)
	float *g = mallocCheck((size_t)n * F * sizeof(float));   // (B*T, F)
	float *up = mallocCheck((size_t)n * F * sizeof(float));  // (B*T, F)

	embedding_forward_cpu(x, ids, &m->embed, n, C);
	for (int l = 0; l < c->L; l++) {
		const LayerWeights *w = &m->layers[l];
		/* attention block: u = norm(x), a = Wo attn(rope(Wq u), rope(Wk u), Wv u) */
		rmsnorm_forward_cpu(u, x, &w->ln1, n, C, c->eps);
		matmul_forward_cpu(q, u, &w->wq, &w->bq, n, C, HD);
		matmul_forward_cpu(k, u, &w->wk, &w->bk, n, C, GD);
		matmul_forward_cpu(v, u, &w->wv, &w->bv, n, C, GD);
		rope_forward_cpu(q, m->inv_freq, B, T, c->H, c->D);
		rope_forward_cpu(k, m->inv_freq, B, T, c->G, c->D);
		attention_forward_cpu(att, q, k, v, B, T, c->H, c->G, c->D, 0);
		matmul_forward_cpu(a, att, &w->wo, &w->bo, n, HD, C);
		if (hook)
			hook(ctx, l, u, a, B, T);
		residual_forward_cpu(x, a, (int64_t)n * C);
		/* MLP block: x += Wdown(silu(Wgate h) * Wup h), h = norm(x) */
		rmsnorm_forward_cpu(u, x, &w->ln2, n, C, c->eps);
		matmul_forward_cpu(g, u, &w->wgate, &w->bgate, n, C, F);
		matmul_forward_cpu(up, u, &w->wup, &w->bup, n, C, F);
		swiglu_forward_cpu(g, g, up, (int64_t)n * F);
		matmul_forward_cpu(a, g, &w->wdown, &w->bdown, n, F, C);
		residual_forward_cpu(x, a, (int64_t)n * C);
	}
	rmsnorm_forward_cpu(hidden, x, &m->norm, n, C, c->eps);
	free(x), free(u), free(a), free(q), free(k), free(v), free(att), free(g), free(up);
}

void model_logits(const Model *m, const float *hidden, int n, float *logits)
{
	matmul_forward_cpu(logits, hidden, &m->lm_head, NULL, n, m->cfg.C, m->cfg.V);
}
