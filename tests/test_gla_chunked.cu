/* test_gla_chunked (GPU): the chunked GLA kernels of kernels/gla_chunked.cu
 * against their CPU twins in lib/linear_attn.c: the forward against
 * gla_forward_recurrent (o and the final state), the backward against
 * gla_backward (dq, dk, dv, dgk, dS0). Edge shapes: T 1, one short of a
 * chunk, a chunk, one past, several; several sequences and heads; Dk = Dv =
 * 64 and 128, Dk != Dv and neither a tile's width, Dv odd; with and without an
 * initial state and a final state's gradient; gk in (-0.6, -0.005), and a
 * case where every third key dimension decays by about -1.3 a step (where
 * exp(-G) overflows float32 within a chunk); the NULL outputs left out.
 * float32 against double sums: within 1e-4 of the scale (test_rel_err).
 * DASH_BENCH=1 also times forward and forward + backward at B=1 T=4096 H=16
 * D=128 (bench/bench.h's median_ms). Runs on a GPU: make test-gpu. */
#include <string.h>

#include "../bench/bench.h" // defines: median_ms
#include "cuda_common.cuh"
#include "gpu.h"
extern "C" {
#include "linear_attn.h"
#include "test.h"
#include "util.h"
}
#include "gpu_test.h"

/* gk (n rows of Dk): in (-0.6, -0.005), or with steep, about -1.3 in every
 * third key dimension */
static float *gates(size_t n, int Dk, int steep)
{
	float *g = test_rnd(n * Dk, 1);
	for (size_t i = 0; i < n * (size_t)Dk; i++)
		g[i] = steep && i % Dk % 3 == 0 ? -1.3f + 0.05f * g[i] : -0.3025f + 0.2975f * g[i];
	return g;
}

static void check(int B, int T, int H, int Dk, int Dv, int with_S0, int with_dSf, int steep)
{
	size_t nk = (size_t)B * T * H * Dk, nv = (size_t)B * T * H * Dv, nS = (size_t)B * H * Dk * Dv;
	float *q = test_rnd(nk, 1), *k = test_rnd(nk, 1 / sqrtf((float)Dk)), *v = test_rnd(nv, 1);
	float *gk = gates((size_t)B * T * H, Dk, steep), *dout = test_rnd(nv, 1);
	float *S0 = test_rnd(nS, 0.5f), *dSf = test_rnd(nS, 1);
	float scale = 1 / sqrtf((float)Dk);
	/* the CPU: o and the final state; the gradients */
	float *ro = (float *)mallocCheck(nv * 4), *rS = (float *)mallocCheck(nS * 4);
	if (with_S0)
		memcpy(rS, S0, nS * 4);
	else
		memset(rS, 0, nS * 4);
	gla_forward_recurrent(ro, rS, q, k, v, gk, B, T, H, Dk, Dv, scale);
	size_t n[5] = {nk, nk, nv, nk, nS};
	float *r[5];
	for (int i = 0; i < 5; i++)
		r[i] = (float *)mallocCheck(n[i] * 4);
	gla_backward(r[0], r[1], r[2], r[3], r[4], dout, with_dSf ? dSf : NULL, q, k, v, gk, with_S0 ? S0 : NULL, B, T,
	             H, Dk, Dv, scale);
	/* the GPU */
	float *d_q = dev_f32(q, nk), *d_k = dev_f32(k, nk), *d_v = dev_f32(v, nv), *d_gk = dev_f32(gk, nk);
	float *d_dout = dev_f32(dout, nv);
	float *d_S0 = dev_f32(S0, nS), *d_dSf = dev_f32(dSf, nS), *d_S = dev_f32(S0, nS), *d_o = (float *)gpu_alloc(nv * 4);
	float *d_g[5];
	for (int i = 0; i < 5; i++)
		d_g[i] = (float *)gpu_alloc(n[i] * 4);
	void *work = gpu_alloc(gla_chunked_work(B, T, H, Dk, Dv));
	gla_forward_chunked_cuda(d_o, with_S0 ? d_S : NULL, d_q, d_k, d_v, d_gk, B, T, H, Dk, Dv, scale, work);
	gla_backward_chunked_cuda(d_g[0], d_g[1], d_g[2], d_g[3], d_g[4], d_dout, with_dSf ? d_dSf : NULL, d_q, d_k, d_v,
	                          d_gk, with_S0 ? d_S0 : NULL, B, T, H, Dk, Dv, scale, work);
	float *o = host_f32(d_o, nv), *S = host_f32(d_S, nS), *g[5];
	for (int i = 0; i < 5; i++)
		g[i] = host_f32(d_g[i], n[i]);
	double eo = test_rel_err(o, ro, nv), es = with_S0 ? test_rel_err(S, rS, nS) : 0, e[5], m = 0;
	for (int i = 0; i < 5; i++) {
		e[i] = test_rel_err(g[i], r[i], n[i]);
		m = e[i] > m || isnan(e[i]) ? e[i] : m;
	}
	char msg[256];
	snprintf(msg, sizeof msg, "gla chunked B=%d T=%d H=%d Dk=%d Dv=%d%s%s%s: o %.1e%s%.1e, dq %.1e dk %.1e dv %.1e "
	         "dgk %.1e dS0 %.1e", B, T, H, Dk, Dv, with_S0 ? " S0" : "", with_dSf ? " dSf" : "",
	         steep ? " steep gk" : "", eo, with_S0 ? " state " : " (no state) ", es, e[0], e[1], e[2], e[3], e[4]);
	test_cond(msg, eo < 1e-4 && es < 1e-4 && m < 1e-4);
	if (with_S0 && with_dSf) { /* dgk and dS0 left out: the rest as before */
		for (int i = 0; i < 3; i++)
			gpu_zero(d_g[i], n[i] * 4);
		gla_backward_chunked_cuda(d_g[0], d_g[1], d_g[2], NULL, NULL, d_dout, d_dSf, d_q, d_k, d_v, d_gk, d_S0, B, T,
		                          H, Dk, Dv, scale, work);
		int same = 1;
		for (int i = 0; i < 3; i++) {
			float *x = host_f32(d_g[i], n[i]);
			same &= !memcmp(x, g[i], n[i] * 4);
			free(x);
		}
		snprintf(msg, sizeof msg, "gla chunked backward without dgk and dS0: the same dq, dk, dv (T=%d)", T);
		test_cond(msg, same);
	}
	free(q), free(k), free(v), free(gk), free(dout), free(S0), free(dSf), free(ro), free(rS), free(o), free(S);
	for (int i = 0; i < 5; i++)
		free(r[i]), free(g[i]), gpu_free(d_g[i]);
	gpu_free(d_q), gpu_free(d_k), gpu_free(d_v), gpu_free(d_gk), gpu_free(d_dout), gpu_free(d_S0), gpu_free(d_dSf);
	gpu_free(d_S), gpu_free(d_o), gpu_free(work);
}

static void bench(void)
{
	int B = 1, T = 4096, H = 16, D = 128;
	size_t nx = (size_t)B * T * H * D;
	float *h = test_rnd(nx, 1), *hg = gates((size_t)B * T * H, D, 0);
	float *q = dev_f32(h, nx), *k = dev_f32(h, nx), *v = dev_f32(h, nx), *gk = dev_f32(hg, nx), *dout = dev_f32(h, nx);
	float *o = (float *)gpu_alloc(nx * 4), *dq = (float *)gpu_alloc(nx * 4), *dk = (float *)gpu_alloc(nx * 4);
	float *dv = (float *)gpu_alloc(nx * 4), *dgk = (float *)gpu_alloc(nx * 4);
	size_t wb = gla_chunked_work(B, T, H, D, D);
	void *work = gpu_alloc(wb);
	float scale = 1 / sqrtf((float)D);
	float f = median_ms([&] { gla_forward_chunked_cuda(o, NULL, q, k, v, gk, B, T, H, D, D, scale, work); });
	float fb = median_ms([&] {
		gla_forward_chunked_cuda(o, NULL, q, k, v, gk, B, T, H, D, D, scale, work);
		gla_backward_chunked_cuda(dq, dk, dv, dgk, NULL, dout, NULL, q, k, v, gk, NULL, B, T, H, D, D, scale, work);
	});
	printf("bench gla_chunked_cuda B=%d T=%d H=%d D=%d float32: forward %.3f ms, forward+backward %.3f ms "
	       "(work %.1f MiB)\n", B, T, H, D, f, fb, wb / 1048576.0);
	free(h), free(hg);
	gpu_free(q), gpu_free(k), gpu_free(v), gpu_free(gk), gpu_free(dout), gpu_free(o), gpu_free(dq), gpu_free(dk);
	gpu_free(dv), gpu_free(dgk), gpu_free(work);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	test_seed(0x3c6ef372fe94f82bULL);
	if (cuda_device_count() == 0) {
		printf("SKIP: no GPU\n");
		return 0;
	}
	check(1, 1, 1, 64, 64, 1, 1, 0);
	static const int Ts[] = {63, 64, 65, 200};
	for (int i = 0; i < 4; i++) {
		check(2, Ts[i], 3, 64, 64, i % 2, i / 2, 0);
		check(2, Ts[i], 3, 128, 128, 1 - i % 2, i / 2, 0);
		check(2, Ts[i], 3, 32, 48, i % 2, 1 - i / 2, 0);
	}
	check(1, 1, 2, 128, 128, 0, 0, 0);
	check(2, 130, 2, 128, 40, 1, 1, 0);
	check(1, 100, 3, 100, 128, 1, 0, 0);
	check(2, 200, 3, 64, 64, 1, 1, 1);
	check(2, 200, 3, 128, 128, 1, 1, 1);
	check(1, 1024, 4, 128, 128, 1, 1, 0);
	check(1, 150, 2, 72, 65, 1, 1, 0); /* odd Dv: 4-byte loads and stores */
	check(2, 77, 2, 100, 33, 0, 1, 1);
	const char *b = getenv("DASH_BENCH");
	if (b && !strcmp(b, "1"))
		bench();
	return test_report();
}
