/*
 * forward (GPU): the teacher's forward pass on the device, host code over
 * the kernels of kernels/, the twin of model_forward in lib/forward.c.
 * Weights are uploaded once as bf16 (quantised GGUF weights dequantised on
 * the way); activations are bf16 in buffers sized for max_tokens at load.
 *
 * version 1: one launch per operator, no fusion, no CUDA graph; the logits
 * are computed for every position in bf16.
 */
#include <string.h>

#include "cuda_common.cuh"
#include "gpu.h"
#include "gpu_model.h"

extern "C" {
#include "util.h"
}

typedef struct {
	bf16_t *ln1, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo, *ln2, *wgate, *wup, *wdown;
} GpuLayer;

struct GpuModel {
	const Model *m;
	int max_tokens;
	bf16_t *embed, *norm, *lm_head;
	GpuLayer *layers;
	float *inv_freq;
	/* activations (max_tokens rows) */
	bf16_t *x, *u, *a, *q, *k, *v, *att, *g, *up, *logits;
	float *rstd, *lse;
	int32_t *ids;
	/* the backward's, allocated by its first call */
	bf16_t *xs, *h, *act, *dx, *dh, *du, *tmp, *dq, *dk, *dv, *datt, *dact, *dg, *dup;
	float *rstd2, *work;
};

/* upload a weight as bf16; NULL for an absent one */
static bf16_t *upload(const Tensor *t)
{
	if (!t->data)
		return NULL;
	int64_t n = tensor_numel(t), cols = t->shape[t->ndim - 1], rows = n / cols;
	size_t rowb = dtype_row_bytes(t->dtype, cols);
	float *f = (float *)mallocCheck((size_t)cols * sizeof(float));
	bf16_t *h = (bf16_t *)mallocCheck((size_t)n * sizeof(bf16_t));
	for (int64_t r = 0; r < rows; r++) {
		convert_to_f32(f, (const uint8_t *)t->data + (size_t)r * rowb, t->dtype, (size_t)cols);
		for (int64_t c = 0; c < cols; c++)
			h[r * cols + c] = f32_to_bf16(f[c]);
	}
	bf16_t *d = (bf16_t *)gpu_alloc((size_t)n * sizeof(bf16_t));
	gpu_upload(d, h, (size_t)n * sizeof(bf16_t));
	free(f), free(h);
	return d;
}

extern "C" GpuModel *gpu_model_new(const Model *m, int max_tokens)
{
	const ModelConfig *c = &m->cfg;
	if (c->D != 64 && c->D != 128)
		die("the CUDA backend has attention for head dims 64 and 128, not %d: use --device cpu", c->D);
	GpuModel *g = (GpuModel *)callocCheck(1, sizeof *g);
	g->m = m;
	g->max_tokens = max_tokens;
	g->embed = upload(&m->embed);
	g->norm = upload(&m->norm);
	g->lm_head = m->lm_head.data == m->embed.data ? g->embed : upload(&m->lm_head);
	g->layers = (GpuLayer *)callocCheck((size_t)c->L, sizeof *g->layers);
	for (int l = 0; l < c->L; l++) {
		const LayerWeights *w = &m->layers[l];
		GpuLayer *d = &g->layers[l];
		d->ln1 = upload(&w->ln1), d->ln2 = upload(&w->ln2);
		d->wq = upload(&w->wq), d->bq = upload(&w->bq);
		d->wk = upload(&w->wk), d->bk = upload(&w->bk);
		d->wv = upload(&w->wv), d->bv = upload(&w->bv);
		d->wo = upload(&w->wo), d->bo = upload(&w->bo);
		d->wgate = upload(&w->wgate), d->wup = upload(&w->wup), d->wdown = upload(&w->wdown);
		if (w->bgate.data || w->bup.data || w->bdown.data)
			die("the CUDA backend does not take MLP biases yet: use --device cpu");
	}
	g->inv_freq = (float *)gpu_alloc((size_t)c->D / 2 * sizeof(float));
	gpu_upload(g->inv_freq, m->inv_freq, (size_t)c->D / 2 * sizeof(float));
	size_t n = (size_t)max_tokens, HD = (size_t)c->H * c->D, GD = (size_t)c->G * c->D;
	g->x = (bf16_t *)gpu_alloc(n * c->C * 2), g->u = (bf16_t *)gpu_alloc(n * c->C * 2);
	g->a = (bf16_t *)gpu_alloc(n * c->C * 2);
	g->q = (bf16_t *)gpu_alloc(n * HD * 2), g->att = (bf16_t *)gpu_alloc(n * HD * 2);
	g->k = (bf16_t *)gpu_alloc(n * GD * 2), g->v = (bf16_t *)gpu_alloc(n * GD * 2);
	g->g = (bf16_t *)gpu_alloc(n * c->F * 2), g->up = (bf16_t *)gpu_alloc(n * c->F * 2);
	g->logits = (bf16_t *)gpu_alloc(n * c->V * 2);
	g->rstd = (float *)gpu_alloc(n * sizeof(float));
	g->lse = (float *)gpu_alloc(n * c->H * sizeof(float));
	g->ids = (int32_t *)gpu_alloc(n * sizeof(int32_t));
	return g;
}

extern "C" void gpu_model_free(GpuModel *g)
{
	if (!g)
		return;
	const ModelConfig *c = &g->m->cfg;
	for (int l = 0; l < c->L; l++) {
		bf16_t **p = (bf16_t **)&g->layers[l];
		for (size_t i = 0; i < sizeof(GpuLayer) / sizeof(bf16_t *); i++)
			if (p[i])
				gpu_free(p[i]);
	}
	if (g->lm_head != g->embed)
		gpu_free(g->lm_head);
	void *all[] = {g->embed, g->norm, g->inv_freq, g->x, g->u, g->a, g->q, g->k, g->v, g->att, g->g, g->up,
	               g->logits, g->rstd, g->lse, g->ids, g->xs, g->h, g->act, g->dx, g->dh, g->du, g->tmp,
	               g->dq, g->dk, g->dv, g->datt, g->dact, g->dg, g->dup, g->rstd2, g->work};
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		if (all[i])
			gpu_free(all[i]);
	free(g->layers);
	free(g);
}

/* one layer on x (n, C) into xout, keeping q, k, v (after RoPE), att, its
 * lse, the norms' rstd, h = x + a and the MLP's g, up, act = silu(g) up for
 * a backward; h and xout may be x (the forward alone works in place) */
static void layer_forward_gpu(GpuModel *g, int l, const bf16_t *x, bf16_t *xout, bf16_t *h, bf16_t *act,
                              float *rstd2, int B, int T)
{
	const ModelConfig *c = &g->m->cfg;
	const GpuLayer *w = &g->layers[l];
	int n = B * T, C = c->C, HD = c->H * c->D, GD = c->G * c->D, F = c->F;
	rmsnorm_forward_cuda(g->u, g->rstd, x, w->ln1, n, C, c->eps);
	matmul_forward_cuda(g->q, g->u, w->wq, w->bq, n, C, HD);
	matmul_forward_cuda(g->k, g->u, w->wk, w->bk, n, C, GD);
	matmul_forward_cuda(g->v, g->u, w->wv, w->bv, n, C, GD);
	rope_forward_cuda(g->q, g->inv_freq, B, T, 0, c->H, c->D);
	rope_forward_cuda(g->k, g->inv_freq, B, T, 0, c->G, c->D);
	attention_forward_cuda(g->att, g->lse, g->q, g->k, g->v, B, T, c->H, c->G, c->D, 0);
	matmul_forward_cuda(g->a, g->att, w->wo, w->bo, n, HD, C);
	if (h != x)
		cudaCheck(cudaMemcpy(h, x, (size_t)n * C * 2, cudaMemcpyDeviceToDevice));
	residual_forward_cuda(h, g->a, (int64_t)n * C);
	rmsnorm_forward_cuda(g->u, rstd2, h, w->ln2, n, C, c->eps);
	matmul_forward_cuda(g->g, g->u, w->wgate, NULL, n, C, F);
	matmul_forward_cuda(g->up, g->u, w->wup, NULL, n, C, F);
	swiglu_forward_cuda(act, g->g, g->up, (int64_t)n * F);
	matmul_forward_cuda(g->a, act, w->wdown, NULL, n, F, C);
	if (xout != h)
		cudaCheck(cudaMemcpy(xout, h, (size_t)n * C * 2, cudaMemcpyDeviceToDevice));
	residual_forward_cuda(xout, g->a, (int64_t)n * C);
}

extern "C" void gpu_model_forward(GpuModel *g, const int32_t *ids, int B, int T, float *logits)
{
	const Model *m = g->m;
	const ModelConfig *c = &m->cfg;
	int n = B * T, C = c->C;
	if (n > g->max_tokens)
		BUG("gpu_model_forward: %d tokens, buffers for %d", n, g->max_tokens);
	gpu_upload(g->ids, ids, (size_t)n * sizeof(int32_t));
	embedding_forward_cuda(g->x, g->ids, g->embed, n, C);
	for (int l = 0; l < c->L; l++)
		layer_forward_gpu(g, l, g->x, g->x, g->x, g->g, g->rstd, B, T);
	rmsnorm_forward_cuda(g->u, g->rstd, g->x, g->norm, n, C, c->eps);
	matmul_forward_cuda(g->logits, g->u, g->lm_head, NULL, n, C, c->V);
	if (logits) {
		size_t nv = (size_t)n * c->V;
		bf16_t *h = (bf16_t *)mallocCheck(nv * sizeof(bf16_t));
		gpu_download(h, g->logits, nv * sizeof(bf16_t));
		for (size_t i = 0; i < nv; i++)
			logits[i] = bf16_to_f32(h[i]);
		free(h);
	} else {
		gpu_sync();
	}
}

// ----------------------------------------------------------------------------
// backward, with respect to activations only: the twin of model_backward

static bf16_t *balloc(size_t n) { return (bf16_t *)gpu_alloc(n * sizeof(bf16_t)); }

extern "C" void gpu_model_backward(GpuModel *g, const int32_t *ids, int B, int T, const float *dhidden,
                                   GpuGradHook grad_hook, void *ctx, float *dx0)
{
	const ModelConfig *c = &g->m->cfg;
	int n = B * T, C = c->C, HD = c->H * c->D, GD = c->G * c->D, F = c->F;
	size_t nC = (size_t)n * C, mC = (size_t)g->max_tokens * C;
	if (n > g->max_tokens)
		BUG("gpu_model_backward: %d tokens, buffers for %d", n, g->max_tokens);
	if (!g->xs) {
		size_t mt = (size_t)g->max_tokens;
		g->xs = balloc((size_t)(c->L + 1) * mC);
		g->h = balloc(mC), g->dx = balloc(mC), g->dh = balloc(mC), g->du = balloc(mC), g->tmp = balloc(mC);
		g->act = balloc(mt * F), g->dact = balloc(mt * F), g->dg = balloc(mt * F), g->dup = balloc(mt * F);
		g->dq = balloc(mt * HD), g->datt = balloc(mt * HD), g->dk = balloc(mt * GD), g->dv = balloc(mt * GD);
		g->rstd2 = (float *)gpu_alloc(mt * sizeof(float));
		g->work = (float *)gpu_alloc(attention_backward_work(1, g->max_tokens, c->H, c->D) * sizeof(float));
	}
	/* forward, keeping each layer's input */
	gpu_upload(g->ids, ids, (size_t)n * sizeof(int32_t));
	embedding_forward_cuda(g->xs, g->ids, g->embed, n, C);
	for (int l = 0; l < c->L; l++)
		layer_forward_gpu(g, l, g->xs + (size_t)l * nC, g->xs + (size_t)(l + 1) * nC, g->h, g->act, g->rstd2, B, T);

	/* dhidden to the device; the final norm */
	bf16_t *hb = (bf16_t *)mallocCheck(nC * sizeof(bf16_t));
	for (size_t i = 0; i < nC; i++)
		hb[i] = f32_to_bf16(dhidden[i]);
	gpu_upload(g->dh, hb, nC * sizeof(bf16_t));
	rmsnorm_forward_cuda(g->u, g->rstd, g->xs + (size_t)c->L * nC, g->norm, n, C, c->eps); /* its rstd */
	rmsnorm_backward_cuda(g->dx, g->dh, g->xs + (size_t)c->L * nC, g->rstd, g->norm, n, C);
	for (int l = c->L - 1; l >= 0; l--) {
		const GpuLayer *w = &g->layers[l];
		const bf16_t *x = g->xs + (size_t)l * nC;
		layer_forward_gpu(g, l, x, g->tmp, g->h, g->act, g->rstd2, B, T); /* its intermediates again */
		/* MLP: x' = h + Wdown(act), act = silu(gate) up, (gate, up) = W u2, u2 = norm(h) */
		matmul_backward_cuda(g->dact, g->dx, w->wdown, n, F, C);
		swiglu_backward_cuda(g->dg, g->dup, g->dact, g->g, g->up, (int64_t)n * F);
		matmul_backward_cuda(g->du, g->dg, w->wgate, n, C, F);
		matmul_backward_cuda(g->tmp, g->dup, w->wup, n, C, F);
		residual_forward_cuda(g->du, g->tmp, (int64_t)nC);
		rmsnorm_backward_cuda(g->dh, g->du, g->h, g->rstd2, w->ln2, n, C);
		residual_forward_cuda(g->dh, g->dx, (int64_t)nC); /* dL/dh */
		/* attention: h = x + a, so dL/da = dL/dh */
		if (grad_hook)
			grad_hook(ctx, l, g->dh, n, C);
		matmul_backward_cuda(g->datt, g->dh, w->wo, n, HD, C);
		attention_backward_cuda(g->dq, g->dk, g->dv, g->datt, g->att, g->lse, g->q, g->k, g->v, B, T, c->H, c->G,
		                        c->D, 0, g->work);
		rope_backward_cuda(g->dq, g->inv_freq, B, T, 0, c->H, c->D);
		rope_backward_cuda(g->dk, g->inv_freq, B, T, 0, c->G, c->D);
		matmul_backward_cuda(g->du, g->dq, w->wq, n, C, HD);
		matmul_backward_cuda(g->tmp, g->dk, w->wk, n, C, GD);
		residual_forward_cuda(g->du, g->tmp, (int64_t)nC);
		matmul_backward_cuda(g->tmp, g->dv, w->wv, n, C, GD);
		residual_forward_cuda(g->du, g->tmp, (int64_t)nC);
		rmsnorm_backward_cuda(g->dx, g->du, x, g->rstd, w->ln1, n, C); /* rstd: the recompute's norm1 */
		residual_forward_cuda(g->dx, g->dh, (int64_t)nC); /* dL/dx */
	}
	if (dx0) {
		gpu_download(hb, g->dx, nC * sizeof(bf16_t));
		for (size_t i = 0; i < nC; i++)
			dx0[i] = bf16_to_f32(hb[i]);
	} else {
		gpu_sync();
	}
	free(hb);
}
