/*
 * backward: the teacher's backward pass on the CPU, with respect to
 * activations only (every weight is frozen in the stages that
 * differentiate). Each layer's input is kept from a forward pass; the rest
 * of the layer is recomputed when the backward reaches it. The
 * specification of the GPU backward.
 */
#include <stdlib.h>
#include <string.h>

#include "fp8.h"
#include "model.h"
#include "ops_cpu.h"
#include "util.h"

void model_logits_backward(const Model *m, const float *dlogits, int n, float *dhidden)
{
	matmul_backward_cpu(dhidden, dlogits, &m->lm_head, n, m->cfg.C, m->cfg.V);
}

double model_backward_hooks(const Model *m, const int32_t *ids, int B, int T, const float *dhidden,
                            const BackwardHooks *hk, float *dx0)
{
	static const BackwardHooks none = {0};
	const BackwardHooks *h = hk ? hk : &none;
	const ModelConfig *c = &m->cfg;
	int n = B * T, C = c->C, HD = c->H * c->D, GD = c->G * c->D, F = c->F;
	size_t nC = (size_t)n * C;
	double loss = 0;
#define BUF(count) mallocCheck((size_t)(count) * sizeof(float))
	float *xs = BUF((size_t)(c->L + 1) * nC); // (L+1, B*T, C) each layer's input, then the last output
	float *xr = BUF(nC);                      // a recomputed layer output, unused
	float *dx = BUF(nC), *dh = BUF(nC), *du = BUF(nC), *tmp = BUF(nC);
	float *dq = BUF((size_t)n * HD), *dk = BUF((size_t)n * GD), *dv = BUF((size_t)n * GD);
	float *datt = BUF((size_t)n * HD), *dact = BUF((size_t)n * F), *dg = BUF((size_t)n * F);
	float *dup = BUF((size_t)n * F), *dmix = h->mix ? BUF(nC) : NULL;
	LayerScratch s;
	layer_scratch_init(&s, c, n);
	s.fp8 = h->fwd8;

	/* forward, keeping each layer's input */
	embedding_forward_cpu(xs, ids, &m->embed, n, C);
	for (int l = 0; l < c->L; l++)
		layer_forward(m, l, xs + (size_t)l * nC, xs + (size_t)(l + 1) * nC, &s, B, T, h->forward, h->ctx);
	if (h->loss) {
		float *hidden = BUF(nC), *dhid = BUF(nC);
		rmsnorm_forward_cpu(hidden, xs + (size_t)c->L * nC, &m->norm, n, C, c->eps);
		loss = h->loss(h->ctx, hidden, dhid, n);
		rmsnorm_backward_cpu(dx, dhid, xs + (size_t)c->L * nC, &m->norm, n, C, c->eps);
		free(hidden), free(dhid);
	} else {
		rmsnorm_backward_cpu(dx, dhidden, xs + (size_t)c->L * nC, &m->norm, n, C, c->eps);
	}

	/* each layer from the last */
	for (int l = c->L - 1; l >= 0; l--) {
		const LayerWeights *w = &m->layers[l];
		const float *x = xs + (size_t)l * nC;
		layer_forward(m, l, x, xr, &s, B, T, h->forward, h->ctx); /* its intermediates again */

		/* MLP: x' = h + Wdown(silu(g) * up), g = Wgate u2, up = Wup u2, u2 = norm(h) */
		if (h->fp8) {
			matmul_backward_fp8_cat_cpu(dact, n, F, 1, (const float *[]){dx}, (const Tensor *[]){&w->wdown},
			                            (int[]){C});
			swiglu_backward_cpu(dg, dup, dact, s.g, s.up, (int64_t)n * F);
			matmul_backward_fp8_cat_cpu(du, n, C, 2, (const float *[]){dg, dup},
			                            (const Tensor *[]){&w->wgate, &w->wup}, (int[]){F, F});
		} else {
			matmul_backward_cpu(dact, dx, &w->wdown, n, F, C);
			swiglu_backward_cpu(dg, dup, dact, s.g, s.up, (int64_t)n * F);
			matmul_backward_cpu(du, dg, &w->wgate, n, C, F);
			matmul_backward_cpu(tmp, dup, &w->wup, n, C, F);
			residual_forward_cpu(du, tmp, (int64_t)nC);
		}
		rmsnorm_backward_cpu(dh, du, s.h, &w->ln2, n, C, c->eps);
		residual_forward_cpu(dh, dx, (int64_t)nC); /* dL/dh: the residual and the MLP */

		/* attention: h = x + a, so dL/da = dL/dh; a = wfa attention(u) + the hook's own */
		if (h->grad)
			h->grad(h->ctx, l, s.u, dh, B, T);
		float wfa = h->mix ? h->mix(h->ctx, l, s.u, dh, dmix, B, T) : 1;
		if (wfa != 0) {
			if (h->fp8)
				matmul_backward_fp8_cat_cpu(datt, n, HD, 1, (const float *[]){dh},
				                            (const Tensor *[]){&w->wo}, (int[]){C});
			else
				matmul_backward_cpu(datt, dh, &w->wo, n, HD, C);
			if (wfa != 1)
				for (size_t i = 0; i < (size_t)n * HD; i++)
					datt[i] *= wfa;
			attention_backward_cpu(dq, dk, dv, datt, s.q, s.k, s.v, B, T, c->H, c->G, c->D, 0);
			rope_backward_cpu(dq, m->inv_freq, B, T, 0, c->H, c->D);
			rope_backward_cpu(dk, m->inv_freq, B, T, 0, c->G, c->D);
			if (h->fp8) {
				matmul_backward_fp8_cat_cpu(du, n, C, 3, (const float *[]){dq, dk, dv},
				                            (const Tensor *[]){&w->wq, &w->wk, &w->wv},
				                            (int[]){HD, GD, GD});
			} else {
				matmul_backward_cpu(du, dq, &w->wq, n, C, HD);
				matmul_backward_cpu(tmp, dk, &w->wk, n, C, GD);
				residual_forward_cpu(du, tmp, (int64_t)nC);
				matmul_backward_cpu(tmp, dv, &w->wv, n, C, GD);
				residual_forward_cpu(du, tmp, (int64_t)nC);
			}
		} else {
			memset(du, 0, nC * sizeof(float));
		}
		if (dmix)
			residual_forward_cpu(du, dmix, (int64_t)nC);
		rmsnorm_backward_cpu(dx, du, x, &w->ln1, n, C, c->eps);
		residual_forward_cpu(dx, dh, (int64_t)nC); /* dL/dx: the residual and the attention */
	}
	if (dx0)
		memcpy(dx0, dx, nC * sizeof(float));
	layer_scratch_free(&s);
	free(xs), free(xr), free(dx), free(dh), free(du), free(tmp), free(dq), free(dk), free(dv);
	free(datt), free(dact), free(dg), free(dup), free(dmix);
#undef BUF
	return loss;
}

void model_backward(const Model *m, const int32_t *ids, int B, int T, const float *dhidden,
                    LayerGradHook grad_hook, void *ctx, float *dx0)
{
	BackwardHooks h = {.grad = grad_hook, .ctx = ctx};
	model_backward_hooks(m, ids, B, T, dhidden, &h, dx0);
}
