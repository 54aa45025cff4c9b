/* test_linear_attn (GPU): the recurrent Gated DeltaNet and GLA kernels of
 * kernels/linear_attn.cu against their CPU twins in lib/linear_attn.c, from
 * a random initial state, at Dk 64 and 128, Dv not a multiple of the warp,
 * T 1 (a decoding step), several sequences and heads; then the state after
 * one call continued by a second. float32 on both sides, the sums in another
 * order: within 1e-4 of the scale. Runs on a GPU: make test-gpu. */
#include <string.h>

#include "gpu.h"
extern "C" {
#include "linear_attn.h"
#include "test.h"
#include "util.h"
}
#include "gpu_test.h"

static void check(int gla, int B, int T, int H, int Dk, int Dv)
{
	size_t nk = (size_t)B * T * H * Dk, nv = (size_t)B * T * H * Dv, nh = (size_t)B * T * H;
	size_t nS = (size_t)B * H * Dk * Dv, ng = gla ? nk : nh;
	float *q = test_rnd(nk, 1), *k = test_rnd(nk, 1 / sqrtf((float)Dk)), *v = test_rnd(nv, 1);
	float *g = test_rnd(ng, 1), *beta = test_rnd(nh, 1), *S0 = test_rnd(nS, 0.5f);
	for (size_t i = 0; i < ng; i++)
		g[i] = -0.3f * (g[i] + 1.05f);
	for (size_t i = 0; i < nh; i++)
		beta[i] = 0.5f + 0.45f * beta[i];
	float *ro = (float *)mallocCheck(nv * 4), *rS = (float *)mallocCheck(nS * 4);
	float *o = (float *)mallocCheck(nv * 4), *S = (float *)mallocCheck(nS * 4);
	float scale = 1 / sqrtf((float)Dk);
	memcpy(rS, S0, nS * 4);
	if (gla)
		gla_forward_recurrent(ro, rS, q, k, v, g, B, T, H, Dk, Dv, scale);
	else
		gdn_forward_recurrent(ro, rS, q, k, v, g, beta, B, T, H, Dk, Dv, scale);
	float *dq = dev_f32(q, nk), *dk = dev_f32(k, nk), *dv = dev_f32(v, nv), *dg = dev_f32(g, ng), *db = dev_f32(beta, nh);
	float *dS = dev_f32(S0, nS), *dO = (float *)gpu_alloc(nv * 4);
	if (gla)
		gla_forward_recurrent_cuda(dO, dS, dq, dk, dv, dg, B, T, H, Dk, Dv, scale);
	else
		gdn_forward_recurrent_cuda(dO, dS, dq, dk, dv, dg, db, B, T, H, Dk, Dv, scale);
	gpu_download(o, dO, nv * 4), gpu_download(S, dS, nS * 4);
	double eo = test_rel_err(o, ro, nv), es = test_rel_err(S, rS, nS);
	char msg[160];
	snprintf(msg, sizeof msg, "%s_forward_recurrent_cuda B=%d T=%d H=%d Dk=%d Dv=%d: o %.1e, state %.1e",
	         gla ? "gla" : "gdn", B, T, H, Dk, Dv, eo, es);
	test_cond(msg, eo < 1e-4 && es < 1e-4);
	free(q), free(k), free(v), free(g), free(beta), free(S0), free(ro), free(rS), free(o), free(S);
	gpu_free(dq), gpu_free(dk), gpu_free(dv), gpu_free(dg), gpu_free(db), gpu_free(dS), gpu_free(dO);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	test_seed(0xbb67ae8584caa73bULL);
	if (cuda_device_count() == 0) {
		printf("SKIP: no GPU\n");
		return 0;
	}
	for (int gla = 0; gla < 2; gla++) {
		check(gla, 1, 1, 1, 64, 64);
		check(gla, 2, 37, 3, 64, 48);
		check(gla, 1, 200, 2, 128, 128);
		check(gla, 3, 5, 4, 128, 100);
	}
	return test_report();
}
