/*
 * supernet (GPU): the search's mixture of operators on the device, host
 * code over the teacher (kernels/forward.cu), the attention kernels and the
 * GpuLop candidates (kernels/linear_op.cu), plus three small kernels: the
 * mixture, a float32 accumulation and deterministic dot products. The twin
 * of supernet_kl and supernet_backward_kl in lib/supernet.c;
 * kernels/gpu_supernet.h states the contract.
 *
 * Forward, layer l (gpu_model_forward_mix's two hooks):
 *   before the attention (GpuAttHook): fa's weight w_0 and swa as the
 *     GpuModel's second attention (GpuMixAtt: the teacher's q, k, v in the
 *     window, in the same pass as fa); the GpuModel makes
 *     a = Wo (w_0 att + w_swa att_swa) (+ (w_0 + w_swa) bo) by one GEMM
 *   after Wo (GpuLayerHook): keep u (a shared arena's step only)
 *   gdn (weight != 0, or a step's with arenas of their own): o =
 *     gpu_lop_forward_bf16(u), straight from bf16 u to bf16 o (kept by a
 *     step with own arenas; its two products in e4m3 under --forward fp8,
 *     fp8-both or fp8-all, gpu_lop_forward_fp8); with DASH_SUPERNET_F32=1, and gla
 *     always: u in float32 once, o = gpu_lop_forward(u), kept in bf16
 *   a += sum_k w_k o_k                                mix_kernel
 * Backward, layer l (the GpuMixGrad of gpu_model_backward_mix), given da:
 *   dw of every kept gdn and gla column <da, o_k>, one pass over da (fa's
 *     and swa's, <datt, att> with datt = da Wo, are the GpuModel's: the
 *     sums of its attention backward's delta rows, GpuMixAtt's dot1, dot2)
 *   gdn, gla in a shared arena: o = the forward again, then its dot
 *   gdn, gla, when w != 0: du += w du_k, gdn by gpu_lop_backward_bf16 into
 *     the float32 sum (w folded in; its two products in e4m3 under --grad
 *     fp8, gpu_lop_grad_fp8), gla (and gdn with DASH_SUPERNET_F32=1)
 *     by gpu_lop_backward(da in float32) and acc_kernel
 *   then the GpuModel: both attention backwards on datt into one dq, dk,
 *     dv (attention_backward2_cuda, w_0 and w_swa), rope' and the one Wqkv
 *     GEMM, which adds into the columns' du, handed over in float32
 *   the first layer: the dots only (nothing below it wants a gradient)
 *
 * version 1: as above; the swa column recomputes no q, k, v (it takes the
 * teacher's, kept by the train GpuModel). H100, Qwen2.5-3B shape, fa, swa,
 * gdn, 1 x 4096 tokens (bench/bin/search), one arena for every gdn: 375.8
 * ms a step = teacher forward 44.8 + supernet forward 101.3 + KL 14.2 +
 * backward 215.0; 10.9K tokens/s.
 * version 2: an arena a gdn or gla operator when they fit, so that none
 * runs its forward twice: 330.8 ms a step (backward 171.1 ms; version 1's
 * 373.3 in the same run), 12.4K tokens/s, 12.3M tokens in 16.6 min; 51.2
 * GiB of the device in use (22.0 with one arena). Where it goes: the two
 * teacher-sized passes (forward 44 ms twice, backward about 60), the gdn
 * columns (36 x about 1.3 ms forward + 2.5 backward = 137 ms) and the
 * KL (14 ms): the target of 10 min (200 ms a step) needs the gdn kernels
 * on the tensor cores (they are float32 on the CUDA cores) and a faster
 * teacher both.
 * version 3: gdn's bf16 path (kernels/gpu_lop.h), the dots of a layer in
 * one pass over da (they took 57 us each, double products one value a
 * thread: now each thread sums 8 bf16 products in float32, then double),
 * the elementwise kernels 8 values a thread. H200, the same step: 294.2 ->
 * 266.5 ms (262.5 with the TF32 state passes of kernels/gdn_chunked.cu
 * version 4; 287.3 with DASH_SUPERNET_F32=1), 13.1 min for 12.3M tokens
 * (bench/RESULTS.md, version 6).
 * version 4: swa's backward shares the teacher path's Wo and Wqkv GEMMs
 * (the GpuModel's GpuMixAtt: one datt, the two attentions' dq, dk, dv
 * summed in one set of accumulators by attention_backward2_cuda) and the
 * columns' du reaches the GpuModel in float32, added in its Wqkv GEMM (no
 * bf16 round trip, no separate add); u kept only for a shared arena. H200,
 * the same step with gdn_chunked.cu version 5: 246-250 ms, 12.3-12.5 min
 * (bench/RESULTS.md, version 7).
 * version 5: swa's forward shares fa's Wo GEMM too (gpu_model_forward_mix:
 * the attentions mixed before Wo), and fa and swa come from one attention
 * pass; dw of both as <datt, att>, so neither a copy of fa's a nor swa's
 * own output is kept (1.2 GB less at 36 layers, 4096 tokens).
 * version 6: the first layer's backward ends at its dots (no operator
 * backward, Wqkv GEMM or norm backward below the first mixture): H200,
 * bench/bin/search 1 4096 5, backward 92.2-92.8 -> 91.3-91.5 ms, step
 * 213.3-213.4 -> 212.5-212.8 (bench/RESULTS.md, version 10).
 */
#include <string.h>

#include "cuda_common.cuh"
#include "gpu.h"
#include "gpu_lop.h"
#include "gpu_model.h"
#include "gpu_supernet.h"

extern "C" {
#include "util.h"
}

#define RED_BLOCKS 1056 /* the dot products' partial sums: eight blocks an SM of an H100 (H200: a layer's 32 MB
                          * in 13.5 us; two blocks an SM took 17, too few loads in flight) */
#define RED_THREADS 256
#define EW_BLOCKS 2048 /* grid-stride elementwise kernels */
#define EW_THREADS 256

struct GpuSupernet {
	const Supernet *sn;
	const ModelConfig *c;
	GpuModel *gm;
	int L, K, max_tokens, window;
	int ops[SN_MAX_OPS];
	GpuLop **lop;             /* [L*K] the gdn and gla columns' operators, NULL elsewhere and
	                           * where a hybrid's layer lacks the column's (empty in sn) */
	int sparse;               /* 1: some are missing so; forwards only */
	int shared;               /* 1: one arena for every GpuLop, each forward run again before its backward */
	int f32;                  /* 1: gdn on its float32 path too (DASH_SUPERNET_F32=1), else bf16 GEMMs */
	GpuLopArena *arena;       /* the shared one */
	void *fp8_scratch;        /* --grad fp8: the bf16 gdn columns' codes of da and dp (gpu_lop_grad_fp8) */
	void *mem;                /* the allocation of every buffer below */
	size_t rest_bytes;        /* device bytes besides the GpuModel's */
	/* kept per layer by a step's forward */
	bf16_t *u;                /* (L, n, C) each layer's attention input (a shared arena's forwards again) */
	bf16_t **kept;            /* [L*K] (n, C) the columns' outputs (gdn, gla: unless shared), else NULL */
	bf16_t *att;              /* (L, n, H*D) swa's attention output, when there is a swa column */
	float *lse;               /* (L, B, H, T) its log-sum-exp */
	/* scratch (n rows) */
	float *uf;                /* (n, C) u in float32 */
	float *of[SN_MAX_OPS];    /* (n, C) the float32 columns' outputs (gla; gdn with f32) */
	bf16_t *o16;              /* (n, C) a bf16 gdn column's output where it is not kept */
	float *daf, *duf, *duacc; /* (n, C) dL/da in float32, one operator's du, their sum (the GpuModel's) */
	double *dw, *partial;     /* (L*K) dL/dw; SN_MAX_OPS x RED_BLOCKS partial sums */
	bf16_t *th, *dhid;        /* (n, C) the teacher's hidden rows; dL/dhidden */
	uint8_t *thq;             /* (n, C) th's e4m3 codes by rows (--forward fp8-all), else NULL */
	float *ths;               /* (n) their scales */
	float *loss;              /* (3) the KL; eval's cross-entropies of the supernet and the teacher */
	int32_t *targets;         /* (n) eval's next-token targets */
	void *loss_work;          /* vocab_loss_work bytes */
	/* the call in progress */
	const float *w;           /* (L, K) host */
	int keep, B, T;
	cudaEvent_t ev[5];        /* teacher start, teacher end, forward start, forward end, loss end */
	cudaEvent_t ev_end;       /* backward end */
};

// ----------------------------------------------------------------------------
// kernels

/* the sources of a mixture or of dot products: up to SN_MAX_OPS arrays of
 * n values, bf16 or float32, each with its weight (a mixture's) or its
 * column (a dot product's) */
typedef struct {
	const void *p[SN_MAX_OPS];
	int f32[SN_MAX_OPS];
	float w[SN_MAX_OPS];
	int col[SN_MAX_OPS];
	int n;
} MixSrc;

__device__ __forceinline__ float load(const void *p, int f32, int64_t i)
{
	return f32 ? ((const float *)p)[i] : __bfloat162float(((const bf16 *)p)[i]);
}

/* The elementwise kernels below take 8 values a thread and step where vec
 * (vec8_ok of every pointer), then the rest one by one: the same sums in
 * the same order either way. */

/* a (n) = sum_j w_j src_j, in float32 in the order of the sources (as
 * supernet_hook sums); a may be a source */
__global__ void mix_kernel(bf16 *a, MixSrc s, int64_t n, int vec)
{
	int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, st = (int64_t)gridDim.x * blockDim.x;
	int64_t n8 = vec ? n / 8 : 0;
	for (int64_t i = t; i < n8; i += st) {
		float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, x[8];
#pragma unroll
		for (int j = 0; j < SN_MAX_OPS; j++) {
			if (j >= s.n)
				break;
			load8(x, s.p[j], s.f32[j], i);
#pragma unroll
			for (int e = 0; e < 8; e++)
				acc[e] += s.w[j] * x[e];
		}
		store8_bf16(a, acc, i);
	}
	for (int64_t i = 8 * n8 + t; i < n; i += st) {
		float acc = 0;
#pragma unroll
		for (int j = 0; j < SN_MAX_OPS; j++)
			if (j < s.n)
				acc += s.w[j] * load(s.p[j], s.f32[j], i);
		a[i] = __float2bfloat16(acc);
	}
}

/* acc (n) = w x (first) or acc + w x; x bf16 or float32 */
__global__ void acc_kernel(float *acc, const void *x, int xf32, float w, int first, int64_t n, int vec)
{
	int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, st = (int64_t)gridDim.x * blockDim.x;
	int64_t n8 = vec ? n / 8 : 0;
	for (int64_t i = t; i < n8; i += st) {
		float v[8], a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
		load8(v, x, xf32, i);
		if (!first)
			load8(a, acc, 1, i);
		((float4 *)acc)[2 * i] = make_float4(a[0] + w * v[0], a[1] + w * v[1], a[2] + w * v[2], a[3] + w * v[3]);
		((float4 *)acc)[2 * i + 1] =
			make_float4(a[4] + w * v[4], a[5] + w * v[5], a[6] + w * v[6], a[7] + w * v[7]);
	}
	for (int64_t i = 8 * n8 + t; i < n; i += st)
		acc[i] = (first ? 0.0f : acc[i]) + w * load(x, xf32, i);
}

/* partial[j RED_BLOCKS + b] = block b's stride of sum x y_j for each
 * source y_j (bf16 or float32), x bf16: each 8 products summed in float32
 * (bf16 products are exact there), the rest in double */
__global__ void dots_partial_kernel(double *partial, const bf16 *x, MixSrc y, int64_t n, int vec)
{
	double s[SN_MAX_OPS];
#pragma unroll
	for (int j = 0; j < SN_MAX_OPS; j++)
		s[j] = 0;
	int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, st = (int64_t)gridDim.x * blockDim.x;
	int64_t n8 = vec ? n / 8 : 0;
	for (int64_t i = t; i < n8; i += st) {
		float a[8], b[8];
		load8(a, x, 0, i);
#pragma unroll
		for (int j = 0; j < SN_MAX_OPS; j++) {
			if (j >= y.n)
				break;
			load8(b, y.p[j], y.f32[j], i);
			float d = 0;
#pragma unroll
			for (int e = 0; e < 8; e++)
				d += a[e] * b[e];
			s[j] += d;
		}
	}
	for (int64_t i = 8 * n8 + t; i < n; i += st)
#pragma unroll
		for (int j = 0; j < SN_MAX_OPS; j++)
			if (j < y.n)
				s[j] += (double)__bfloat162float(x[i]) * load(y.p[j], y.f32[j], i);
#pragma unroll
	for (int j = 0; j < SN_MAX_OPS; j++) {
		if (j >= y.n)
			break;
		double b = block_sum_double<RED_THREADS>(s[j]);
		if (threadIdx.x == 0)
			partial[j * RED_BLOCKS + blockIdx.x] = b;
	}
}

/* dw[col_j] += source j's partial sums, in order (a block a source) */
__global__ void dots_sum_kernel(double *dw, MixSrc y, const double *partial)
{
	double s = 0;
	for (int b = threadIdx.x; b < RED_BLOCKS; b += blockDim.x)
		s += partial[blockIdx.x * RED_BLOCKS + b];
	s = block_sum_double<RED_THREADS>(s);
	if (threadIdx.x == 0)
		dw[y.col[blockIdx.x]] += s;
}

// ----------------------------------------------------------------------------
// launchers

static int src_vec(const MixSrc *s, const void *a, int64_t n)
{
	int ok = vec8_ok(n, a);
	for (int j = 0; j < s->n; j++)
		ok &= vec8_ok(n, s->p[j]);
	return ok;
}

static void mix(bf16_t *a, const MixSrc *s, int64_t n)
{
	mix_kernel<<<EW_BLOCKS, EW_THREADS>>>((bf16 *)a, *s, n, src_vec(s, a, n));
	cudaCheck(cudaGetLastError());
}

static void acc(float *acc, const void *x, int xf32, float w, int first, int64_t n)
{
	acc_kernel<<<EW_BLOCKS, EW_THREADS>>>(acc, x, xf32, w, first, n, vec8_ok(n, acc, x));
	cudaCheck(cudaGetLastError());
}

/* dw[col_j] += <x, y_j> on the device for each source of y */
static void dots(GpuSupernet *g, double *dw, const bf16_t *x, const MixSrc *y, int64_t n)
{
	if (!y->n)
		return;
	dots_partial_kernel<<<RED_BLOCKS, RED_THREADS>>>(g->partial, (const bf16 *)x, *y, n, src_vec(y, x, n));
	cudaCheck(cudaGetLastError());
	dots_sum_kernel<<<y->n, RED_THREADS>>>(dw, *y, g->partial);
	cudaCheck(cudaGetLastError());
}

/* dw[k] += <x, y> */
static void dot(GpuSupernet *g, double *dw, int k, const bf16_t *x, const void *y, int yf32, int64_t n)
{
	MixSrc s;
	memset(&s, 0, sizeof s);
	s.p[0] = y, s.f32[0] = yf32, s.col[0] = k, s.n = 1;
	dots(g, dw, x, &s, n);
}

// ----------------------------------------------------------------------------
// the hooks

static size_t nC_of(const GpuSupernet *g) { return (size_t)g->max_tokens * g->c->C; }
static bf16_t *u_of(const GpuSupernet *g, int l) { return g->u + (size_t)l * nC_of(g); }
static bf16_t *att_of(const GpuSupernet *g, int l) { return g->att + (size_t)l * g->max_tokens * g->c->H * g->c->D; }
static float *lse_of(const GpuSupernet *g, int l) { return g->lse + (size_t)l * g->max_tokens * g->c->H; }

/* column k runs gdn's bf16 path (gpu_lop_forward_bf16) */
static int lop_half(const GpuSupernet *g, int k)
{
	return g->ops[k] == ARCH_GDN && !g->f32;
}

/* the swa column, or 0 when there is none */
static int swa_col(const GpuSupernet *g)
{
	for (int k = 1; k < g->K; k++)
		if (g->ops[k] == ARCH_SWA)
			return k;
	return 0;
}

/* the GpuAttHook: fa with w_0, swa as the GpuModel's second attention
 * (also at weight 0: a step's dw wants its output, and fa then comes from
 * the same kernel as the teacher's) */
static float sn_att(void *ctx, int l, GpuMixAtt *att2)
{
	GpuSupernet *g = (GpuSupernet *)ctx;
	const float *w = g->w + (size_t)l * g->K;
	double *dw = g->dw + (size_t)l * g->K;
	int k = swa_col(g);
	if (k)
		*att2 = GpuMixAtt{w[k], g->window, att_of(g, l), lse_of(g, l), NULL, NULL};
	if (g->keep) /* fa's and swa's dw, by the attention backward */
		att2->dot1 = dw, att2->dot2 = k ? dw + k : NULL;
	return w[0];
}

/* the teacher's: the same attention pass as the supernet's (the second
 * attention's output not stored), so that an all-fa supernet is the
 * teacher bit for bit */
static float teacher_att(void *ctx, int l, GpuMixAtt *att2)
{
	GpuSupernet *g = (GpuSupernet *)ctx;
	(void)l;
	if (swa_col(g))
		*att2 = GpuMixAtt{0.f, g->window, NULL, NULL, NULL, NULL};
	return 1.f;
}

/* the forward hook, after a = Wo (w_0 att + w_swa att_swa): a += sum_k w_k
 * op_k(u) over the gdn and gla columns */
static void sn_hook(void *ctx, int l, const uint16_t *d_u, uint16_t *d_a, int n, int C)
{
	GpuSupernet *g = (GpuSupernet *)ctx;
	int K = g->K, B = g->B, T = g->T;
	const float *w = g->w + (size_t)l * K;
	size_t nC = (size_t)n * C;
	if (g->keep && g->shared) /* u for the forwards again of a shared arena */
		cudaCheck(cudaMemcpyAsync(u_of(g, l), d_u, nC * sizeof(bf16_t), cudaMemcpyDeviceToDevice));
	MixSrc s;
	memset(&s, 0, sizeof s);
	s.p[s.n] = d_a, s.w[s.n++] = 1.f;
	int uf_ready = 0;
	const uint8_t *uq = NULL; /* u's codes, the norm's (the gdn columns' products under --forward fp8) */
	const float *us = NULL;
	gpu_model_hook_codes(g->gm, &uq, &us);
	for (int k = 1; k < K; k++) {
		/* a step needs every output for dw (gdn and gla in a shared arena
		 * run again in the backward) */
		bf16_t *kept = g->keep ? g->kept[(size_t)l * K + k] : NULL;
		GpuLop *op = g->lop[(size_t)l * K + k];
		if (g->ops[k] == ARCH_SWA)
			continue;
		if (!op && w[k] != 0)
			BUG("gpu_supernet: layer %d has no %s, of weight %g", l, arch_op_names[g->ops[k]], w[k]);
		if (!op || (w[k] == 0 && !kept))
			continue;
		const void *o;
		int f32 = 0;
		if (lop_half(g, k)) {
			bf16_t *ob = kept ? kept : g->o16;
			gpu_lop_forward_bf16(op, ob, d_u, uq, us, B, T);
			o = ob;
		} else {
			if (!uf_ready)
				bf16_to_f32_cuda(g->uf, d_u, nC), uf_ready = 1;
			gpu_lop_forward(op, g->of[k], g->uf, B, T);
			o = g->of[k], f32 = 1;
			if (kept)
				f32_to_bf16_cuda(kept, g->of[k], nC);
		}
		if (w[k] != 0)
			s.p[s.n] = o, s.f32[s.n] = f32, s.w[s.n++] = w[k];
	}
	if (s.n > 1)
		mix(d_a, &s, (int64_t)nC);
}

/* the GpuMixGrad: dw of layer l (but fa's and swa's, <datt, att>, which
 * the attention backward adds: sn_att's dot1 and dot2), du through the gdn
 * and gla columns */
static void sn_mix_grad(void *ctx, int l, const uint16_t *d_da, float **d_du, int n, int C)
{
	GpuSupernet *g = (GpuSupernet *)ctx;
	int K = g->K, B = g->B, T = g->T;
	const float *w = g->w + (size_t)l * K;
	int64_t nC = (int64_t)n * C;
	double *dw = g->dw + (size_t)l * K;
	int any = 0, uf_ready = 0, daf_ready = 0;
	const uint8_t *daq = NULL; /* da's codes, the norm backward's (--grad fp8) */
	const float *das = NULL;
	gpu_model_hook_codes(g->gm, &daq, &das);
	/* dw = <da, o> of every column whose output the forward kept in one
	 * pass over da; gdn and gla in a shared arena run again below first */
	MixSrc src;
	memset(&src, 0, sizeof src);
	for (int k = 1; k < K; k++)
		if (g->kept[(size_t)l * K + k])
			src.p[src.n] = g->kept[(size_t)l * K + k], src.col[src.n++] = k;
	dots(g, dw, d_da, &src, nC);
	for (int k = 1; k < K; k++) {
		GpuLop *op = g->lop[(size_t)l * K + k];
		if (g->ops[k] == ARCH_SWA) {
			continue;
		} else if (lop_half(g, k)) {
			if (g->shared) { /* the forward again, in the shared arena, summed as the forward's */
				matmul_fp8_fast(g->sn->fwd_fast);
				gpu_lop_forward_bf16(op, g->o16, u_of(g, l), NULL, NULL, B, T);
				matmul_fp8_fast(1);
				dot(g, dw, k, d_da, g->o16, 0, nC);
			}
			if (w[k] == 0 || !d_du)
				continue;
			gpu_lop_backward_bf16(op, g->duacc, w[k], any, d_da, daq, das, B, T);
		} else {
			if (g->shared) { /* the forward again, in the shared arena */
				if (!uf_ready)
					bf16_to_f32_cuda(g->uf, u_of(g, l), (size_t)nC), uf_ready = 1;
				gpu_lop_forward(op, g->of[k], g->uf, B, T);
				dot(g, dw, k, d_da, g->of[k], 1, nC);
			}
			if (w[k] == 0 || !d_du)
				continue;
			if (!daf_ready)
				bf16_to_f32_cuda(g->daf, d_da, (size_t)nC), daf_ready = 1;
			gpu_lop_backward(op, NULL, g->duf, g->daf, g->uf, B, T);
			acc(g->duacc, g->duf, 1, w[k], !any, nC);
		}
		any = 1;
	}
	if (d_du) /* NULL: the first layer's, nothing below wants a du */
		*d_du = any ? g->duacc : NULL;
}

// ----------------------------------------------------------------------------
// the supernet

static void layout(GpuSupernet *g, Carver *cv)
{
	const ModelConfig *c = g->c;
	size_t n = (size_t)g->max_tokens, C = c->C, HD = (size_t)c->H * c->D;
	int L = g->L, K = g->K;
	g->u = NULL;
	if (g->shared)
		CARVE(cv, g->u, (size_t)L * n * C);
	for (int l = 0; l < L; l++)
		for (int k = 0; k < K; k++) {
			g->kept[(size_t)l * K + k] = NULL;
			if ((g->ops[k] == ARCH_GDN || g->ops[k] == ARCH_GLA) && !g->shared)
				CARVE(cv, g->kept[(size_t)l * K + k], n * C);
		}
	g->att = NULL, g->lse = NULL;
	if (swa_col(g)) {
		CARVE(cv, g->att, (size_t)L * n * HD);
		CARVE(cv, g->lse, (size_t)L * n * c->H);
	}
	CARVE(cv, g->uf, n * C);
	g->o16 = NULL;
	for (int k = 1; k < K; k++) {
		g->of[k] = NULL;
		if (lop_half(g, k))
			CARVE(cv, g->o16, n * C);
		else if (g->ops[k] == ARCH_GDN || g->ops[k] == ARCH_GLA)
			CARVE(cv, g->of[k], n * C);
	}
	CARVE(cv, g->daf, n * C), CARVE(cv, g->duf, n * C), CARVE(cv, g->duacc, n * C);
	CARVE(cv, g->dw, (size_t)L * K), CARVE(cv, g->partial, SN_MAX_OPS * RED_BLOCKS);
	CARVE(cv, g->th, n * C), CARVE(cv, g->dhid, n * C);
	g->thq = NULL, g->ths = NULL;
	if (g->sn->fwd_fp8 == 3)
		CARVE(cv, g->thq, n * C), CARVE(cv, g->ths, n);
	CARVE(cv, g->loss, 3), CARVE(cv, g->targets, n);
	g->loss_work = carve(cv, vocab_loss_work(c->C, c->V));
}

extern "C" int gpu_supernet_fp8_fits(const Supernet *sn)
{
	if (cuda_cc_major() < 9 || !gpu_model_fp8_fits(&sn->m->cfg))
		return 0;
	for (int l = 0; l < sn->L; l++)
		for (int k = 1; k < sn->K; k++) {
			const LinearOp *op = &sn->lop[(size_t)l * sn->K + k];
			if (sn->ops[k] == ARCH_GDN && op->w && !gpu_lop_fp8_fits(op))
				return 0;
		}
	return 1;
}

extern "C" GpuSupernet *gpu_supernet_new(const Supernet *sn, int max_tokens)
{
	const ModelConfig *c = &sn->m->cfg;
	int L = sn->L, K = sn->K;
	if (K < 1 || K > SN_MAX_OPS || sn->ops[0] != ARCH_FA)
		BUG("gpu_supernet_new: %d columns, the first %d", K, sn->ops[0]);
	GpuSupernet *g = (GpuSupernet *)callocCheck(1, sizeof *g);
	g->sn = sn, g->c = c, g->L = L, g->K = K, g->max_tokens = max_tokens;
	memcpy(g->ops, sn->ops, (size_t)K * sizeof(int));
	g->window = 0;
	for (int k = 1; k < K; k++)
		for (int l = 0; l < L && sn->ops[k] == ARCH_SWA && !g->window; l++)
			g->window = sn->lop[(size_t)l * K + k].window; /* the first layer's with swa; all have the same */
	g->f32 = env_flag("DASH_SUPERNET_F32");
	g->gm = gpu_model_new(sn->m, max_tokens, 1);
	if (sn->grad_fp8)
		gpu_model_grad_fp8(g->gm); /* before the arenas, which size themselves by what is left */
	/* the forward's codes now, for the same reason; on in forward_kl only */
	if (sn->fwd_fp8) {
		gpu_model_forward_fp8(g->gm, 1);
		gpu_model_forward_fp8(g->gm, 0);
	}
	if (sn->fwd_fp8 == 3) /* fp8-all: every forward's hidden rows as codes too, lm_head's by rows */
		gpu_model_logits_fp8(g->gm, 1);
	g->kept = (bf16_t **)callocCheck((size_t)L * K, sizeof *g->kept);
	/* the gdn and gla operators: an arena each (nothing runs twice) when
	 * they fit beside the rest with an eighth of the device to spare, else
	 * one for all; DASH_SUPERNET_SHARED=1 asks for the latter */
	size_t ab = 0, sum = 0, params = 0;
	for (int l = 0; l < L; l++)
		for (int k = 1; k < K; k++)
			if (sn->ops[k] == ARCH_GDN || sn->ops[k] == ARCH_GLA) {
				const LinearOp *op = &sn->lop[(size_t)l * K + k];
				g->sparse |= !op->w;
				if (!op->w)
					continue;
				size_t b = gpu_lop_arena_bytes(op, max_tokens);
				ab = b > ab ? b : ab, sum += b;
				params += op->n * sizeof(float) + (size_t)max_tokens * op->H * sizeof(float);
			}
	Carver cv = {0, 0};
	layout(g, &cv); /* own arenas: the larger layout */
	size_t fr, tot;
	cudaCheck(cudaMemGetInfo(&fr, &tot));
	g->shared = ab && (env_flag("DASH_SUPERNET_SHARED") || cv.off + sum + params + tot / 8 > fr);
	cv = Carver{0, 0};
	layout(g, &cv);
	size_t bytes = cv.off;
	g->mem = gpu_alloc(bytes);
	cv = Carver{(uintptr_t)g->mem, 0};
	layout(g, &cv);
	g->rest_bytes = bytes + params + (g->shared ? ab : sum);
	g->lop = (GpuLop **)callocCheck((size_t)L * K, sizeof *g->lop);
	if (g->shared)
		g->arena = gpu_lop_arena_new(ab);
	for (int l = 0; l < L; l++)
		for (int k = 1; k < K; k++)
			if ((sn->ops[k] == ARCH_GDN || sn->ops[k] == ARCH_GLA) && sn->lop[(size_t)l * K + k].w)
				g->lop[(size_t)l * K + k] = gpu_lop_new(&sn->lop[(size_t)l * K + k], max_tokens, g->arena);
	if (sn->grad_fp8 || sn->fwd_fp8) { /* the bf16 gdn columns' products too, one scratch for all */
		size_t sb = 0;
		for (int l = 0; l < L; l++)
			for (int k = 1; k < K; k++)
				if (g->lop[(size_t)l * K + k] && lop_half(g, k)) {
					size_t b = gpu_lop_fp8_scratch_bytes(&sn->lop[(size_t)l * K + k], max_tokens);
					sb = b > sb ? b : sb;
				}
		if (sb) {
			g->fp8_scratch = gpu_alloc(sb);
			g->rest_bytes += sb;
		}
		for (int l = 0; l < L; l++)
			for (int k = 1; k < K; k++)
				if (g->lop[(size_t)l * K + k] && lop_half(g, k)) {
					GpuLop *op = g->lop[(size_t)l * K + k];
					if (sn->grad_fp8)
						g->rest_bytes += gpu_lop_grad_fp8(op, g->fp8_scratch);
					if (sn->fwd_fp8)
						g->rest_bytes += gpu_lop_forward_fp8(op, g->fp8_scratch);
				}
	}
	for (int i = 0; i < 5; i++)
		cudaCheck(cudaEventCreate(&g->ev[i]));
	cudaCheck(cudaEventCreate(&g->ev_end));
	return g;
}

extern "C" void gpu_supernet_free(GpuSupernet *g)
{
	if (!g)
		return;
	for (size_t i = 0; i < (size_t)g->L * g->K; i++)
		gpu_lop_free(g->lop[i]);
	gpu_lop_arena_free(g->arena);
	gpu_free(g->fp8_scratch), gpu_free(g->mem);
	gpu_model_free(g->gm);
	for (int i = 0; i < 5; i++)
		cudaCheck(cudaEventDestroy(g->ev[i]));
	cudaCheck(cudaEventDestroy(g->ev_end));
	free(g->lop), free(g->kept), free(g);
}

extern "C" int gpu_supernet_shared(const GpuSupernet *g)
{
	return g->shared;
}

extern "C" void gpu_supernet_bytes(const GpuSupernet *g, size_t *model, size_t *rest)
{
	size_t wb, ab;
	gpu_model_bytes(g->gm, &wb, &ab);
	if (model)
		*model = wb + ab;
	if (rest)
		*rest = g->rest_bytes;
}

static void check_call(const GpuSupernet *g, const int32_t *ids, int B, int T)
{
	(void)ids;
	if (B < 1 || T < 1 || (int64_t)B * T > g->max_tokens)
		BUG("gpu_supernet: %d x %d tokens, room for %d", B, T, g->max_tokens);
}

/* the teacher's forward runs with a hook that changes nothing, so that it
 * takes the hooked path of the supernet's own forward (a = Wo att kept
 * apart, then added: the unhooked forward adds it in the GEMM, which rounds
 * once less): an all-fa supernet is then the teacher bit for bit, KL 0 */
static void teacher_hook(void *ctx, int l, const uint16_t *d_u, uint16_t *d_a, int n, int C)
{
	(void)ctx, (void)l, (void)d_u, (void)d_a, (void)n, (void)C;
}

extern "C" void gpu_supernet_teacher(GpuSupernet *g, const int32_t *ids, int B, int T, uint16_t *host_rows)
{
	check_call(g, ids, B, T);
	size_t nC = (size_t)B * T * g->c->C;
	cudaCheck(cudaEventRecord(g->ev[0], 0));
	gpu_model_forward_fp8(g->gm, g->sn->fwd_fp8 >= 2); /* --forward fp8-both, fp8-all, fp8-fast */
	matmul_fp8_fast(g->sn->fwd_fast);
	gpu_model_forward_mix(g->gm, ids, B, T, teacher_att, teacher_hook, g);
	matmul_fp8_fast(0);
	gpu_model_forward_fp8(g->gm, 0);
	cudaCheck(cudaMemcpyAsync(g->th, gpu_model_hidden(g->gm), nC * sizeof(bf16_t), cudaMemcpyDeviceToDevice));
	if (g->thq) { /* the codes the final norm wrote: fp8_rows_cuda's of th */
		const float *hs;
		const uint8_t *hq = gpu_model_hidden8(g->gm, &hs);
		cudaCheck(cudaMemcpyAsync(g->thq, hq, nC, cudaMemcpyDeviceToDevice));
		cudaCheck(cudaMemcpyAsync(g->ths, hs, (size_t)B * T * sizeof(float), cudaMemcpyDeviceToDevice));
	}
	cudaCheck(cudaEventRecord(g->ev[1], 0));
	if (host_rows)
		gpu_download(host_rows, g->th, nC * sizeof(bf16_t));
}

extern "C" void gpu_supernet_set_teacher(GpuSupernet *g, const uint16_t *host_rows, int n)
{
	if (n < 1 || n > g->max_tokens)
		BUG("gpu_supernet_set_teacher: %d rows, room for %d", n, g->max_tokens);
	gpu_upload(g->th, host_rows, (size_t)n * g->c->C * sizeof(bf16_t));
	if (g->thq) /* the codes gpu_supernet_teacher's final norm would have written */
		fp8_rows_cuda(g->thq, g->ths, g->th, n, g->c->C);
}

/* the supernet's forward mixed by w and scale times the summed KL to the
 * teacher's rows into d_loss (device), with dL/dhidden when back */
static void forward_kl(GpuSupernet *g, const int32_t *ids, int B, int T, const float *w, int back, float scale,
                       float *d_loss)
{
	const ModelConfig *c = g->c;
	check_call(g, ids, B, T);
	g->w = w, g->keep = back, g->B = B, g->T = T;
	cudaCheck(cudaEventRecord(g->ev[2], 0));
	gpu_model_forward_fp8(g->gm, g->sn->fwd_fp8 != 0); /* the teacher's stays bf16 unless fp8-both */
	matmul_fp8_fast(g->sn->fwd_fast);                  /* the products of the forward and the logits */
	gpu_model_forward_mix(g->gm, ids, B, T, sn_att, sn_hook, g);
	gpu_model_forward_fp8(g->gm, 0);
	cudaCheck(cudaEventRecord(g->ev[3], 0));
	const float *s8, *hs, *ws;
	const uint8_t *w8 = gpu_model_lm_head8(g->gm, &s8), *hq = gpu_model_hidden8(g->gm, &hs);
	const uint8_t *wr = gpu_model_lm_head_rows8(g->gm, &ws);
	if (g->thq) /* --forward fp8-all: both logits from e4m3 codes (and dhidden so under --grad fp8) */
		vocab_loss_logits8_cuda(d_loss, NULL, back ? g->dhid : NULL, hq, hs, g->thq, g->ths,
		                        gpu_model_lm_head(g->gm), wr, ws, back ? w8 : NULL, s8, B * T, c->C, c->V, scale,
		                        g->loss_work);
	else if (back && w8) /* --grad fp8: dhidden through e4m3 too */
		vocab_loss_fp8_cuda(d_loss, NULL, g->dhid, gpu_model_hidden(g->gm), g->th, gpu_model_lm_head(g->gm), w8,
		                    s8, B * T, c->C, c->V, scale, g->loss_work);
	else
		vocab_loss_cuda(d_loss, NULL, back ? g->dhid : NULL, gpu_model_hidden(g->gm), g->th, NULL,
		                gpu_model_lm_head(g->gm), B * T, c->C, c->V, scale, g->loss_work);
	matmul_fp8_fast(0);
	cudaCheck(cudaEventRecord(g->ev[4], 0));
}

extern "C" double gpu_supernet_kl(GpuSupernet *g, const int32_t *ids, int B, int T, const float *w)
{
	float kl;
	forward_kl(g, ids, B, T, w, 0, 1.0f / (B * T), g->loss);
	gpu_download(&kl, g->loss, sizeof kl);
	g->w = NULL;
	return kl;
}

extern "C" double gpu_supernet_backward_kl(GpuSupernet *g, const int32_t *ids, int B, int T, const float *w,
                                           double *dw)
{
	if (g->sparse)
		BUG("gpu_supernet_backward_kl: a hybrid's supernet runs forwards only");
	size_t LK = (size_t)g->L * g->K;
	cudaCheck(cudaMemsetAsync(g->dw, 0, LK * sizeof(double)));
	forward_kl(g, ids, B, T, w, 1, 1.0f / (B * T), g->loss);
	matmul_fp8_fast(1); /* the backward's e4m3 products: fast sums (k <= 65536) */
	gpu_model_backward_mix(g->gm, B, T, g->dhid, sn_mix_grad, g, NULL);
	matmul_fp8_fast(0);
	cudaCheck(cudaEventRecord(g->ev_end, 0));
	double *h = (double *)mallocCheck(LK * sizeof(double));
	float kl;
	gpu_download(h, g->dw, LK * sizeof(double));
	gpu_download(&kl, g->loss, sizeof kl);
	for (size_t i = 0; i < LK; i++)
		dw[i] += h[i];
	free(h);
	g->w = NULL, g->keep = 0;
	return kl;
}

extern "C" void gpu_supernet_eval(GpuSupernet *g, const int32_t *ids, int B, int T, const float *w,
                                  const int32_t *targets, double *kl, double *nll, double *teacher_nll)
{
	const ModelConfig *c = g->c;
	int n = B * T;
	gpu_supernet_teacher(g, ids, B, T, NULL);
	gpu_upload(g->targets, targets, (size_t)n * sizeof(int32_t));
	vocab_loss_cuda(g->loss + 2, NULL, NULL, g->th, NULL, g->targets, gpu_model_lm_head(g->gm), n, c->C, c->V, 1.0f,
	                g->loss_work);
	forward_kl(g, ids, B, T, w, 0, 1.0f, g->loss);
	vocab_loss_cuda(g->loss + 1, NULL, NULL, gpu_model_hidden(g->gm), NULL, g->targets, gpu_model_lm_head(g->gm), n,
	                c->C, c->V, 1.0f, g->loss_work);
	float h[3];
	gpu_download(h, g->loss, sizeof h);
	*kl = h[0], *nll = h[1], *teacher_nll = h[2];
	g->w = NULL;
}

extern "C" void gpu_supernet_phases(GpuSupernet *g, float ms[4])
{
	cudaCheck(cudaEventSynchronize(g->ev_end));
	cudaCheck(cudaEventElapsedTime(&ms[0], g->ev[0], g->ev[1]));
	cudaCheck(cudaEventElapsedTime(&ms[1], g->ev[2], g->ev[3]));
	cudaCheck(cudaEventElapsedTime(&ms[2], g->ev[3], g->ev[4]));
	cudaCheck(cudaEventElapsedTime(&ms[3], g->ev[4], g->ev_end));
}
