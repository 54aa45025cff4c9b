/* bench/attention: times attention_forward_cuda at one layer's shape
 * (default the Qwen2.5-3B layer: B 1, T 4096, H 16, G 2, D 128, causal) with
 * CUDA events, median of 20 after 3 warm-ups, on random inputs: the
 * forward, and the forward and backward together; with a window, also the
 * full causal forward and the window's in one call (attention_forward2_cuda,
 * a supernet's fa and swa) against the two forwards, and their backward
 * (attention_backward2_cuda, both weighed) against the two backwards.
 * usage: bench/attention [B T H G D window]   (prints ms and TFLOP/s) */
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <cuda_runtime.h>

#include "bench.h"
#include "gpu.h"
extern "C" {
#include "tensor.h"
}

int main(int argc, char **argv)
{
	int B = 1, T = 4096, H = 16, G = 2, D = 128, W = 0;
	if (argc == 7)
		B = atoi(argv[1]), T = atoi(argv[2]), H = atoi(argv[3]), G = atoi(argv[4]), D = atoi(argv[5]),
		W = atoi(argv[6]);
	size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * G * D;
	bf16_t *h = (bf16_t *)malloc(nq * 2);
	for (size_t i = 0; i < nq; i++)
		h[i] = f32_to_bf16((float)rand() / RAND_MAX * 2 - 1);
	bf16_t *q = (bf16_t *)gpu_alloc(nq * 2), *k = (bf16_t *)gpu_alloc(nk * 2), *v = (bf16_t *)gpu_alloc(nk * 2);
	bf16_t *o = (bf16_t *)gpu_alloc(nq * 2), *o2 = (bf16_t *)gpu_alloc(nq * 2);
	float *lse = (float *)gpu_alloc((size_t)B * H * T * 4), *lse2 = (float *)gpu_alloc((size_t)B * H * T * 4);
	gpu_upload(q, h, nq * 2), gpu_upload(k, h, nk * 2), gpu_upload(v, h + 7, nk * 2);
	bf16_t *dq = (bf16_t *)gpu_alloc(nq * 2), *dk = (bf16_t *)gpu_alloc(nk * 2), *dv = (bf16_t *)gpu_alloc(nk * 2);
	float *work = (float *)gpu_alloc(attention_backward_work(B, T, H, D) * 4);
	/* causal: half of the 4 T^2 D H flops (two products), per sequence */
	double keys = W > 0 && W < T ? (double)W * T - (double)W * W / 2 : (double)T * T / 2;
	double flop = 4.0 * B * H * D * keys;
	for (int mma = 0; mma < 2; mma++) {
		if (mma)
			setenv("DASH_ATTENTION_MMA", "1", 1);
		float fwd = median_ms([&] { attention_forward_cuda(o, lse, q, k, v, B, T, H, G, D, W); });
		float fb = median_ms([&] {
			attention_forward_cuda(o, lse, q, k, v, B, T, H, G, D, W);
			attention_backward_cuda(dq, dk, dv, o, o, lse, q, k, v, B, T, H, G, D, W, work);
		});
		printf("attention_cuda (%s) B=%d T=%d H=%d G=%d D=%d window=%d: forward %.3f ms (%.1f TFLOP/s), "
		       "forward+backward %.3f ms\n", mma ? "mma.sync" : "default", B, T, H, G, D, W, fwd,
		       flop / (fwd * 1e-3) / 1e12, fb);
		if (W <= 0)
			continue;
		float two = median_ms([&] {
			attention_forward_cuda(o, lse, q, k, v, B, T, H, G, D, 0);
			attention_forward_cuda(o2, lse2, q, k, v, B, T, H, G, D, W);
		});
		float one = median_ms([&] { attention_forward2_cuda(o, lse, o2, lse2, q, k, v, B, T, H, G, D, W); });
		printf("attention_forward2_cuda (%s) full + window %d: %.3f ms, two forwards %.3f ms\n",
		       mma ? "mma.sync" : "default", W, one, two);
		/* the backward of both, weighed 0.6 and 0.4 (one pass on a
		 * Hopper), against the weight-0 case (the window's alone) plus the
		 * full attention's alone: the two passes it replaces */
		float b2 = median_ms([&] {
			attention_backward2_cuda(dq, dk, dv, o, 0.6f, o, lse, 0, 0.4f, o2, lse2, W, q, k, v, B, T, H, G,
			                         D, work, NULL, NULL);
		});
		float b1 = median_ms([&] {
			attention_backward2_cuda(dq, dk, dv, o, 0.f, NULL, NULL, 0, 0.4f, o2, lse2, W, q, k, v, B, T, H,
			                         G, D, work, NULL, NULL);
			attention_backward2_cuda(dq, dk, dv, o, 0.6f, o, lse, 0, 0.f, NULL, NULL, W, q, k, v, B, T, H,
			                         G, D, work, NULL, NULL);
		});
		printf("attention_backward2_cuda (%s) full + window %d: %.3f ms, two backwards %.3f ms\n",
		       mma ? "mma.sync" : "default", W, b2, b1);
	}
	return 0;
}
