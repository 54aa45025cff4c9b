/*
 * linear_attn (GPU): the Gated DeltaNet and GLA recurrences of
 * lib/linear_attn.h on the device, recurrent form: the decoding step (T = 1)
 * and the reference the chunked training kernels will be checked against.
 * Twins of gdn_forward_recurrent and gla_forward_recurrent.
 *
 * version 1: a block per (sequence, head), a thread per value column j of
 * the state, which keeps S[:, j] (Dk floats) in registers. Every product of
 * a step (S^T k, the update, S^T q) is then a loop over Dk inside one
 * thread, with no reduction across threads; q, k (and GLA's decays) of the
 * step are staged in shared memory for all. Steps run one after another, so
 * this is for decoding and checking, not for training lengths.
 */
#include "cuda_common.cuh"
#include "gpu.h"

template <int DK, bool GLA>
__global__ void linear_recurrent_kernel(float *o, float *S, const float *q, const float *k, const float *v,
                                        const float *g, const float *beta, int T, int H, int Dv, float scale)
{
	__shared__ float sq[DK], sk[DK], sg[DK];
	int bh = blockIdx.x, b = bh / H, h = bh % H, j = threadIdx.x;
	bool col = j < Dv;
	float s[DK];
	float *Sh = S + (size_t)bh * DK * Dv;
#pragma unroll
	for (int i = 0; i < DK; i++)
		s[i] = col ? Sh[(size_t)i * Dv + j] : 0.f;
	for (int t = 0; t < T; t++) {
		size_t r = ((size_t)b * T + t) * H + h; /* row of (B, T, H, .) */
		__syncthreads(); /* the previous step is done with sq, sk, sg */
		for (int i = threadIdx.x; i < DK; i += blockDim.x) {
			sq[i] = q[r * DK + i], sk[i] = k[r * DK + i];
			if (GLA)
				sg[i] = expf(g[r * DK + i]);
		}
		__syncthreads();
		float vj = col ? v[r * Dv + j] : 0.f, acc = 0.f;
		if (GLA) {
#pragma unroll
			for (int i = 0; i < DK; i++) {
				s[i] = s[i] * sg[i] + sk[i] * vj;
				acc += s[i] * sq[i];
			}
		} else {
			float a = expf(g[r]), u = 0.f;
#pragma unroll
			for (int i = 0; i < DK; i++) {
				s[i] *= a;
				u += s[i] * sk[i];
			}
			float w = beta[r] * (vj - u);
			/* k again from shared memory: kept in registers from the loop
			 * above it would need DK more of them */
			const volatile float *vk = sk;
#pragma unroll
			for (int i = 0; i < DK; i++) {
				s[i] += vk[i] * w;
				acc += s[i] * sq[i];
			}
		}
		if (col)
			o[r * Dv + j] = scale * acc;
	}
	if (col)
#pragma unroll
		for (int i = 0; i < DK; i++)
			Sh[(size_t)i * Dv + j] = s[i];
}

template <bool GLA>
static void launch(float *o, float *S, const float *q, const float *k, const float *v, const float *g,
                   const float *beta, int B, int T, int H, int Dk, int Dv, float scale, const char *who)
{
	if (Dv < 1 || Dv > 1024)
		fprintf(stderr, "%s: Dv %d (1 to 1024 are built)\n", who, Dv), exit(1);
	int threads = CEIL_DIV(Dv, WARP_SIZE) * WARP_SIZE;
	switch (Dk) {
	case 64:
		linear_recurrent_kernel<64, GLA><<<B * H, threads>>>(o, S, q, k, v, g, beta, T, H, Dv, scale);
		break;
	case 128:
		linear_recurrent_kernel<128, GLA><<<B * H, threads>>>(o, S, q, k, v, g, beta, T, H, Dv, scale);
		break;
	default: fprintf(stderr, "%s: key dim %d (64 and 128 are built)\n", who, Dk), exit(1);
	}
	cudaCheck(cudaGetLastError());
}

extern "C" void gdn_forward_recurrent_cuda(float *d_o, float *d_S, const float *d_q, const float *d_k,
                                           const float *d_v, const float *d_g, const float *d_beta, int B, int T,
                                           int H, int Dk, int Dv, float scale)
{
	launch<false>(d_o, d_S, d_q, d_k, d_v, d_g, d_beta, B, T, H, Dk, Dv, scale, "gdn_forward_recurrent_cuda");
}

extern "C" void gla_forward_recurrent_cuda(float *d_o, float *d_S, const float *d_q, const float *d_k,
                                           const float *d_v, const float *d_gk, int B, int T, int H, int Dk, int Dv,
                                           float scale)
{
	launch<true>(d_o, d_S, d_q, d_k, d_v, d_gk, NULL, B, T, H, Dk, Dv, scale, "gla_forward_recurrent_cuda");
}
