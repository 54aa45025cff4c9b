/*
 * decode (GPU): batched greedy decoding of a teacher or of a hybrid on the
 * device, host code over the teacher's GPU forward (kernels/forward.cu), the
 * attention kernels, the GpuLop operators (kernels/linear_op.cu) and a few
 * kernels of its own: RoPE at each row's position with the append to the
 * cache, the one-query attention over a cache split over its positions
 * (flash-decoding), the gather of the recurrent states, the argmax. The twin
 * of lib/decode.c; kernels/gpu_decode.h states the contract. Not a sampler:
 * greedy only.
 *
 * Prefill (one empty sequence, its whole prompt in one pass): the GpuModel's
 * forward with a GpuLayerHook, which in every layer
 *   fa       copies the layer's k and v (n, G, D) into the cache, slots 0..n-1
 *   swa      a = Wo attention_W(q, k, v) + bo on the teacher's q, k, v (the
 *            supernet's swa column), and the last min(n, S) positions' k, v
 *            into the ring
 *   gdn, gla u in float32, a = gpu_lop_forward_state from the zero state to
 *            the sequence's state, a back in bf16
 * then the last hidden row through the vocabulary projection, float32 out.
 * A step (n sequences of the B, one token each), layer by layer on n rows:
 *   u = norm1(x)                                     rmsnorm_forward
 *   fa, swa: qkv = Wqkv u                            GEMM
 *            q, k, v = rope(qkv + b) at each row's position, k and v into
 *            the cache at slot pos % S                decode_qkv
 *            att = attention of q over positions [max(0, pos + 1 - W), pos],
 *            split over the positions, then combined decode_attention x2
 *            x += Wo att (+ bo)                       GEMM adding x
 *   gdn, gla: states of the n sequences gathered (unless side by side),
 *            a = gpu_lop_forward_state(u) with T 1, states scattered back,
 *            x += a                                   4-8 launches
 *   x += Wdown silu(gate) up, gate | up = Wgu norm2(x)  as forward.cu
 * then u = norm(x), the float32 logits (n, V) and, for greedy, their argmax.
 *
 * Precision: bf16 activations and caches with float32 arithmetic, as the
 * GpuModel; softmax, its sums and the logits float32; the recurrent states
 * float32 (the GpuLop's). Against lib/decode.c (float32 activations, bf16
 * caches) the logits agree to bf16 rounding (tests/test_decode.cu).
 *
 * version 1: as above. The attention splits every row's positions into
 * tiles of DA_TILE, a block per (split, kv head, row) taking all H/G query
 * heads of its kv head (each key and value read once for them), splits
 * chosen so that a step has about DA_BLOCKS blocks (at most
 * DASH_DECODE_SPLITS a row when that is set in the environment: the tests
 * force several tiles a split with it). H100, random:qwen2.5-0.5b
 * (tests/test_decode.cu with DASH_DECODE_BENCH=1, medians): the teacher's
 * prefill of 4096 tokens 10.5 ms, a step of 32 sequences at context 4096
 * 3.87 ms (8.3K tokens/s), a step of 1 2.27 ms, a step of 8 at 32768 5.82
 * ms; fa in 3 layers and gdn in 21: prefill 24.3 ms, steps 4.54 and 3.69
 * ms. A step of 1 costing 60% of a step of 32 says the step is bound by
 * its launches (about 10 a layer, the GEMMs through cuBLASLt), not by the
 * caches it reads: the next version would capture it in a CUDA graph.
 */
#include <math.h>
#include <string.h>

#include "cuda_common.cuh"
#include "gpu.h"
#include "gpu_decode.h"
#include "gpu_lop.h"
#include "gpu_model.h"

extern "C" {
#include "util.h"
}

#define DA_THREADS 128 /* decode attention: threads a block, 4 warps */
#define DA_WARPS (DA_THREADS / WARP_SIZE)
#define DA_TILE 128    /* positions a tile: one a thread for the scores, 32 a warp for the values */
#define DA_BLOCKS 1024 /* blocks a step's attention launch aims at */
#define DA_MAX_REP 16  /* query heads a kv head */
#define EW_BLOCKS 1024 /* grid-stride elementwise kernels */
#define EW_THREADS 256
#define AM_THREADS 1024 /* the argmax: a block a row */

/* a layer of the decoder: its operator and where its states lie */
struct DecLayerG {
	int op;          /* ARCH_* */
	size_t off;      /* bytes into the states: layer l of sequence b at off + b * bytes */
	size_t bytes;    /* a sequence's state in this layer, as lib/decode.c's */
	long long slots; /* fa: cap; swa: S = min(W, cap) positions of k (then of v) */
	int window;      /* swa: W; fa: 0 (every position) */
	GpuLop *lop;     /* gdn, gla */
};

struct GpuDecoder {
	const Model *m;
	const Hybrid *hy;
	int B, cap, L;
	GpuModel *gm;             /* the teacher: weights, and the prefill's forward */
	GpuLopArena *arena;       /* shared by every GpuLop (forwards only) */
	struct DecLayerG *layer;  /* [L] */
	long long *pos;           /* (B) host: tokens each sequence holds */
	uint8_t *state;           /* device: every layer's states, layer after layer */
	size_t weight_bytes, state_bytes, rest_bytes;
	int nsplit_max;           /* attention splits a row at most: cap / DA_TILE, or
	                           * DASH_DECODE_SPLITS from the environment (for tests) */
	int lop_rows;             /* rows a GpuLop call may have: max(cap, B) */
	size_t sn_max;            /* floats of the largest gdn or gla state of a sequence */
	void *mem;                /* the allocation of the buffers below */
	/* a step's, B rows at most */
	int32_t *rows;            // (3, B) ids, seq, pos of the rows (the first 3n used)
	bf16_t *x, *u, *a;        // (B, C) the residual stream, a norm's output, an o with bias
	float *rstd;              // (B)
	bf16_t *qkv;              // (B, H*D + 2*G*D)
	bf16_t *q, *att;          // (B, H, D)
	bf16_t *gu;               // (B, 2F)
	bf16_t *act;              // (B, F)
	float *opart;             // (B, H, nsplit_max, D) the splits' unnormalised outputs
	float2 *ml;               // (B, H, nsplit_max) their max score and sum of exponentials
	float *sg;                // (B, sn_max) gathered states (when a gdn or gla layer)
	/* the prefill's and the step's */
	float *uf, *af;           // (lop_rows, C) u and a in float32 (gdn, gla)
	bf16_t *patt;             // (cap, H, D) swa's attention output (when a swa layer)
	float *plse;              // (H, cap) its lse
	float *logits;            // (B, V) float32
	int32_t *best;            // (B) their argmax
	int32_t *hrows;           /* (3, B) host staging of rows */
	int pf_b;                 /* the sequence the prefill in flight fills */
};

// ----------------------------------------------------------------------------
// kernels

/* the cosine and sine of the angle pos inv_freq as kernels/ops.cu takes them
 * (the angle in float32, its cosine and sine in double) */
__device__ __forceinline__ void dec_cos_sin(int pos, float inv_freq, float *cf, float *sf)
{
	double s, c;
	sincos((double)((float)pos * inv_freq), &s, &c);
	*cf = (float)c, *sf = (float)s;
}

/* A block a row i of a step: qkv (n, H*D + 2*G*D) + the packed bias b (or
 * NULL) -> q (n, H, D) rotated at position pos[i], and k (rotated), v
 * written into the cache of sequence seq[i] at slot pos[i] % slots: k
 * (slots, G, D) at cache + seq[i] * stride, v right after it. The
 * arithmetic of qkv_rope_forward_kernel. */
__global__ void decode_qkv_kernel(bf16 *q, uint8_t *cache, size_t stride, long long slots, const bf16 *qkv,
                                  const bf16 *b, const float *inv_freq, const int32_t *seq, const int32_t *pos, int H,
                                  int G, int D)
{
	extern __shared__ float cs[]; /* (D/2) cosines, then (D/2) sines */
	int i = blockIdx.x, half = D / 2, p = pos[i];
	float *sn = cs + half;
	for (int j = threadIdx.x; j < half; j += blockDim.x)
		dec_cos_sin(p, inv_freq[j], &cs[j], &sn[j]);
	__syncthreads();
	bf16 *kc = (bf16 *)(cache + (size_t)seq[i] * stride), *vc = kc + (size_t)slots * G * D;
	size_t slot = (size_t)(p % slots);
	const bf16 *row = qkv + (size_t)i * (H + 2 * G) * D;
	for (int e = threadIdx.x; e < (H + 2 * G) * half; e += blockDim.x) {
		int hh = e / half, j = e % half, o = hh * D;
		float x1 = __bfloat162float(row[o + j]), x2 = __bfloat162float(row[o + j + half]);
		if (b)
			x1 += __bfloat162float(b[o + j]), x2 += __bfloat162float(b[o + j + half]);
		bf16 *dst = hh < H       ? q + ((size_t)i * H + hh) * D
		            : hh < H + G ? kc + (slot * G + (hh - H)) * D
		                         : vc + (slot * G + (hh - H - G)) * D;
		if (hh < H + G) {
			dst[j] = __float2bfloat16(x1 * cs[j] - x2 * sn[j]);
			dst[j + half] = __float2bfloat16(x2 * cs[j] + x1 * sn[j]);
		} else {
			dst[j] = __float2bfloat16(x1);
			dst[j + half] = __float2bfloat16(x2);
		}
	}
}

/* N bf16 values at p (aligned to 2N bytes) as floats */
template <int N> __device__ __forceinline__ void load_bf16(float *f, const bf16 *p)
{
	if (N == 2) {
		float2 t = __bfloat1622float2(*(const __nv_bfloat162 *)p);
		f[0] = t.x, f[1] = t.y;
	} else {
#pragma unroll
		for (int j = 0; j < N; j += 4) {
			uint2 u = *(const uint2 *)(p + j);
			float2 a = __bfloat1622float2(*(const __nv_bfloat162 *)&u.x);
			float2 c = __bfloat1622float2(*(const __nv_bfloat162 *)&u.y);
			f[j] = a.x, f[j + 1] = a.y, f[j + 2] = c.x, f[j + 3] = c.y;
		}
	}
}

__device__ __forceinline__ float warp_max(float v)
{
	for (int o = WARP_SIZE / 2; o > 0; o /= 2)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

/* Flash-decoding, the split: a block per (split s, kv head g, row i) attends
 * the rep = H/G query heads of kv head g of row i (q (n, H, D)) to the
 * positions [s0, s1) of its sequence's cache, s0 = lo + s split_len, where
 * row i sees [lo, hi) = [max(0, pos + 1 - window), pos + 1) (window 0: from
 * 0), position p at slot p % slots. Tiles of DA_TILE positions: scores a
 * thread a position (scale 1/sqrt(D)), the running max and sum a warp a
 * head, the values a warp 32 positions, a lane D/32 dims of every head.
 * Writes head h's unnormalised output to opart ((i, h, s), D) and its max
 * and sum of exponentials to ml (i, h, s); an empty split writes (-inf, 0).
 * MR >= rep bounds the registers. */
template <int D, int MR>
__global__ void __launch_bounds__(DA_THREADS)
	decode_attention_kernel(float *opart, float2 *ml, const bf16 *q, const uint8_t *cache, size_t stride,
	                        long long slots, const int32_t *seq, const int32_t *pos, int H, int G, int window,
	                        int split_len, int nsplit, float scale)
{
	constexpr int DPL = D / WARP_SIZE; /* a lane's dims in the values */
	extern __shared__ float smem[];
	int rep = H / G, s = blockIdx.x, g = blockIdx.y, i = blockIdx.z;
	int tid = threadIdx.x, w = tid / WARP_SIZE, lane = tid % WARP_SIZE;
	float *qs = smem;               /* (rep, D) the queries */
	float *ss = qs + rep * D;       /* (rep, DA_TILE) a tile's scores, then exponentials */
	float *ms = ss + rep * DA_TILE; /* (rep) the running max */
	float *ls = ms + rep;           /* (rep) the running sum */
	float *as = ls + rep;           /* (rep) the tile's rescaling of the earlier sums */
	float *os = as + rep;           /* (DA_WARPS, rep, D) the warps' outputs */
	long long hi = (long long)pos[i] + 1, lo = window > 0 && hi - window > 0 ? hi - window : 0;
	long long s0 = lo + (long long)s * split_len, s1 = s0 + split_len < hi ? s0 + split_len : hi;
	size_t part = ((size_t)i * H + (size_t)g * rep) * nsplit + s; /* (i, g rep, s); head r at + r nsplit */
	if (s0 >= s1) {
		if (tid < rep)
			ml[part + (size_t)tid * nsplit] = make_float2(-INFINITY, 0.0f);
		return;
	}
	const bf16 *kc = (const bf16 *)(cache + (size_t)seq[i] * stride), *vc = kc + (size_t)slots * G * D;
	for (int e = tid; e < rep * D; e += DA_THREADS)
		qs[e] = __bfloat162float(q[((size_t)i * H + (size_t)g * rep) * D + e]);
	if (tid < rep)
		ms[tid] = -INFINITY, ls[tid] = 0;
	float o[MR][DPL];
#pragma unroll
	for (int r = 0; r < MR; r++)
#pragma unroll
		for (int d = 0; d < DPL; d++)
			o[r][d] = 0;
	__syncthreads();
	for (long long t0 = s0; t0 < s1; t0 += DA_TILE) {
		/* scores: position t0 + tid against every head */
		long long p = t0 + tid;
		float acc[MR];
#pragma unroll
		for (int r = 0; r < MR; r++)
			acc[r] = 0;
		if (p < s1) {
			const bf16 *kr = kc + ((size_t)(p % slots) * G + g) * D;
#pragma unroll
			for (int c = 0; c < D; c += 8) {
				float k8[8];
				load_bf16<8>(k8, kr + c);
#pragma unroll
				for (int r = 0; r < MR; r++)
					if (r < rep)
#pragma unroll
						for (int j = 0; j < 8; j++)
							acc[r] += qs[r * D + c + j] * k8[j];
			}
		}
#pragma unroll
		for (int r = 0; r < MR; r++)
			if (r < rep)
				ss[r * DA_TILE + tid] = p < s1 ? acc[r] * scale : -INFINITY;
		__syncthreads();
		/* the running max and sum: warp w takes heads w, w + DA_WARPS, ... */
		for (int r = w; r < rep; r += DA_WARPS) {
			float v[DA_TILE / WARP_SIZE], mx = -INFINITY;
#pragma unroll
			for (int j = 0; j < DA_TILE / WARP_SIZE; j++)
				v[j] = ss[r * DA_TILE + lane + j * WARP_SIZE], mx = fmaxf(mx, v[j]);
			mx = warp_max(mx);
			float mold = ms[r], mnew = fmaxf(mold, mx), sum = 0; /* mnew finite: position t0 is seen */
#pragma unroll
			for (int j = 0; j < DA_TILE / WARP_SIZE; j++) {
				float e = expf(v[j] - mnew);
				ss[r * DA_TILE + lane + j * WARP_SIZE] = e;
				sum += e;
			}
			sum = warp_sum(sum);
			__syncwarp();
			if (lane == 0) {
				float al = expf(mold - mnew); /* 0 on the first tile */
				as[r] = al, ls[r] = ls[r] * al + sum, ms[r] = mnew;
			}
		}
		__syncthreads();
		/* the values: warp w's 32 positions, lane's dims */
#pragma unroll
		for (int r = 0; r < MR; r++)
			if (r < rep) {
				float al = as[r];
#pragma unroll
				for (int d = 0; d < DPL; d++)
					o[r][d] *= al;
			}
		long long pb = t0 + w * WARP_SIZE;
		int cnt = s1 - pb < WARP_SIZE ? (int)(s1 - pb) : WARP_SIZE;
		for (int j = 0; j < cnt; j++) {
			float vv[DPL];
			load_bf16<DPL>(vv, vc + ((size_t)((pb + j) % slots) * G + g) * D + lane * DPL);
#pragma unroll
			for (int r = 0; r < MR; r++)
				if (r < rep) {
					float pw = ss[r * DA_TILE + w * WARP_SIZE + j];
#pragma unroll
					for (int d = 0; d < DPL; d++)
						o[r][d] += pw * vv[d];
				}
		}
		__syncthreads(); /* the next tile overwrites ss and as */
	}
	/* the warps' outputs summed in a fixed order */
#pragma unroll
	for (int r = 0; r < MR; r++)
		if (r < rep)
#pragma unroll
			for (int d = 0; d < DPL; d++)
				os[((size_t)w * rep + r) * D + lane * DPL + d] = o[r][d];
	__syncthreads();
	for (int e = tid; e < rep * D; e += DA_THREADS) {
		int r = e / D, d = e % D;
		float sum = 0;
		for (int ww = 0; ww < DA_WARPS; ww++)
			sum += os[((size_t)ww * rep + r) * D + d];
		opart[(part + (size_t)r * nsplit) * D + d] = sum;
	}
	if (tid < rep)
		ml[part + (size_t)tid * nsplit] = make_float2(ms[tid], ls[tid]);
}

/* Flash-decoding, the combine: a block per (head h, row i), a thread a dim:
 * att (n, H, D) = sum_s e^{m_s - M} o_s / sum_s e^{m_s - M} l_s over the
 * non-empty splits */
__global__ void decode_combine_kernel(bf16 *att, const float *opart, const float2 *ml, int H, int nsplit, int D)
{
	int h = blockIdx.x, i = blockIdx.y;
	size_t base = ((size_t)i * H + h) * nsplit;
	float M = -INFINITY;
	for (int s = 0; s < nsplit; s++)
		if (ml[base + s].y > 0)
			M = fmaxf(M, ml[base + s].x);
	for (int d = threadIdx.x; d < D; d += blockDim.x) {
		float num = 0, den = 0;
		for (int s = 0; s < nsplit; s++) {
			float2 v = ml[base + s];
			if (v.y > 0) {
				float e = expf(v.x - M);
				den += e * v.y;
				num += e * opart[(base + s) * D + d];
			}
		}
		att[((size_t)i * H + h) * D + d] = __float2bfloat16(num / den);
	}
}

/* dst (n, sn) = the states (sn floats each) of sequences seq (n) of a layer
 * (sequence b's at layer + b * stride), or back when back */
template <typename V>
__global__ void state_gather_kernel(V *dst, uint8_t *layer, size_t stride, const int32_t *seq, int n, int64_t sn,
                                    int back)
{
	for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n * sn;
	     e += (int64_t)gridDim.x * blockDim.x) {
		int i = (int)(e / sn);
		V *st = (V *)(layer + (size_t)seq[i] * stride) + e % sn;
		if (back)
			*st = dst[e];
		else
			dst[e] = *st;
	}
}

/* x (n) += a (float32), the sum rounded to bf16 once */
__global__ void add_f32_kernel(bf16 *x, const float *a, int64_t n)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
		x[i] = __float2bfloat16(__bfloat162float(x[i]) + a[i]);
}

/* best[row] = the argmax of logits (rows, V), the first of equal maxima; a
 * block a row */
__global__ void argmax_kernel(int32_t *best, const float *logits, int V)
{
	__shared__ float bv_s[AM_THREADS / WARP_SIZE];
	__shared__ int bi_s[AM_THREADS / WARP_SIZE];
	const float *row = logits + (size_t)blockIdx.x * V;
	float bv = -INFINITY;
	int bi = V; /* none yet */
	for (int v = threadIdx.x; v < V; v += blockDim.x)
		if (bi == V || row[v] > bv)
			bv = row[v], bi = v;
	for (int o = WARP_SIZE / 2; o > 0; o /= 2) {
		float ov = __shfl_xor_sync(0xffffffffu, bv, o);
		int oi = __shfl_xor_sync(0xffffffffu, bi, o);
		if (oi != V && (bi == V || ov > bv || (ov == bv && oi < bi)))
			bv = ov, bi = oi;
	}
	if (threadIdx.x % WARP_SIZE == 0)
		bv_s[threadIdx.x / WARP_SIZE] = bv, bi_s[threadIdx.x / WARP_SIZE] = bi;
	__syncthreads();
	if (threadIdx.x == 0) {
		for (int w = 1; w < (int)(blockDim.x / WARP_SIZE); w++)
			if (bi_s[w] != V && (bi == V || bv_s[w] > bv || (bv_s[w] == bv && bi_s[w] < bi)))
				bv = bv_s[w], bi = bi_s[w];
		best[blockIdx.x] = bi == V ? 0 : bi;
	}
}

// ----------------------------------------------------------------------------
// launchers

static unsigned ew_blocks(int64_t n)
{
	int64_t b = CEIL_DIV(n, EW_THREADS);
	return (unsigned)(b < EW_BLOCKS ? (b > 0 ? b : 1) : EW_BLOCKS);
}

static size_t attention_smem(int rep, int D)
{
	return ((size_t)rep * D + (size_t)rep * DA_TILE + 3 * (size_t)rep + (size_t)DA_WARPS * rep * D) * sizeof(float);
}

template <int D, int MR>
static void attention_launch(dim3 grid, size_t smem, float *opart, float2 *ml, const bf16_t *q, const uint8_t *cache,
                             size_t stride, long long slots, const int32_t *seq, const int32_t *pos, int H, int G,
                             int window, int split_len, int nsplit)
{
	static bool attr_set;
	if (smem > 48 * 1024)
		smem_allow(decode_attention_kernel<D, MR>, attention_smem(DA_MAX_REP, D), &attr_set);
	decode_attention_kernel<D, MR><<<grid, DA_THREADS, smem>>>(opart, ml, (const bf16 *)q, cache, stride, slots, seq,
	                                                           pos, H, G, window, split_len, nsplit,
	                                                           1.0f / sqrtf((float)D));
	cudaCheck(cudaGetLastError());
}

template <int D>
static void attention_rep(int rep, dim3 grid, size_t smem, float *opart, float2 *ml, const bf16_t *q,
                          const uint8_t *cache, size_t stride, long long slots, const int32_t *seq, const int32_t *pos,
                          int H, int G, int window, int split_len, int nsplit)
{
	if (rep <= 4)
		attention_launch<D, 4>(grid, smem, opart, ml, q, cache, stride, slots, seq, pos, H, G, window, split_len,
		                       nsplit);
	else if (rep <= 8)
		attention_launch<D, 8>(grid, smem, opart, ml, q, cache, stride, slots, seq, pos, H, G, window, split_len,
		                       nsplit);
	else
		attention_launch<D, DA_MAX_REP>(grid, smem, opart, ml, q, cache, stride, slots, seq, pos, H, G, window,
		                                split_len, nsplit);
}

// ----------------------------------------------------------------------------
// sizes and buffers

static inline int layer_op(const Hybrid *hy, int l) { return hy ? hy->ops[l] : ARCH_FA; }

/* a sequence's state in layer l at cap positions, lib/decode.c's with a
 * bf16 cache */
static size_t layer_bytes(const Model *m, const Hybrid *hy, int l, int cap)
{
	return decoder_layer_bytes(m, hy, l, cap, DT_BF16);
}

static int has_op(const GpuDecoder *d, int op)
{
	for (int l = 0; l < d->L; l++)
		if (d->layer[l].op == op)
			return 1;
	return 0;
}

static void buffers_layout(GpuDecoder *d, Carver *cv)
{
	const ModelConfig *c = &d->m->cfg;
	size_t B = (size_t)d->B, C = c->C, H = c->H, HD = (size_t)c->H * c->D, GD = (size_t)c->G * c->D, F = c->F;
	size_t cap = (size_t)d->cap, P = (size_t)d->lop_rows, ns = (size_t)d->nsplit_max;
	int lin = has_op(d, ARCH_GDN) || has_op(d, ARCH_GLA);
	CARVE(cv, d->rows, 3 * B);
	CARVE(cv, d->x, B * C), CARVE(cv, d->u, B * C), CARVE(cv, d->a, B * C);
	CARVE(cv, d->rstd, B);
	CARVE(cv, d->qkv, B * (HD + 2 * GD));
	CARVE(cv, d->q, B * HD), CARVE(cv, d->att, B * HD);
	CARVE(cv, d->gu, B * 2 * F), CARVE(cv, d->act, B * F);
	CARVE(cv, d->opart, B * H * ns * c->D);
	CARVE(cv, d->ml, B * H * ns);
	d->sg = d->uf = d->af = NULL;
	if (lin) {
		CARVE(cv, d->sg, B * d->sn_max);
		CARVE(cv, d->uf, P * C), CARVE(cv, d->af, P * C);
	}
	d->patt = NULL, d->plse = NULL;
	if (has_op(d, ARCH_SWA)) {
		CARVE(cv, d->patt, cap * HD);
		CARVE(cv, d->plse, cap * H);
	}
	CARVE(cv, d->logits, B * (size_t)c->V);
	CARVE(cv, d->best, B);
}

#define GIB(b) ((double)(b) / (1 << 30))

extern "C" GpuDecoder *gpu_decoder_new(const Model *m, const Hybrid *hy, int B, int cap)
{
	const ModelConfig *c = &m->cfg;
	if (B < 1 || cap < 1)
		BUG("gpu_decoder_new: B %d, cap %d", B, cap);
	if (hy && hy->L != c->L)
		BUG("gpu_decoder_new: a hybrid of %d layers for a model of %d", hy->L, c->L);
	if (c->H % c->G || c->H / c->G > DA_MAX_REP)
		die("gpu_decoder_new: %d query heads over %d kv heads: the GPU decoder takes up to %d a kv head", c->H, c->G,
		    DA_MAX_REP);
	GpuDecoder *d = (GpuDecoder *)callocCheck(1, sizeof *d);
	d->m = m, d->hy = hy, d->B = B, d->cap = cap, d->L = c->L;
	d->lop_rows = cap > B ? cap : B;
	d->nsplit_max = CEIL_DIV(cap, DA_TILE);
	const char *e = getenv("DASH_DECODE_SPLITS");
	long long ms = e && *e ? estrtoll(e, "DASH_DECODE_SPLITS") : 0;
	if (ms > 0 && ms < d->nsplit_max)
		d->nsplit_max = (int)ms;
	d->layer = (struct DecLayerG *)callocCheck((size_t)c->L, sizeof *d->layer);
	d->pos = (long long *)callocCheck((size_t)B, sizeof *d->pos);
	d->hrows = (int32_t *)mallocCheck(3 * (size_t)B * sizeof(int32_t));
	d->gm = gpu_model_new(m, cap, 0);

	/* the layers: states layer after layer, B sequences each */
	size_t off = 0, arena = 0, lop_w = 0, lop_rest = 0;
	for (int l = 0; l < c->L; l++) {
		struct DecLayerG *y = &d->layer[l];
		y->op = layer_op(hy, l), y->off = off, y->bytes = layer_bytes(m, hy, l, cap);
		off += (size_t)B * y->bytes;
		if (y->op == ARCH_FA) {
			y->slots = cap;
		} else {
			const LinearOp *op = &hy->lop[l];
			int want = y->op == ARCH_SWA ? LOP_SWA : y->op == ARCH_GDN ? LOP_GDN : LOP_GLA;
			if (y->op < 0 || y->op >= ARCH_NOPS || !op->w || op->kind != want || op->C != c->C)
				BUG("gpu_decoder_new: layer %d: operator %d without its parameters", l, y->op);
			if (y->op == ARCH_SWA) {
				/* the teacher's attention in a window: the GpuModel's weights */
				if (op->window < 1 || op->H != c->H || op->G != c->G || op->D != c->D)
					BUG("gpu_decoder_new: layer %d: swa of window %d, heads %d/%d of %d, not the teacher's", l,
					    op->window, op->H, op->G, op->D);
				y->window = op->window, y->slots = cap < op->window ? cap : op->window;
			} else {
				size_t ab = gpu_lop_arena_bytes(op, d->lop_rows), sn = (size_t)op->H * op->D * op->D;
				arena = ab > arena ? ab : arena;
				d->sn_max = sn > d->sn_max ? sn : d->sn_max;
				lop_w += op->n * sizeof(float);                         /* its parameters */
				lop_rest += (size_t)d->lop_rows * op->H * sizeof(float); /* its column sums' ones */
			}
		}
		/* the attention kernels read k and v rows in 16-byte pieces */
		if ((y->op == ARCH_FA || y->op == ARCH_SWA) && (y->off % 16 || y->bytes % 16))
			die("gpu_decoder_new: layer %d's cache does not start on 16 bytes (a gdn or gla of odd head dim "
			    "before it)", l);
	}
	d->state_bytes = off;
	if (off != (size_t)B * decoder_state_bytes(m, hy, cap, DT_BF16))
		BUG("gpu_decoder_new: states of %zu bytes, lib/decode.c's formula gives %zu", off,
		    (size_t)B * decoder_state_bytes(m, hy, cap, DT_BF16));

	/* the buffers: sized, checked against the free memory, allocated */
	Carver cv = {0, 0};
	buffers_layout(d, &cv);
	size_t bufs = cv.off, free_b, total_b;
	cudaCheck(cudaMemGetInfo(&free_b, &total_b));
	size_t need = off + bufs + arena + lop_w + lop_rest;
	if (need > free_b)
		die("gpu_decoder_new: %.2f GiB of device memory needed besides the teacher's (states %.2f GiB for %d "
		    "sequences of %d positions, buffers %.2f, gdn and gla operators %.2f), %.2f GiB free",
		    GIB(need), GIB(off), B, cap, GIB(bufs), GIB(arena + lop_w + lop_rest), GIB(free_b));
	d->state = (uint8_t *)gpu_alloc(off);
	cudaCheck(cudaMemset(d->state, 0, off));
	d->mem = gpu_alloc(bufs);
	cv = Carver{(uintptr_t)d->mem, 0};
	buffers_layout(d, &cv);
	if (arena)
		d->arena = gpu_lop_arena_new(arena);
	for (int l = 0; l < c->L; l++)
		if (d->layer[l].op == ARCH_GDN || d->layer[l].op == ARCH_GLA)
			d->layer[l].lop = gpu_lop_new(&hy->lop[l], d->lop_rows, d->arena);
	size_t gw, ga;
	gpu_model_bytes(d->gm, &gw, &ga);
	d->weight_bytes = gw + lop_w;
	d->rest_bytes = ga + bufs + arena + lop_rest;
	return d;
}

extern "C" void gpu_decoder_free(GpuDecoder *d)
{
	if (!d)
		return;
	for (int l = 0; l < d->L; l++)
		gpu_lop_free(d->layer[l].lop);
	gpu_lop_arena_free(d->arena);
	gpu_free(d->mem);
	gpu_free(d->state);
	gpu_model_free(d->gm);
	free(d->layer), free(d->pos), free(d->hrows), free(d);
}

extern "C" void gpu_decoder_bytes(const GpuDecoder *d, size_t *weights, size_t *states, size_t *rest)
{
	if (weights)
		*weights = d->weight_bytes;
	if (states)
		*states = d->state_bytes;
	if (rest)
		*rest = d->rest_bytes;
}

/* sequence b's state in layer l */
static uint8_t *state_of(const GpuDecoder *d, int l, int b)
{
	return d->state + d->layer[l].off + (size_t)b * d->layer[l].bytes;
}

extern "C" void gpu_decoder_reset(GpuDecoder *d, int b)
{
	if (b < 0 || b >= d->B)
		BUG("gpu_decoder_reset: sequence %d of %d", b, d->B);
	d->pos[b] = 0;
	for (int l = 0; l < d->L; l++)
		if (d->layer[l].op == ARCH_GDN || d->layer[l].op == ARCH_GLA)
			cudaCheck(cudaMemsetAsync(state_of(d, l, b), 0, d->layer[l].bytes));
}

/* logits (n, V) float32 of the device rows h (n, C) */
static void lm_head(GpuDecoder *d, const bf16_t *h, int n)
{
	const ModelConfig *c = &d->m->cfg;
	gemm_bf16(CUBLAS_OP_T, c->V, n, c->C, gpu_model_lm_head(d->gm), c->C, h, c->C, d->logits, CUDA_R_32F, c->V);
}

// ----------------------------------------------------------------------------
// prefill

/* the GpuLayerHook of a prefill of sequence d->pf_b: fills layer l's state
 * and, for swa, gdn and gla, replaces a */
static void prefill_hook(void *ctx, int l, const uint16_t *d_u, uint16_t *d_a, int n, int C)
{
	GpuDecoder *d = (GpuDecoder *)ctx;
	const ModelConfig *c = &d->m->cfg;
	const struct DecLayerG *y = &d->layer[l];
	int H = c->H, G = c->G, D = c->D;
	uint8_t *st = state_of(d, l, d->pf_b);
	if (y->op == ARCH_GDN || y->op == ARCH_GLA) {
		/* from the zero state (the sequence is empty) to the prompt's end */
		bf16_to_f32_cuda(d->uf, d_u, (size_t)n * C);
		gpu_lop_forward_state(y->lop, d->af, d->uf, 1, n, (float *)st);
		f32_to_bf16_cuda(d_a, d->af, (size_t)n * C);
		return;
	}
	GpuLayerView v;
	gpu_model_layer(d->gm, l, &v);
	if (y->op == ARCH_SWA) {
		attention_forward_cuda(d->patt, d->plse, v.q, v.k, v.v, 1, n, H, G, D, y->window);
		matmul_forward_cuda(d_a, d->patt, v.wo, v.bo, n, H * D, C);
	}
	/* positions n - m .. n - 1 (m = min(n, slots)) to slots p % slots: two
	 * runs at most (fa: one, from slot 0) */
	size_t row = (size_t)G * D * sizeof(bf16_t);
	uint8_t *kc = st, *vc = st + (size_t)y->slots * row;
	long long m = n < y->slots ? n : y->slots;
	for (long long p = n - m; p < n;) {
		long long slot = p % y->slots, run = n - p < y->slots - slot ? n - p : y->slots - slot;
		cudaCheck(cudaMemcpyAsync(kc + (size_t)slot * row, (const uint8_t *)v.k + (size_t)p * row, (size_t)run * row,
		                          cudaMemcpyDeviceToDevice));
		cudaCheck(cudaMemcpyAsync(vc + (size_t)slot * row, (const uint8_t *)v.v + (size_t)p * row, (size_t)run * row,
		                          cudaMemcpyDeviceToDevice));
		p += run;
	}
}

/* the prefill, its last row's logits left in d->logits (1, V) */
static void prefill(GpuDecoder *d, int b, const int32_t *ids, int n)
{
	const ModelConfig *c = &d->m->cfg;
	if (b < 0 || b >= d->B || n < 1 || n > d->cap)
		BUG("gpu_decoder_prefill: sequence %d of %d, %d tokens of at most %d", b, d->B, n, d->cap);
	if (d->pos[b] != 0)
		die("gpu_decoder_prefill: sequence %d holds %lld tokens: reset it first", b, d->pos[b]);
	d->pf_b = b;
	gpu_model_forward_layers(d->gm, ids, 1, n, c->L - 1, prefill_hook, d);
	d->pos[b] = n;
	lm_head(d, gpu_model_hidden(d->gm) + (size_t)(n - 1) * c->C, 1);
}

extern "C" void gpu_decoder_prefill(GpuDecoder *d, int b, const int32_t *ids, int n, float *logits)
{
	prefill(d, b, ids, n);
	if (logits)
		gpu_download(logits, d->logits, (size_t)d->m->cfg.V * sizeof(float));
}

// ----------------------------------------------------------------------------
// a step

/* fa or swa in a step of n rows: x += Wo attention(q) (+ bo); maxlen: the
 * most positions a row sees */
static void attn_step(GpuDecoder *d, int l, int n, long long maxlen)
{
	const ModelConfig *c = &d->m->cfg;
	const struct DecLayerG *y = &d->layer[l];
	int C = c->C, H = c->H, G = c->G, D = c->D, HD = H * D, W = HD + 2 * G * D, rep = H / G;
	const int32_t *seq = d->rows + n, *pos = d->rows + 2 * n;
	uint8_t *layer = d->state + y->off;
	GpuLayerView v;
	gpu_model_layer(d->gm, l, &v);
	matmul_forward_cuda(d->qkv, d->u, v.wqkv, NULL, n, C, W);
	decode_qkv_kernel<<<n, 128, (size_t)D * sizeof(float)>>>((bf16 *)d->q, layer, y->bytes, y->slots,
	                                                          (const bf16 *)d->qkv, (const bf16 *)v.bqkv, v.inv_freq,
	                                                          seq, pos, H, G, D);
	cudaCheck(cudaGetLastError());
	/* splits: enough for about DA_BLOCKS blocks, whole tiles each */
	int tiles = (int)CEIL_DIV(maxlen, DA_TILE), want = CEIL_DIV(DA_BLOCKS, G * n);
	int nsplit = tiles < want ? tiles : want;
	nsplit = nsplit < 1 ? 1 : nsplit > d->nsplit_max ? d->nsplit_max : nsplit;
	int split_len = CEIL_DIV(tiles, nsplit) * DA_TILE;
	nsplit = (int)CEIL_DIV(maxlen, split_len);
	dim3 grid((unsigned)nsplit, (unsigned)G, (unsigned)n);
	size_t smem = attention_smem(rep, D);
	if (D == 64)
		attention_rep<64>(rep, grid, smem, d->opart, d->ml, d->q, layer, y->bytes, y->slots, seq, pos, H, G, y->window,
		                  split_len, nsplit);
	else
		attention_rep<128>(rep, grid, smem, d->opart, d->ml, d->q, layer, y->bytes, y->slots, seq, pos, H, G,
		                   y->window, split_len, nsplit);
	decode_combine_kernel<<<dim3((unsigned)H, (unsigned)n), D>>>((bf16 *)d->att, d->opart, d->ml, H, nsplit, D);
	cudaCheck(cudaGetLastError());
	if (v.bo) {
		matmul_forward_cuda(d->a, d->att, v.wo, v.bo, n, HD, C);
		residual_forward_cuda(d->x, d->a, (int64_t)n * C);
	} else {
		matmul_forward_residual_cuda(d->x, d->att, v.wo, d->x, n, HD, C);
	}
}

/* gdn or gla in a step of n rows: x += a from the states of sequences seq */
static void linear_step(GpuDecoder *d, int l, int n, const int *seq)
{
	const ModelConfig *c = &d->m->cfg;
	const struct DecLayerG *y = &d->layer[l];
	int64_t nC = (int64_t)n * c->C, sn = (int64_t)(y->bytes / sizeof(float));
	bf16_to_f32_cuda(d->uf, d->u, (size_t)nC);
	int side = 1; /* sequences seq[0], seq[0] + 1, ...: their states lie side by side */
	for (int i = 1; i < n; i++)
		side &= seq[i] == seq[0] + i;
	float *S = side ? (float *)state_of(d, l, seq[0]) : d->sg;
	uint8_t *layer = d->state + y->off;
	const int32_t *dseq = d->rows + n;
	int vec = sn % 4 == 0 && y->bytes % 16 == 0 && y->off % 16 == 0;
	if (!side) {
		if (vec)
			state_gather_kernel<float4><<<ew_blocks(n * sn / 4), EW_THREADS>>>((float4 *)d->sg, layer, y->bytes, dseq,
			                                                                  n, sn / 4, 0);
		else
			state_gather_kernel<float><<<ew_blocks(n * sn), EW_THREADS>>>(d->sg, layer, y->bytes, dseq, n, sn, 0);
		cudaCheck(cudaGetLastError());
	}
	gpu_lop_forward_state(y->lop, d->af, d->uf, n, 1, S);
	if (!side) {
		if (vec)
			state_gather_kernel<float4><<<ew_blocks(n * sn / 4), EW_THREADS>>>((float4 *)d->sg, layer, y->bytes, dseq,
			                                                                  n, sn / 4, 1);
		else
			state_gather_kernel<float><<<ew_blocks(n * sn), EW_THREADS>>>(d->sg, layer, y->bytes, dseq, n, sn, 1);
		cudaCheck(cudaGetLastError());
	}
	add_f32_kernel<<<ew_blocks(nC), EW_THREADS>>>((bf16 *)d->x, d->af, nC);
	cudaCheck(cudaGetLastError());
}

/* the step, its logits left in d->logits (n, V) */
static void step(GpuDecoder *d, const int *seq, const int32_t *ids, int n)
{
	const ModelConfig *c = &d->m->cfg;
	int B = d->B, C = c->C, F = c->F;
	if (n < 1 || n > B)
		BUG("gpu_decoder_step: %d sequences of %d", n, B);
	long long maxlen = 0; /* the most positions a row sees (fa; swa: at most its window) */
	for (int i = 0; i < n; i++) {
		int b = seq[i];
		if (b < 0 || b >= B)
			BUG("gpu_decoder_step: sequence %d of %d", b, B);
		for (int j = 0; j < i; j++)
			if (seq[j] == b)
				BUG("gpu_decoder_step: sequence %d twice", b);
		if (d->pos[b] + 1 > d->cap)
			BUG("decode: sequence %d of %lld tokens takes 1 more, beyond its %d", b, d->pos[b], d->cap);
		if (ids[i] < 0 || ids[i] >= c->V)
			BUG("gpu_decoder_step: token id %d out of range (V %d)", ids[i], c->V);
		d->hrows[i] = ids[i], d->hrows[n + i] = b, d->hrows[2 * n + i] = (int32_t)d->pos[b];
		maxlen = d->pos[b] + 1 > maxlen ? d->pos[b] + 1 : maxlen;
	}
	gpu_upload(d->rows, d->hrows, 3 * (size_t)n * sizeof(int32_t));
	embedding_forward_cuda(d->x, d->rows, gpu_model_embedding(d->gm), n, C);
	for (int l = 0; l < d->L; l++) {
		const struct DecLayerG *y = &d->layer[l];
		GpuLayerView v;
		gpu_model_layer(d->gm, l, &v);
		/* x += the operator of norm1(x) */
		rmsnorm_forward_cuda(d->u, d->rstd, d->x, v.ln1, n, C, c->eps);
		if (y->op == ARCH_FA || y->op == ARCH_SWA)
			attn_step(d, l, n, y->window && maxlen > y->window ? y->window : maxlen);
		else
			linear_step(d, l, n, seq);
		/* x += Wdown(silu(gate) up), gate | up = Wgu norm2(x) */
		rmsnorm_forward_cuda(d->u, d->rstd, d->x, v.ln2, n, C, c->eps);
		matmul_forward_cuda(d->gu, d->u, v.wgu, NULL, n, C, 2 * F);
		swiglu_packed_forward_cuda(d->act, d->gu, n, F);
		matmul_forward_residual_cuda(d->x, d->act, v.wdown, d->x, n, F, C);
	}
	for (int i = 0; i < n; i++)
		d->pos[seq[i]]++;
	rmsnorm_forward_cuda(d->u, d->rstd, d->x, gpu_model_final_norm(d->gm), n, C, c->eps);
	lm_head(d, d->u, n);
}

extern "C" void gpu_decoder_step(GpuDecoder *d, const int *seq, const int32_t *ids, int n, float *logits)
{
	step(d, seq, ids, n);
	if (logits)
		gpu_download(logits, d->logits, (size_t)n * d->m->cfg.V * sizeof(float));
}

// ----------------------------------------------------------------------------
// greedy decoding

static void argmax(GpuDecoder *d, int32_t *d_best, int rows)
{
	argmax_kernel<<<rows, AM_THREADS>>>(d_best, d->logits, d->m->cfg.V);
	cudaCheck(cudaGetLastError());
}

extern "C" void gpu_decoder_greedy(GpuDecoder *d, int n, const int32_t *const *prompts, const int *lens, int max_new,
                                   const int32_t *stop, int nstop, IdVec *out, DecodeTokenFn on_token, void *ctx)
{
	if (n < 1 || n > d->B)
		BUG("gpu_decoder_greedy: %d prompts for %d sequences", n, d->B);
	int32_t *best = (int32_t *)mallocCheck((size_t)n * sizeof(int32_t)); // (n) row i: sequence seq[i]
	int *seq = (int *)mallocCheck((size_t)n * sizeof(int));
	int32_t *next = (int32_t *)mallocCheck((size_t)n * sizeof(int32_t));
	for (int b = 0; b < n; b++) {
		gpu_decoder_reset(d, b);
		prefill(d, b, prompts[b], lens[b]);
		argmax(d, d->best + b, 1);
		seq[b] = b;
	}
	gpu_download(best, d->best, (size_t)n * sizeof(int32_t));
	int live = n;
	for (int k = 0; k < max_new && live > 0; k++) {
		live = decoder_accept(best, live, seq, next, k, max_new, stop, nstop, out, on_token, ctx);
		if (live > 0) {
			step(d, seq, next, live);
			argmax(d, d->best, live);
			gpu_download(best, d->best, (size_t)live * sizeof(int32_t));
		}
	}
	free(best), free(seq), free(next);
}
