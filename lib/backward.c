/*
 * backward: the teacher's backward pass on the CPU, with respect to
 * activations only (every weight is frozen in the stages that
 * differentiate). Each layer's input is kept from a forward pass; the rest
 * of the layer is recomputed when the backward reaches it. The
 * specification of the GPU backward.
 */
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "ops_cpu.h"
#include "util.h"

void model_logits_backward(const Model *m, const float *dlogits, int n, float *dhidden)
{
	matmul_backward_cpu(dhidden, dlogits, &m->lm_head, n, m->cfg.C, m->cfg.V);
}

void model_backward(const Model *m, const int32_t *ids, int B, int T, const float *dhidden,
                    LayerGradHook grad_hook, void *ctx, float *dx0)
{
	const ModelConfig *c = &m->cfg;
	int n = B * T, C = c->C, HD = c->H * c->D, GD = c->G * c->D, F = c->F;
	size_t nC = (size_t)n * C;
#define BUF(count) mallocCheck((size_t)(count) * sizeof(float))
	float *xs = BUF((size_t)(c->L + 1) * nC); // (L+1, B*T, C) each layer's input, then the last output
	float *u = BUF(nC), *a = BUF(nC), *h = BUF(nC), *u2 = BUF(nC);
	float *q = BUF((size_t)n * HD), *k = BUF((size_t)n * GD), *v = BUF((size_t)n * GD);
	float *att = BUF((size_t)n * HD), *g = BUF((size_t)n * F), *up = BUF((size_t)n * F);
	float *act = BUF((size_t)n * F);
	float *dx = BUF(nC), *dh = BUF(nC), *du = BUF(nC), *tmp = BUF(nC);
	float *dq = BUF((size_t)n * HD), *dk = BUF((size_t)n * GD), *dv = BUF((size_t)n * GD);
	float *datt = BUF((size_t)n * HD), *dg = BUF((size_t)n * F), *dup = BUF((size_t)n * F);

	/* forward, keeping each layer's input */
	embedding_forward_cpu(xs, ids, &m->embed, n, C);
	for (int l = 0; l < c->L; l++) {
		const LayerWeights *w = &m->layers[l];
		float *x = xs + (size_t)l * nC, *xn = x + nC;
		rmsnorm_forward_cpu(u, x, &w->ln1, n, C, c->eps);
		matmul_forward_cpu(q, u, &w->wq, &w->bq, n, C, HD);
		matmul_forward_cpu(k, u, &w->wk, &w->bk, n, C, GD);
		matmul_forward_cpu(v, u, &w->wv, &w->bv, n, C, GD);
		rope_forward_cpu(q, m->inv_freq, B, T, 0, c->H, c->D);
		rope_forward_cpu(k, m->inv_freq, B, T, 0, c->G, c->D);
		attention_forward_cpu(att, q, k, v, B, T, c->H, c->G, c->D, 0);
		matmul_forward_cpu(a, att, &w->wo, &w->bo, n, HD, C);
		memcpy(xn, x, nC * sizeof(float));
		residual_forward_cpu(xn, a, (int64_t)nC);
		rmsnorm_forward_cpu(u2, xn, &w->ln2, n, C, c->eps);
		matmul_forward_cpu(g, u2, &w->wgate, &w->bgate, n, C, F);
		matmul_forward_cpu(up, u2, &w->wup, &w->bup, n, C, F);
		swiglu_forward_cpu(act, g, up, (int64_t)n * F);
		matmul_forward_cpu(a, act, &w->wdown, &w->bdown, n, F, C);
		residual_forward_cpu(xn, a, (int64_t)nC);
	}

	/* the final norm */
	rmsnorm_backward_cpu(dx, dhidden, xs + (size_t)c->L * nC, &m->norm, n, C, c->eps);
	for (int l = c->L - 1; l >= 0; l--) {
		const LayerWeights *w = &m->layers[l];
		const float *x = xs + (size_t)l * nC;
		/* recompute the layer: u, q, k, v, att, a, h = x + a, u2, g, up */
		rmsnorm_forward_cpu(u, x, &w->ln1, n, C, c->eps);
		matmul_forward_cpu(q, u, &w->wq, &w->bq, n, C, HD);
		matmul_forward_cpu(k, u, &w->wk, &w->bk, n, C, GD);
		matmul_forward_cpu(v, u, &w->wv, &w->bv, n, C, GD);
		rope_forward_cpu(q, m->inv_freq, B, T, 0, c->H, c->D);
		rope_forward_cpu(k, m->inv_freq, B, T, 0, c->G, c->D);
		attention_forward_cpu(att, q, k, v, B, T, c->H, c->G, c->D, 0);
		matmul_forward_cpu(a, att, &w->wo, &w->bo, n, HD, C);
		memcpy(h, x, nC * sizeof(float));
		residual_forward_cpu(h, a, (int64_t)nC);
		rmsnorm_forward_cpu(u2, h, &w->ln2, n, C, c->eps);
		matmul_forward_cpu(g, u2, &w->wgate, &w->bgate, n, C, F);
		matmul_forward_cpu(up, u2, &w->wup, &w->bup, n, C, F);

		/* MLP: x' = h + Wdown(silu(g) * up) */
		matmul_backward_cpu(act, dx, &w->wdown, n, F, C); /* d(silu(g) * up) */
		swiglu_backward_cpu(dg, dup, act, g, up, (int64_t)n * F);
		matmul_backward_cpu(du, dg, &w->wgate, n, C, F);
		matmul_backward_cpu(tmp, dup, &w->wup, n, C, F);
		residual_forward_cpu(du, tmp, (int64_t)nC);
		rmsnorm_backward_cpu(dh, du, h, &w->ln2, n, C, c->eps);
		residual_forward_cpu(dh, dx, (int64_t)nC); /* dL/dh: the residual and the MLP */

		/* attention: h = x + a; dL/da = dL/dh */
		if (grad_hook)
			grad_hook(ctx, l, u, dh, B, T);
		matmul_backward_cpu(datt, dh, &w->wo, n, HD, C);
		attention_backward_cpu(dq, dk, dv, datt, q, k, v, B, T, c->H, c->G, c->D, 0);
		rope_backward_cpu(dq, m->inv_freq, B, T, 0, c->H, c->D);
		rope_backward_cpu(dk, m->inv_freq, B, T, 0, c->G, c->D);
		matmul_backward_cpu(du, dq, &w->wq, n, C, HD);
		matmul_backward_cpu(tmp, dk, &w->wk, n, C, GD);
		residual_forward_cpu(du, tmp, (int64_t)nC);
		matmul_backward_cpu(tmp, dv, &w->wv, n, C, GD);
		residual_forward_cpu(du, tmp, (int64_t)nC);
		rmsnorm_backward_cpu(dx, du, x, &w->ln1, n, C, c->eps);
		residual_forward_cpu(dx, dh, (int64_t)nC); /* dL/dx: the residual and the attention */
	}
	if (dx0)
		memcpy(dx0, dx, nC * sizeof(float));
	free(xs), free(u), free(a), free(h), free(u2), free(q), free(k), free(v), free(att), free(g);
	free(up), free(act), free(dx), free(dh), free(du), free(tmp), free(dq), free(dk), free(dv);
	free(datt), free(dg), free(dup);
#undef BUF
}
