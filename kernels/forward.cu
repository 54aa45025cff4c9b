/*
 * forward (GPU): the teacher's forward pass and its backward with respect to
 * activations on the device, host code over the kernels of kernels/: the
 * twin of model_forward, model_logits and model_backward in lib/. It is not
 * a trainer: no weight gradients, no optimizer.
 *
 * Weights are uploaded once as bf16 (quantised GGUF weights dequantised on
 * the way) into one allocation, wq | wk | wv stacked into one (H*D + 2*G*D,
 * C) matrix with their biases, wgate | wup into one (2F, C). Activations
 * live in a second allocation, the arena, carved at gpu_model_new for
 * max_tokens rows: nothing is allocated afterwards.
 *
 * A layer, forward (9 launches; u already holds norm1(x)):
 *   qkv = Wqkv u                                  GEMM
 *   q, k, v = rope(qkv + bqkv), split             qkv_rope_forward
 *   att, lse = attention(q, k, v)
 *     (gpu_model_forward_mix: also a second attention in a window, in the
 *     same pass, and Wo then takes the mixture wfa att + w2 att2)
 *   h = x + Wo att                                GEMM adding x (beta 1)
 *   u = norm2(h)                                  rmsnorm_forward
 *   gate | up = Wgu u                             GEMM
 *   act = silu(gate) up                           swiglu_packed_forward
 *   x' = h + Wdown act                            GEMM adding h
 *   u = norm1'(x') (or the final norm)            rmsnorm_forward
 * (with an o bias, or a hook that sees a = Wo att, or DASH_RESIDUAL_GEMM=0:
 * a = Wo att + bo by its own GEMM, then h and u by residual_rmsnorm_forward)
 * and backward (9 launches, nothing recomputed):
 *   dact = dx Wdown; dgu = swiglu'(dact); du = dgu Wgu
 *   dh = dx + norm2'(du)                          residual_rmsnorm_backward
 *   datt = dh Wo; dq, dk, dv = attention'(datt)
 *   dqkv = rope'(dq), rope'(dk), dv packed        qkv_rope_backward
 *     (a supernet's layer: wfa attention'(datt) + w2 attention_W'(datt),
 *     attention_backward2; du = its operators' float32 du + dqkv Wqkv,
 *     read in float32 by the norm's backward)
 *   du = dqkv Wqkv; dx = dh + norm1'(du)          residual_rmsnorm_backward
 *
 * What a train GpuModel keeps per layer and token (bf16 unless noted):
 *   x (C), h (C), q (H*D), att (H*D), k, v (G*D each), gate | up (2F),
 *   lse (H float32), rstd of both norms (2 float32)
 * = 2 (2C + 2HD + 2GD + 2F) + 4 (H + 2) bytes: 61512 at the Qwen2.5-3B
 * shape, 9.07 GB for 36 layers at 4096 tokens; with the scratch of the
 * forward (0.26 GB) and of the backward (0.50 GB, 0.1 of it the attention
 * backward's work) the arena is 9.8 GB there. A GpuModel made without train
 * keeps one set, shared by every layer, and works on the residual stream in
 * place (0.16 GiB at 1024 tokens).
 *
 * version 1: one launch per operator, separate q, k, v and gate, up GEMMs;
 * the backward ran the forward again keeping each layer's input and
 * recomputed every layer from it (a second forward and a half).
 * version 2 (not yet measured): one arena sized up front, the saved
 * activations above instead of recomputation, stacked QKV and gate | up
 * GEMMs, RoPE + bias + split in one kernel, residual adds fused with the
 * RMSNorm that follows, logits only on request and a chunk at a time.
 * version 4: the residual adds in the o and down GEMMs (beta 1), each
 * followed by a plain RMSNorm: a (n, C) is no longer written and read back
 * twice a layer. H100, bench/bin/teacher 1 4096, medians of 6 alternated
 * runs: the forward phase 47.2 ms against 48.1, forward + backward 114.7
 * against 115.65 (kernels/NOTES.md, version 4).
 * version 5: under gpu_model_forward_fp8 and gpu_model_grad_fp8 the kernels
 * that make a product's input write its e4m3 codes into xq or dq8 (the
 * norms forward and backward, SwiGLU's forward, a mixture of attentions,
 * RoPE's backward): only an unmixed att and the final norm's dx still go
 * through fp8_rows_cuda; norm2's u, act and dqkv are not written in bf16
 * at all. Part of versions 14 and 15 of the search step (bench/RESULTS.md):
 * 178 -> 171 ms with gdn's forward in e4m3.
 * version 6: norm1's codes of u in their own buffer (uq), which a
 * GpuLayerHook may take (gpu_model_hook_codes), as a GpuMixGrad may take
 * dh's in dq8; under gpu_model_grad_fp8 the attention backward leaves dq,
 * dk, dv float32 in the work and RoPE's backward makes dqkv's codes from
 * them (no bf16 rows, no conversion). Part of version 16 of the search
 * step: 169.8 -> 168.1 ms with the supernet's share (bench/RESULTS.md).
 */
#include <string.h>

#include <algorithm>

#include "cuda_common.cuh"
#include "gpu.h"
#include "gpu_model.h"

extern "C" {
#include "util.h"
}

#define LOGIT_ROWS 256 /* rows of logits computed and downloaded at a time */

/* a matrix in float8 e4m3 codes and a float32 scale a row (lib/fp8.h) */
typedef struct {
	uint8_t *q;
	float *s;
} Fp8Mat;

typedef struct {
	bf16_t *ln1;   // (C)
	bf16_t *wqkv;  // (H*D + 2*G*D, C) wq, wk, wv stacked
	bf16_t *bqkv;  // (H*D + 2*G*D) bq, bk, bv (zeros for an absent one), or NULL
	bf16_t *wo;    // (C, H*D)
	bf16_t *bo;    // (C) or NULL
	bf16_t *ln2;   // (C)
	bf16_t *wgu;   // (2F, C) wgate, wup stacked
	bf16_t *wdown; // (C, F)
	/* w^T in e4m3 for the backward (gpu_model_grad_fp8), else zeros */
	Fp8Mat qkv8, o8, gu8, down8; // (C, W), (H*D, C), (C, 2F), (F, C)
	/* w in e4m3 by its rows for the forward (gpu_model_forward_fp8) */
	Fp8Mat qkvf, of, guf, downf; // (W, C), (C, H*D), (2F, C), (C, F)
} GpuLayer;

/* What a layer's forward keeps for its backward (n = B*T rows of the last
 * forward, max_tokens allocated). In a GpuModel made without train there is
 * one, shared by every layer, and x and h are the residual stream itself. */
typedef struct {
	bf16_t *x;     // (n, C) the layer's input
	float *rstd1;  // (n) of norm 1, u = norm1(x)
	bf16_t *q;     // (n, H, D) after RoPE
	bf16_t *k, *v; // (n, G, D) k after RoPE
	bf16_t *att;   // (n, H, D) the attention's output, before Wo
	float *lse;    // (B, H, T) its log-sum-exp
	bf16_t *h;     // (n, C) x + Wo att + bo
	float *rstd2;  // (n) of norm 2
	bf16_t *gu;    // (n, 2F) gate | up
	float wfa;     // the weight of att in a (a GpuAttHook's, else 1)
	GpuMixAtt a2;  // the second attention a GpuAttHook gave, or zeros
} GpuSaved;

struct GpuModel {
	const Model *m;
	int max_tokens, train;
	int B, T;                       /* the last forward's shape; 0 before any */
	size_t weight_bytes, act_bytes; /* the two allocations: */
	void *weights, *arena;
	/* weights */
	bf16_t *embed, *norm, *lm_head; // (V, C), (C), (V, C): the embedding when tied
	GpuLayer *layers;               // [L]
	float *inv_freq;                // (D/2)
	/* activations */
	GpuSaved *saved;                // [L] when train, else [1]
	bf16_t *xL;                     // (n, C) the last layer's output
	float *rstdf;                   // (n) of the final norm
	bf16_t *hidden;                 // (n, C) final-normed: gpu_model_hidden
	bf16_t *u;                      // (n, C) a norm's output, the next GEMM's input
	bf16_t *qkv;                    // (n, H*D + 2*G*D) before bias and RoPE
	bf16_t *a;                      // (n, C) the attention's or the MLP's output
	bf16_t *attmix;                 // (n, H*D) wfa att + w att2 (train only)
	bf16_t *act;                    // (n, F) silu(gate) * up
	bf16_t *logits;                 // (min(max_tokens, LOGIT_ROWS), V)
	int32_t *ids;                   // (n)
	/* the backward's (train only) */
	bf16_t *dx, *dh, *du;           // (n, C) dL/dx, dL/dh, dL/d(a norm's output)
	bf16_t *dact;                   // (n, F)
	bf16_t *dgu;                    // (n, 2F)
	bf16_t *datt, *dq;              // (n, H*D)
	bf16_t *dk, *dv;                // (n, G*D)
	bf16_t *dqkv;                   // (n, H*D + 2*G*D)
	bf16_t *dhid;                   // (n, C) gpu_model_backward_host's dhidden
	float *work;                    // work_floats: the attention backward's
	size_t work_floats;
	/* the backward's products in e4m3 (gpu_model_grad_fp8) */
	int fp8;
	void *fp8_mem; // the layers' codes, dq8 and lm8, one allocation
	Fp8Mat dq8;    // (n, max(2F, W, C)) the product's dout
	Fp8Mat lm8;    // (C, V) lm_head^T: the KL's dhidden (vocab_loss_fp8_cuda)
	/* the forward's products in e4m3 (gpu_model_forward_fp8) */
	int fwd8;       // on now
	void *fwd8_mem; // the layers' row codes and xq, one allocation; NULL before the first
	Fp8Mat xq;      // (n, max(C, H*D, F)) a product's input
	Fp8Mat uq;      // (n, C) norm1's codes of g->u, the q|k|v product's input and a GpuLayerHook's
	int u8;         // uq holds g->u's codes, made by the norm that wrote u
	/* what gpu_model_hook_codes answers within a hook: uq, dq8 or NULL */
	const Fp8Mat *hook_codes;
	/* the vocabulary's logits in e4m3 (gpu_model_logits_fp8) */
	int lg8;       // on now: the final norm writes hq
	int h8;        // hq holds the last forward's hidden rows' codes
	void *lg8_mem; // lmr and hq, one allocation; NULL before the first
	Fp8Mat lmr;    // (V, C) lm_head by its rows
	Fp8Mat hq;     // (n, C) the final-normed hidden rows' codes
};

// ----------------------------------------------------------------------------
// the two allocations: a layout function places every buffer; it runs once
// on base 0 to size the allocation, then on the allocation (Carver:
// cuda_common.cuh)

static void weights_layout(GpuModel *g, Carver *c)
{
	const Model *m = g->m;
	const ModelConfig *cf = &m->cfg;
	size_t C = cf->C, HD = (size_t)cf->H * cf->D, GD = (size_t)cf->G * cf->D, W = HD + 2 * GD, F = cf->F;
	size_t V = cf->V;
	CARVE(c, g->embed, V * C);
	CARVE(c, g->norm, C);
	if (m->lm_head.data == m->embed.data)
		g->lm_head = g->embed;
	else
		CARVE(c, g->lm_head, V * C);
	CARVE(c, g->inv_freq, cf->D / 2);
	for (int l = 0; l < cf->L; l++) {
		const LayerWeights *w = &m->layers[l];
		GpuLayer *d = &g->layers[l];
		CARVE(c, d->ln1, C);
		CARVE(c, d->wqkv, W * C);
		d->bqkv = NULL;
		if (w->bq.data || w->bk.data || w->bv.data)
			CARVE(c, d->bqkv, W);
		CARVE(c, d->wo, C * HD);
		d->bo = NULL;
		if (w->bo.data)
			CARVE(c, d->bo, C);
		CARVE(c, d->ln2, C);
		CARVE(c, d->wgu, 2 * F * C);
		CARVE(c, d->wdown, C * F);
	}
}

static void acts_layout(GpuModel *g, Carver *c)
{
	const ModelConfig *cf = &g->m->cfg;
	size_t mt = (size_t)g->max_tokens, C = cf->C, HD = (size_t)cf->H * cf->D, GD = (size_t)cf->G * cf->D;
	size_t W = HD + 2 * GD, F = cf->F;
	bf16_t *stream = NULL; /* the residual stream, without train */
	if (!g->train)
		CARVE(c, stream, mt * C);
	for (int l = 0; l < (g->train ? cf->L : 1); l++) {
		GpuSaved *s = &g->saved[l];
		if (g->train) {
			CARVE(c, s->x, mt * C);
			CARVE(c, s->h, mt * C);
		} else {
			s->x = s->h = stream;
		}
		CARVE(c, s->rstd1, mt);
		CARVE(c, s->q, mt * HD);
		CARVE(c, s->k, mt * GD);
		CARVE(c, s->v, mt * GD);
		CARVE(c, s->att, mt * HD);
		CARVE(c, s->lse, mt * cf->H);
		CARVE(c, s->rstd2, mt);
		CARVE(c, s->gu, mt * 2 * F);
	}
	if (g->train)
		CARVE(c, g->xL, mt * C);
	else
		g->xL = stream;
	CARVE(c, g->rstdf, mt);
	CARVE(c, g->hidden, mt * C);
	CARVE(c, g->u, mt * C);
	CARVE(c, g->qkv, mt * W);
	CARVE(c, g->a, mt * C);
	CARVE(c, g->act, mt * F);
	CARVE(c, g->logits, (mt < LOGIT_ROWS ? mt : LOGIT_ROWS) * (size_t)cf->V);
	CARVE(c, g->ids, mt);
	if (g->train) {
		CARVE(c, g->dx, mt * C);
		CARVE(c, g->dh, mt * C);
		CARVE(c, g->du, mt * C);
		CARVE(c, g->dact, mt * F);
		CARVE(c, g->dgu, mt * 2 * F);
		CARVE(c, g->datt, mt * HD);
		CARVE(c, g->dq, mt * HD);
		CARVE(c, g->dk, mt * GD);
		CARVE(c, g->dv, mt * GD);
		CARVE(c, g->dqkv, mt * W);
		CARVE(c, g->dhid, mt * C);
		CARVE(c, g->attmix, mt * HD);
		g->work_floats = attention_backward_work(1, g->max_tokens, cf->H, cf->D);
		CARVE(c, g->work, g->work_floats);
	}
}

/* upload converts the weight t (numel values, checked) to bf16 at d, about
 * a million values at a time; bf16 weights go as they are */
static void upload(bf16_t *d, const Tensor *t, int64_t numel)
{
	if (!t->data || tensor_numel(t) != numel)
		BUG("upload: a weight of %lld values where %lld are expected", (long long)tensor_numel(t),
		    (long long)numel);
	if (t->dtype == DT_BF16) {
		gpu_upload(d, t->data, (size_t)numel * sizeof(bf16_t));
		return;
	}
	int64_t cols = t->shape[t->ndim - 1], rows = numel / cols;
	int64_t blk = cols >= (1 << 20) ? 1 : (1 << 20) / cols; /* rows at a time */
	size_t rowb = dtype_row_bytes(t->dtype, cols);
	float *f = (float *)mallocCheck((size_t)(blk * cols) * sizeof(float));
	bf16_t *h = (bf16_t *)mallocCheck((size_t)(blk * cols) * sizeof(bf16_t));
	for (int64_t r0 = 0; r0 < rows; r0 += blk) {
		int64_t nr = rows - r0 < blk ? rows - r0 : blk;
		size_t nv = (size_t)(nr * cols);
		/* rows are whole quantisation blocks, so a run of rows converts at once */
		convert_to_f32(f, (const uint8_t *)t->data + (size_t)r0 * rowb, t->dtype, nv);
		for (size_t i = 0; i < nv; i++)
			h[i] = f32_to_bf16(f[i]);
		gpu_upload(d + (size_t)(r0 * cols), h, nv * sizeof(bf16_t));
	}
	free(f), free(h);
}

extern "C" GpuModel *gpu_model_new(const Model *m, int max_tokens, int train)
{
	const ModelConfig *c = &m->cfg;
	if (c->D != 64 && c->D != 128)
		die("the CUDA backend has attention for head dims 64 and 128, not %d: use --device cpu", c->D);
	if (c->L < 1 || max_tokens < 1)
		BUG("gpu_model_new: %d layers, %d tokens", c->L, max_tokens);
	for (int l = 0; l < c->L; l++) {
		const LayerWeights *w = &m->layers[l];
		if (w->bgate.data || w->bup.data || w->bdown.data)
			die("the CUDA backend does not take MLP biases yet: use --device cpu");
	}
	GpuModel *g = (GpuModel *)callocCheck(1, sizeof *g);
	g->m = m;
	g->max_tokens = max_tokens;
	g->train = train != 0;
	g->layers = (GpuLayer *)callocCheck((size_t)c->L, sizeof *g->layers);
	g->saved = (GpuSaved *)callocCheck(g->train ? (size_t)c->L : 1, sizeof *g->saved);

	/* size both allocations, make them, place every buffer */
	Carver wc = {0, 0}, ac = {0, 0};
	weights_layout(g, &wc);
	acts_layout(g, &ac);
	g->weight_bytes = wc.off, g->act_bytes = ac.off;
	g->weights = gpu_alloc(g->weight_bytes);
	g->arena = gpu_alloc(g->act_bytes);
	wc = Carver{(uintptr_t)g->weights, 0};
	ac = Carver{(uintptr_t)g->arena, 0};
	weights_layout(g, &wc);
	acts_layout(g, &ac);
	if (wc.off != g->weight_bytes || ac.off != g->act_bytes)
		BUG("gpu_model_new: the layout changed between its two passes");

	/* the weights, stacked where one GEMM serves several */
	size_t C = c->C, HD = (size_t)c->H * c->D, GD = (size_t)c->G * c->D, W = HD + 2 * GD, F = c->F;
	upload(g->embed, &m->embed, (int64_t)c->V * c->C);
	upload(g->norm, &m->norm, c->C);
	if (g->lm_head != g->embed)
		upload(g->lm_head, &m->lm_head, (int64_t)c->V * c->C);
	gpu_upload(g->inv_freq, m->inv_freq, (size_t)c->D / 2 * sizeof(float));
	for (int l = 0; l < c->L; l++) {
		const LayerWeights *w = &m->layers[l];
		GpuLayer *d = &g->layers[l];
		upload(d->ln1, &w->ln1, c->C);
		upload(d->wqkv, &w->wq, (int64_t)(HD * C));
		upload(d->wqkv + HD * C, &w->wk, (int64_t)(GD * C));
		upload(d->wqkv + (HD + GD) * C, &w->wv, (int64_t)(GD * C));
		if (d->bqkv) {
			cudaCheck(cudaMemset(d->bqkv, 0, W * sizeof(bf16_t)));
			if (w->bq.data)
				upload(d->bqkv, &w->bq, (int64_t)HD);
			if (w->bk.data)
				upload(d->bqkv + HD, &w->bk, (int64_t)GD);
			if (w->bv.data)
				upload(d->bqkv + HD + GD, &w->bv, (int64_t)GD);
		}
		upload(d->wo, &w->wo, (int64_t)(C * HD));
		if (d->bo)
			upload(d->bo, &w->bo, c->C);
		upload(d->ln2, &w->ln2, c->C);
		upload(d->wgu, &w->wgate, (int64_t)(F * C));
		upload(d->wgu + F * C, &w->wup, (int64_t)(F * C));
		upload(d->wdown, &w->wdown, (int64_t)(C * F));
	}
	return g;
}

extern "C" void gpu_model_free(GpuModel *g)
{
	if (!g)
		return;
	gpu_free(g->weights);
	gpu_free(g->arena);
	gpu_free(g->fp8_mem);
	gpu_free(g->fwd8_mem);
	gpu_free(g->lg8_mem);
	free(g->layers), free(g->saved), free(g);
}

static void fp8_layout(GpuModel *g, Carver *c)
{
	const ModelConfig *cf = &g->m->cfg;
	size_t C = cf->C, HD = (size_t)cf->H * cf->D, W = HD + 2 * (size_t)cf->G * cf->D, F = cf->F;
	size_t n = g->max_tokens, widest = std::max(std::max(2 * F, W), std::max(C, HD));
	for (int l = 0; l < cf->L; l++) {
		GpuLayer *d = &g->layers[l];
		CARVE(c, d->qkv8.q, C * W), CARVE(c, d->qkv8.s, C);
		CARVE(c, d->o8.q, HD * C), CARVE(c, d->o8.s, HD);
		CARVE(c, d->gu8.q, C * 2 * F), CARVE(c, d->gu8.s, C);
		CARVE(c, d->down8.q, F * C), CARVE(c, d->down8.s, F);
	}
	CARVE(c, g->dq8.q, n * widest), CARVE(c, g->dq8.s, n);
	CARVE(c, g->lm8.q, C * cf->V), CARVE(c, g->lm8.s, C);
}

extern "C" int gpu_model_fp8_fits(const ModelConfig *cf)
{
	int HD = cf->H * cf->D, W = HD + 2 * cf->G * cf->D;
	return cf->C % 16 == 0 && HD % 16 == 0 && W % 16 == 0 && cf->F % 16 == 0 && cf->V % 16 == 0;
}

/* an allocation of e4m3 codes laid out by layout, counted in the weights'
 * bytes; dies, naming flag, on a GPU before Hopper or widths that are not
 * multiples of 16 */
static void *codes_alloc(GpuModel *g, const char *flag, void (*layout)(GpuModel *, Carver *))
{
	const ModelConfig *cf = &g->m->cfg;
	int HD = cf->H * cf->D;
	if (cuda_cc_major() < 9)
		die("%s wants a GPU of compute capability 9.0 or newer (Hopper), this one is %d.x", flag,
		    cuda_cc_major());
	if (!gpu_model_fp8_fits(cf))
		die("%s wants the model's widths in multiples of 16, not C %d, H*D %d, q|k|v %d, F %d, V %d", flag, cf->C,
		    HD, HD + 2 * cf->G * cf->D, cf->F, cf->V);
	Carver c = {0, 0};
	layout(g, &c);
	size_t bytes = c.off;
	void *mem = gpu_alloc(bytes);
	c = Carver{(uintptr_t)mem, 0};
	layout(g, &c);
	if (c.off != bytes)
		BUG("gpu_model: the layout of %s's codes changed between its two passes", flag);
	g->weight_bytes += bytes;
	return mem;
}

/* each layer's four weights (q|k|v, o, gate|up, down) into codes by codes
 * (fp8_cols_t_cuda: w^T by its columns, the backward's; fp8_rows_cuda: w
 * by its rows, the forward's), into the layer's Fp8Mats qkv, o, gu, down */
typedef void (*CodesFn)(uint8_t *, float *, const bf16_t *, int, int);
static void layer_codes(GpuModel *g, CodesFn codes, Fp8Mat GpuLayer::*qkv, Fp8Mat GpuLayer::*o,
                        Fp8Mat GpuLayer::*gu, Fp8Mat GpuLayer::*down)
{
	const ModelConfig *cf = &g->m->cfg;
	int C = cf->C, HD = cf->H * cf->D, W = HD + 2 * cf->G * cf->D, F = cf->F;
	for (int l = 0; l < cf->L; l++) {
		GpuLayer *d = &g->layers[l];
		codes((d->*qkv).q, (d->*qkv).s, d->wqkv, W, C);
		codes((d->*o).q, (d->*o).s, d->wo, C, HD);
		codes((d->*gu).q, (d->*gu).s, d->wgu, 2 * F, C);
		codes((d->*down).q, (d->*down).s, d->wdown, C, F);
	}
}

extern "C" void gpu_model_grad_fp8(GpuModel *g)
{
	const ModelConfig *cf = &g->m->cfg;
	if (g->fp8)
		return;
	if (!g->train)
		BUG("gpu_model_grad_fp8: the GpuModel was made without train");
	g->fp8_mem = codes_alloc(g, "--grad fp8", fp8_layout);
	layer_codes(g, fp8_cols_t_cuda, &GpuLayer::qkv8, &GpuLayer::o8, &GpuLayer::gu8, &GpuLayer::down8);
	fp8_cols_t_cuda(g->lm8.q, g->lm8.s, g->lm_head, cf->V, cf->C);
	g->fp8 = 1;
}

static void fwd8_layout(GpuModel *g, Carver *c)
{
	const ModelConfig *cf = &g->m->cfg;
	size_t C = cf->C, HD = (size_t)cf->H * cf->D, W = HD + 2 * (size_t)cf->G * cf->D, F = cf->F;
	size_t n = g->max_tokens;
	for (int l = 0; l < cf->L; l++) {
		GpuLayer *d = &g->layers[l];
		CARVE(c, d->qkvf.q, W * C), CARVE(c, d->qkvf.s, W);
		CARVE(c, d->of.q, C * HD), CARVE(c, d->of.s, C);
		CARVE(c, d->guf.q, 2 * F * C), CARVE(c, d->guf.s, 2 * F);
		CARVE(c, d->downf.q, C * F), CARVE(c, d->downf.s, C);
	}
	CARVE(c, g->xq.q, n * std::max(std::max(C, HD), F)), CARVE(c, g->xq.s, n);
	CARVE(c, g->uq.q, n * C), CARVE(c, g->uq.s, n);
}

extern "C" void gpu_model_forward_fp8(GpuModel *g, int on)
{
	if (on && !g->fwd8_mem) {
		g->fwd8_mem = codes_alloc(g, "--forward fp8", fwd8_layout);
		layer_codes(g, fp8_rows_cuda, &GpuLayer::qkvf, &GpuLayer::of, &GpuLayer::guf, &GpuLayer::downf);
	}
	g->fwd8 = on != 0;
}

static void lg8_layout(GpuModel *g, Carver *c)
{
	const ModelConfig *cf = &g->m->cfg;
	size_t C = cf->C, V = cf->V, n = g->max_tokens;
	CARVE(c, g->lmr.q, V * C), CARVE(c, g->lmr.s, V);
	CARVE(c, g->hq.q, n * C), CARVE(c, g->hq.s, n);
}

extern "C" void gpu_model_logits_fp8(GpuModel *g, int on)
{
	if (on && !g->lg8_mem) {
		g->lg8_mem = codes_alloc(g, "--forward fp8-all", lg8_layout);
		fp8_rows_cuda(g->lmr.q, g->lmr.s, g->lm_head, g->m->cfg.V, g->m->cfg.C);
	}
	g->lg8 = on != 0;
}

extern "C" const uint8_t *gpu_model_hidden8(GpuModel *g, const float **scale)
{
	*scale = g->h8 ? g->hq.s : NULL;
	return g->h8 ? g->hq.q : NULL;
}

extern "C" const uint8_t *gpu_model_lm_head_rows8(GpuModel *g, const float **scale)
{
	*scale = g->lg8_mem ? g->lmr.s : NULL;
	return g->lg8_mem ? g->lmr.q : NULL;
}

extern "C" void gpu_model_bytes(const GpuModel *g, size_t *weights, size_t *activations)
{
	if (weights)
		*weights = g->weight_bytes;
	if (activations)
		*activations = g->act_bytes;
}

extern "C" const bf16_t *gpu_model_hidden(GpuModel *g) { return g->hidden; }

extern "C" int gpu_model_hook_codes(const GpuModel *g, const uint8_t **d_q, const float **d_s)
{
	if (!g->hook_codes)
		return 0;
	*d_q = g->hook_codes->q, *d_s = g->hook_codes->s;
	return 1;
}

extern "C" const bf16_t *gpu_model_lm_head(GpuModel *g) { return g->lm_head; }
extern "C" const uint8_t *gpu_model_lm_head8(GpuModel *g, const float **scale)
{
	*scale = g->fp8 ? g->lm8.s : NULL;
	return g->fp8 ? g->lm8.q : NULL;
}
extern "C" const bf16_t *gpu_model_embedding(const GpuModel *g) { return g->embed; }
extern "C" const bf16_t *gpu_model_final_norm(const GpuModel *g) { return g->norm; }

extern "C" void gpu_model_layer(const GpuModel *g, int l, GpuLayerView *v)
{
	if (l < 0 || l >= g->m->cfg.L)
		BUG("gpu_model_layer: layer %d of %d", l, g->m->cfg.L);
	const GpuLayer *w = &g->layers[l];
	const GpuSaved *s = &g->saved[g->train ? l : 0];
	v->wqkv = w->wqkv, v->bqkv = w->bqkv, v->wo = w->wo, v->bo = w->bo, v->inv_freq = g->inv_freq;
	v->q = s->q, v->k = s->k, v->v = s->v, v->att = s->att, v->lse = s->lse;
	v->ln1 = w->ln1, v->ln2 = w->ln2, v->wgu = w->wgu, v->wdown = w->wdown;
}

// ----------------------------------------------------------------------------
// forward

static GpuSaved *saved(GpuModel *g, int l) { return &g->saved[g->train ? l : 0]; }

/* whether the o and down GEMMs add the residual themselves (version 4):
 * yes unless DASH_RESIDUAL_GEMM=0 in the environment (read once; the
 * version 3 path, a GEMM then residual_rmsnorm_forward, for comparisons) */
static int residual_gemm(void)
{
	static int on = -1;
	if (on < 0) {
		const char *e = getenv("DASH_RESIDUAL_GEMM");
		on = !(e && strcmp(e, "0") == 0);
	}
	return on;
}

/* the layer's attention, and a GpuAttHook's second one of the same q, k, v
 * in the same pass; returns what enters Wo: att, or the mixture in
 * g->attmix, or (NULL) the mixture's codes in g->xq under the fp8 forward */
static const bf16_t *attention_mix(GpuModel *g, GpuSaved *s, int l, int B, int T, GpuAttHook att, void *ctx)
{
	const ModelConfig *c = &g->m->cfg;
	int H = c->H, G = c->G, D = c->D;
	int64_t nh = (int64_t)B * T * H * D;
	GpuMixAtt *a2 = &s->a2;
	s->wfa = 1, memset(a2, 0, sizeof *a2);
	if (att)
		s->wfa = att(ctx, l, a2);
	if (!a2->att && a2->w != 0)
		BUG("gpu_model_forward_mix: layer %d's second attention of weight %g has no buffers", l, a2->w);
	if (a2->att || a2->window > 0) /* the pass of the two (without buffers: att alone, its bits the same) */
		attention_forward2_cuda(s->att, s->lse, a2->att, a2->lse, s->q, s->k, s->v, B, T, H, G, D, a2->window);
	else
		attention_forward_cuda(s->att, s->lse, s->q, s->k, s->v, B, T, H, G, D, 0);
	if (s->wfa == 1 && a2->w == 0)
		return s->att;
	if (!g->train || nh % 8)
		BUG("gpu_model_forward_mix: a mixture of attentions needs a train GpuModel and H*D a multiple of 8");
	const bf16_t *att2 = a2->att ? a2->att : s->att;
	if (g->fwd8 && att_mix_fp8_cuda(g->xq.q, g->xq.s, s->wfa, s->att, a2->w, att2, B * T, H * D))
		return NULL;
	att_mix_cuda(g->attmix, s->wfa, s->att, a2->w, att2, nh);
	return g->attmix;
}

/* out (n, OC) = x (n, IC) w^T [+ res]: bf16, or through e4m3 under
 * gpu_model_forward_fp8 (x quantised by its rows into g->xq first; x NULL:
 * its codes are there already, written by the kernel that made x into xc,
 * g->xq when NULL) */
static void product(GpuModel *g, bf16_t *out, const bf16_t *x, const Fp8Mat *xc, const bf16_t *w, const Fp8Mat *w8,
                    const bf16_t *res, int n, int IC, int OC)
{
	if (g->fwd8) {
		if (x || !xc)
			xc = &g->xq;
		if (x)
			fp8_rows_cuda(g->xq.q, g->xq.s, x, n, IC);
		matmul_forward_fp8_cuda(out, res, xc->q, xc->s, w8->q, w8->s, n, IC, OC);
	} else if (!x) {
		BUG("gpu_model_forward: a product's input in codes, but the forward is bf16");
	} else if (res) {
		matmul_forward_residual_cuda(out, x, w, res, n, IC, OC);
	} else {
		matmul_forward_cuda(out, x, w, NULL, n, IC, OC);
	}
}

/* u = norm(x) (or, a not NULL, h = x + a, then u = norm(h)), rstd kept;
 * with codes (the fp8 forward's) also u's codes into q for the product
 * that reads u next, and (keep 0) u itself only where they could not be
 * made. Returns whether the codes are there (then pass product NULL for u
 * and q). */
static int norm_forward(GpuModel *g, int codes, const Fp8Mat *q, bf16_t *h, bf16_t *u, float *rstd, const bf16_t *x,
                        const bf16_t *a, const bf16_t *w, int n, int keep)
{
	const ModelConfig *c = &g->m->cfg;
	int C = c->C;
	bf16_t *uk = keep ? u : NULL;
	if (codes && (a ? residual_rmsnorm_forward_fp8_cuda(h, uk, rstd, q->q, q->s, x, a, w, n, C, c->eps)
	                : rmsnorm_forward_fp8_cuda(uk, rstd, q->q, q->s, x, w, n, C, c->eps)))
		return 1;
	if (a)
		residual_rmsnorm_forward_cuda(h, u, rstd, x, a, w, n, C, c->eps);
	else
		rmsnorm_forward_cuda(u, rstd, x, w, n, C, c->eps);
	return 0;
}

/* layer l on its input saved(l)->x, whose norm1 is already in g->u; writes
 * the next layer's input and its norm1 into g->u, or, after the last layer,
 * xL and the final-normed hidden rows */
static void layer_forward_gpu(GpuModel *g, int l, int B, int T, GpuAttHook att, GpuLayerHook hook, void *ctx)
{
	const ModelConfig *c = &g->m->cfg;
	const GpuLayer *w = &g->layers[l];
	GpuSaved *s = saved(g, l);
	int n = B * T, C = c->C, H = c->H, G = c->G, D = c->D, HD = H * D, W = HD + 2 * G * D, F = c->F;
	/* attention: q, k, v = rope(Wqkv u + bqkv); a = Wo attention(q, k, v) + bo */
	int uc = g->u8; /* uq holds u's codes for the q|k|v product and the hook */
	product(g, g->qkv, uc ? NULL : g->u, &g->uq, w->wqkv, &w->qkvf, NULL, n, C, W);
	g->u8 = 0;
	qkv_rope_forward_cuda(s->q, s->k, s->v, g->qkv, w->bqkv, g->inv_freq, B, T, 0, H, G, D);
	const bf16_t *ain = attention_mix(g, s, l, B, T, att, ctx);
	int mixed = ain != s->att, u8;
	/* h = x + a, u = norm2(h): the add in the o GEMM (residual_gemm) where
	 * no hook needs a and there is no o bias */
	if (!hook && !w->bo && !mixed && residual_gemm()) {
		product(g, s->h, s->att, NULL, w->wo, &w->of, s->x, n, HD, C);
		u8 = norm_forward(g, g->fwd8, &g->xq, NULL, g->u, s->rstd2, s->h, NULL, w->ln2, n, 0);
	} else {
		product(g, g->a, ain, NULL, w->wo, &w->of, NULL, n, HD, C);
		if (w->bo) /* (wfa + w) bo */
			add_bias_cuda(g->a, w->bo, s->wfa + s->a2.w, n, C);
		if (hook) {
			g->hook_codes = uc ? &g->uq : NULL;
			hook(ctx, l, g->u, g->a, n, C);
			g->hook_codes = NULL;
		}
		u8 = norm_forward(g, g->fwd8, &g->xq, s->h, g->u, s->rstd2, s->x, g->a, w->ln2, n, 0);
	}
	/* MLP: gate | up = Wgu u, a = Wdown(silu(gate) up), act written as the
	 * down product's codes under the fp8 forward */
	product(g, s->gu, u8 ? NULL : g->u, NULL, w->wgu, &w->guf, NULL, n, C, 2 * F);
	const bf16_t *act = g->act;
	if (g->fwd8 && swiglu_packed_forward_fp8_cuda(g->xq.q, g->xq.s, s->gu, n, F))
		act = NULL;
	else
		swiglu_packed_forward_cuda(g->act, s->gu, n, F);
	/* x' = h + a and the norm that reads it: the next layer's first (its
	 * codes too, for the next q|k|v product), or the final one (its codes
	 * under gpu_model_logits_fp8, for the vocabulary's product); the add
	 * in the down GEMM, as above */
	int last = l + 1 == c->L;
	bf16_t *xn = last ? g->xL : saved(g, l + 1)->x, *un = last ? g->hidden : g->u;
	float *rn = last ? g->rstdf : saved(g, l + 1)->rstd1;
	const bf16_t *wn = last ? g->norm : g->layers[l + 1].ln1;
	int codes = last ? g->lg8 : g->fwd8, made;
	const Fp8Mat *q = last ? &g->hq : &g->uq;
	if (residual_gemm()) {
		product(g, xn, act, NULL, w->wdown, &w->downf, s->h, n, F, C);
		made = norm_forward(g, codes, q, NULL, un, rn, xn, NULL, wn, n, 1);
	} else {
		product(g, g->a, act, NULL, w->wdown, &w->downf, NULL, n, F, C);
		made = norm_forward(g, codes, q, xn, un, rn, s->h, g->a, wn, n, 1);
	}
	if (!last) {
		g->u8 = made;
	} else if (codes) { /* where the norm could not write them */
		if (!made)
			fp8_rows_cuda(g->hq.q, g->hq.s, un, n, C);
		g->h8 = 1;
	}
}

static void forward_layers(GpuModel *g, const int32_t *ids, int B, int T, int last, GpuAttHook att,
                           GpuLayerHook hook, void *ctx)
{
	const ModelConfig *c = &g->m->cfg;
	if (B < 1 || T < 1 || (int64_t)B * T > g->max_tokens)
		BUG("gpu_model_forward: %d x %d tokens, buffers for %d", B, T, g->max_tokens);
	if (last < 0 || last >= c->L)
		BUG("gpu_model_forward_layers: last layer %d of %d", last, c->L);
	int n = B * T, C = c->C, V = c->V;
	for (int i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= V)
			BUG("gpu_model_forward: token id %d out of range (V %d)", ids[i], V);
	gpu_upload(g->ids, ids, (size_t)n * sizeof(int32_t));
	GpuSaved *s0 = saved(g, 0);
	embedding_forward_cuda(s0->x, g->ids, g->embed, n, C);
	g->u8 = norm_forward(g, g->fwd8, &g->uq, NULL, g->u, s0->rstd1, s0->x, NULL, g->layers[0].ln1, n, 1);
	g->h8 = 0;
	for (int l = 0; l <= last; l++)
		layer_forward_gpu(g, l, B, T, att, hook, ctx);
	/* a forward cut short leaves no hidden rows for a backward */
	g->B = last == c->L - 1 ? B : 0, g->T = last == c->L - 1 ? T : 0;
}

extern "C" void gpu_model_forward_layers(GpuModel *g, const int32_t *ids, int B, int T, int last,
                                         GpuLayerHook hook, void *ctx)
{
	forward_layers(g, ids, B, T, last, NULL, hook, ctx);
}

extern "C" void gpu_model_forward_mix(GpuModel *g, const int32_t *ids, int B, int T, GpuAttHook att,
                                      GpuLayerHook hook, void *ctx)
{
	forward_layers(g, ids, B, T, g->m->cfg.L - 1, att, hook, ctx);
}

extern "C" void gpu_model_forward(GpuModel *g, const int32_t *ids, int B, int T, float *logits)
{
	const ModelConfig *c = &g->m->cfg;
	int n = B * T, C = c->C, V = c->V;
	gpu_model_forward_layers(g, ids, B, T, c->L - 1, NULL, NULL);
	if (!logits)
		return;
	/* the logits, LOGIT_ROWS rows at a time */
	int R = g->max_tokens < LOGIT_ROWS ? g->max_tokens : LOGIT_ROWS;
	bf16_t *hb = (bf16_t *)mallocCheck((size_t)R * V * sizeof(bf16_t));
	for (int r0 = 0; r0 < n; r0 += R) {
		int rows = n - r0 < R ? n - r0 : R;
		size_t nv = (size_t)rows * V;
		matmul_forward_cuda(g->logits, g->hidden + (size_t)r0 * C, g->lm_head, NULL, rows, C, V);
		gpu_download(hb, g->logits, nv * sizeof(bf16_t));
		for (size_t i = 0; i < nv; i++)
			logits[(size_t)r0 * V + i] = bf16_to_f32(hb[i]);
	}
	free(hb);
}

// ----------------------------------------------------------------------------
// backward, with respect to activations only: the twin of model_backward

/* the backward of gpu_model_backward and gpu_model_backward_mix: grad_hook
 * and mix may each be NULL */
static void backward(GpuModel *g, int B, int T, const bf16_t *d_dhidden, GpuGradHook grad_hook, GpuMixGrad mix,
                     void *ctx, bf16_t *d_dx0)
{
	const ModelConfig *c = &g->m->cfg;
	int n = B * T, C = c->C, H = c->H, G = c->G, D = c->D, HD = H * D, W = HD + 2 * G * D, F = c->F;
	if (!g->train)
		BUG("gpu_model_backward: the GpuModel was made without train");
	if (B != g->B || T != g->T)
		BUG("gpu_model_backward: %d x %d tokens, but the last forward ran %d x %d", B, T, g->B, g->T);
	if (attention_backward_work(B, T, H, D) > g->work_floats)
		BUG("gpu_model_backward: the attention backward wants %zu floats of work, the arena has %zu",
		    attention_backward_work(B, T, H, D), g->work_floats);
	/* the final norm: hidden = norm(xL) */
	check_finite_cuda("dhidden", c->L, d_dhidden, (size_t)n * C, 0);
	rmsnorm_backward_cuda(g->dx, d_dhidden, g->xL, g->rstdf, g->norm, n, C);
	int dx8 = 0; /* g->dq8 holds dx's codes, made by the norm's backward that wrote dx */
	for (int l = c->L - 1; l >= 0; l--) {
		const GpuLayer *w = &g->layers[l];
		const GpuSaved *s = &g->saved[l];
		check_finite_cuda("dx", l, g->dx, (size_t)n * C, 0);
		/* MLP: x' = h + Wdown(silu(gate) up), gate | up = Wgu u2, u2 = norm2(h) */
		if (g->fp8) {
			const Fp8Mat *q = &g->dq8;
			if (!dx8)
				fp8_rows_cuda(q->q, q->s, g->dx, n, C);
			matmul_backward_fp8_cuda(g->dact, 0, 0, q->q, q->s, w->down8.q, w->down8.s, n, F, C);
			if (!swiglu_packed_backward_fp8_cuda(q->q, q->s, g->dact, s->gu, n, F)) {
				swiglu_packed_backward_cuda(g->dgu, g->dact, s->gu, n, F);
				fp8_rows_cuda(q->q, q->s, g->dgu, n, 2 * F);
			}
			matmul_backward_fp8_cuda(g->du, 0, 0, q->q, q->s, w->gu8.q, w->gu8.s, n, C, 2 * F);
		} else {
			matmul_backward_cuda(g->dact, g->dx, w->wdown, n, F, C);
			swiglu_packed_backward_cuda(g->dgu, g->dact, s->gu, n, F);
			matmul_backward_cuda(g->du, g->dgu, w->wgu, n, C, 2 * F);
		}
		check_finite_cuda("dact", l, g->dact, (size_t)n * F, 0);
		check_finite_cuda("du (MLP)", l, g->du, (size_t)n * C, 0);
		/* dL/dh, and under fp8 its codes for the o product */
		int dh8 = g->fp8 && residual_rmsnorm_backward_fp8_cuda(g->dh, g->dq8.q, g->dq8.s, g->du, 0, g->dx, s->h,
		                                                       s->rstd2, w->ln2, n, C);
		if (!dh8)
			residual_rmsnorm_backward_cuda(g->dh, g->du, g->dx, s->h, s->rstd2, w->ln2, n, C);
		check_finite_cuda("dh", l, g->dh, (size_t)n * C, 0);
		/* attention: h = x + a, so dL/da = dL/dh */
		if (grad_hook)
			grad_hook(ctx, l, g->dh, n, C);
		/* a supernet's layer: a = Wo (wfa att + w2 att2) + its own
		 * operators', whose du arrives in float32 (dmix) and takes the
		 * path's share in the Wqkv GEMM */
		float *dmix = NULL;
		size_t nC = (size_t)n * C;
		const GpuMixAtt *a2 = &s->a2;
		int path = s->wfa != 0 || a2->w != 0, dots = a2->dot1 || a2->dot2;
		if ((path || dots) && g->fp8) {
			if (!dh8)
				fp8_rows_cuda(g->dq8.q, g->dq8.s, g->dh, n, C);
			dh8 = 1;
			matmul_backward_fp8_cuda(g->datt, 0, 0, g->dq8.q, g->dq8.s, w->o8.q, w->o8.s, n, HD, C);
		} else if (path || dots) {
			matmul_backward_cuda(g->datt, g->dh, w->wo, n, HD, C);
		}
		/* the mixture's operators may take dh's codes (gpu_model_hook_codes):
		 * dq8 keeps them until RoPE's backward */
		g->hook_codes = dh8 ? &g->dq8 : NULL;
		if (mix && l == 0 && !d_dx0) { /* nothing below wants more */
			mix(ctx, l, g->dh, NULL, n, C);
			g->hook_codes = NULL;
			if (dots)
				attention_dots_cuda(a2->dot1, a2->dot2, g->datt, s->att, a2->att, B, T, H, D, g->work);
			break;
		}
		if (path || dots)
			check_finite_cuda("datt", l, g->datt, (size_t)n * HD, 0);
		if (mix)
			mix(ctx, l, g->dh, &dmix, n, C);
		g->hook_codes = NULL;
		if (dmix)
			check_finite_cuda("dmix (the mixture's operators)", l, dmix, (size_t)n * C, 1);
		if (path) {
			/* under fp8 dq, dk, dv stay float32 in the work, for RoPE's
			 * backward straight into dqkv's codes */
			int acc = g->fp8;
			attention_backward2_cuda(acc ? NULL : g->dq, acc ? NULL : g->dk, acc ? NULL : g->dv, g->datt,
			                         s->wfa, s->att, s->lse, 0, a2->w, a2->att, a2->lse, a2->window, s->q,
			                         s->k, s->v, B, T, H, G, D, g->work, a2->dot1, a2->dot2);
			int dqkv8 = acc && qkv_rope_backward_fp8_acc_cuda(g->dq8.q, g->dq8.s, g->work,
			                                                  attention_backward_qscale(D), g->inv_freq, B,
			                                                  T, 0, H, G, D);
			if (acc && !dqkv8)
				attention_convert_cuda(g->dq, g->dk, g->dv, g->work, B, T, H, G, D);
			if (!dqkv8) {
				qkv_rope_backward_cuda(g->dqkv, g->dq, g->dk, g->dv, g->inv_freq, B, T, 0, H, G, D);
				check_finite_cuda("dqkv", l, g->dqkv, (size_t)n * W, 0);
			}
			if (g->fp8) { /* as below */
				if (!dqkv8)
					fp8_rows_cuda(g->dq8.q, g->dq8.s, g->dqkv, n, W);
				matmul_backward_fp8_cuda(dmix ? (void *)dmix : (void *)g->du, dmix != NULL,
				                         dmix != NULL, g->dq8.q, g->dq8.s, w->qkv8.q, w->qkv8.s, n, C,
				                         W);
			} else if (dmix) { /* dmix += dqkv Wqkv */
				gemm_bf16_acc(CUBLAS_OP_N, C, n, W, w->wqkv, C, g->dqkv, W, dmix, dmix, CUDA_R_32F, C);
			} else {
				matmul_backward_cuda(g->du, g->dqkv, w->wqkv, n, C, W);
			}
		} else {
			if (dots) /* both weights 0, their gradients all the same */
				attention_dots_cuda(a2->dot1, a2->dot2, g->datt, s->att, a2->att, B, T, H, D, g->work);
			if (!dmix)
				cudaCheck(cudaMemsetAsync(g->du, 0, nC * sizeof(bf16_t)));
		}
		/* u = norm1(x) and the residual: dL/dx, the first layer's into
		 * d_dx0 when given; du in float32 where it is dmix */
		if (dmix)
			check_finite_cuda("dmix + dqkv Wqkv", l, dmix, (size_t)n * C, 1);
		bf16_t *dx = l == 0 && d_dx0 ? d_dx0 : g->dx;
		const void *dn = dmix ? (const void *)dmix : (const void *)g->du;
		dx8 = l > 0 && g->fp8 &&
		      residual_rmsnorm_backward_fp8_cuda(dx, g->dq8.q, g->dq8.s, dn, dmix != NULL, g->dh, s->x,
		                                         s->rstd1, w->ln1, n, C);
		if (dx8)
			continue;
		if (dmix)
			residual_rmsnorm_backward_f32_cuda(dx, dmix, g->dh, s->x, s->rstd1, w->ln1, n, C);
		else
			residual_rmsnorm_backward_cuda(dx, g->du, g->dh, s->x, s->rstd1, w->ln1, n, C);
	}
}

extern "C" void gpu_model_backward(GpuModel *g, int B, int T, const bf16_t *d_dhidden, GpuGradHook grad_hook,
                                   void *ctx, bf16_t *d_dx0)
{
	backward(g, B, T, d_dhidden, grad_hook, NULL, ctx, d_dx0);
}

extern "C" void gpu_model_backward_mix(GpuModel *g, int B, int T, const bf16_t *d_dhidden, GpuMixGrad mix, void *ctx,
                                       bf16_t *d_dx0)
{
	backward(g, B, T, d_dhidden, NULL, mix, ctx, d_dx0);
}

extern "C" void gpu_model_backward_host(GpuModel *g, int B, int T, const float *dhidden, GpuGradHook grad_hook,
                                        void *ctx, float *dx0)
{
	if (!g->train || B != g->B || T != g->T)
		BUG("gpu_model_backward_host: no train forward of %d x %d tokens to go back through", B, T);
	size_t nC = (size_t)B * T * g->m->cfg.C;
	bf16_t *hb = (bf16_t *)mallocCheck(nC * sizeof(bf16_t));
	for (size_t i = 0; i < nC; i++)
		hb[i] = f32_to_bf16(dhidden[i]);
	gpu_upload(g->dhid, hb, nC * sizeof(bf16_t));
	gpu_model_backward(g, B, T, g->dhid, grad_hook, ctx, NULL); /* dL/dx0 stays in g->dx */
	if (dx0) {
		gpu_download(hb, g->dx, nC * sizeof(bf16_t));
		for (size_t i = 0; i < nC; i++)
			dx0[i] = bf16_to_f32(hb[i]);
	} else {
		gpu_sync();
	}
	free(hb);
}
