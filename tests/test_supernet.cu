/* test_supernet (GPU): the supernet's KL and d(KL)/dw on the GPU
 * (kernels/gpu_supernet.h) against the CPU reference (supernet_kl,
 * supernet_backward_kl) on the same random model and weights: L 3, C 256,
 * H 4, G 2, D 64, F 512, V 512 with q, k, v biases; columns fa, swa (window
 * 32), gdn, gla (untrained, lop_init_teacher); B 2 sequences of T 100
 * tokens (not a multiple of the chunk of 64, longer than the window), in a
 * GpuSupernet with room for more rows than that. Weights: every column
 * mixed, then zeros in places (fa 0 in layer 0, so its teacher path is
 * skipped; a gdn, a gla, a swa column 0 elsewhere: their dw still counts),
 * then no attention in two layers (fa and swa 0: their dw without an
 * attention backward),
 * then w one-hot on fa, where the supernet is the teacher and the KL is 0;
 * all of it with the gdn and gla columns in arenas of their own and in one
 * shared arena (DASH_SUPERNET_SHARED=1, each forward run again), gdn on its
 * bf16 path (gpu_lop_forward_bf16), and once more with arenas of their own
 * and gdn on its float32 path (DASH_SUPERNET_F32=1); then mixed weights
 * once more on a model with an o bias; and mixed weights with the
 * backward's products in float8 e4m3 on both sides (Supernet.grad_fp8), then
 * the forward's too (Supernet.fwd_fp8: the supernet's, then the
 * teacher's too, then both sides' vocabulary logits as well: fp8-all,
 * where the teacher's rows from the host, as the measures give them, must
 * give the KL of the teacher's forward's own codes; then fp8-fast, the
 * forwards' e4m3 sums in the tensor cores' accumulator, against the CPU's
 * fp8-all in float32 within the same tolerances).
 *
 * Tolerances. The GPU runs bf16 activations (the gdn and gla columns
 * float32 with TF32 products) against the CPU's float32, so both the KL
 * and each dw differ by the rounding of activations that pass a dozen
 * bf16 roundings (2^-9 each) and, through the KL, a difference of two
 * softmaxes: test_gpu_model allows 3e-2 of the scale on logits and 5e-2 on
 * gradients for the same reason. Here the KL is a mean over 200 rows, so
 * its error averages down: 3e-2 relative; each dw_lk (a sum over n C
 * products of dL/da and an operator's output) within 5e-2 of max |dw|.
 * The GPU's forward-only KL is its backward's to 1e-5 relative (the same
 * forward; columns of weight 0 skipped), and one-hot fa gives at most 1e-6.
 * Runs on a GPU: make test-gpu. */
#include <string.h>

#include "gpu.h"
#include "gpu_supernet.h"
extern "C" {
#include "model.h"
#include "supernet.h"
#include "test.h"
#include "util.h"
}

#define B 2
#define T 100
#define WINDOW 32

/* dw of the GPU against the CPU's, within tol of max |cpu|: the first 5
 * pairs, every mismatch, max abs error and NMSE */
static int close_dw(const double *got, const double *ref, const Supernet *sn, double tol)
{
	int LK = sn->L * sn->K, bad = 0;
	double mx = max_abs(ref, (size_t)LK), err = 0, se = 0, sr = 0;
	for (int i = 0; i < LK; i++) {
		double d = fabs(got[i] - ref[i]);
		err = d > err ? d : err;
		se += d * d, sr += ref[i] * ref[i];
		int off = !(d <= tol * mx);
		if (i < 5 || off)
			printf("  layer %d %s: gpu %.6g cpu %.6g%s\n", i / sn->K, arch_op_names[sn->ops[i % sn->K]], got[i],
			       ref[i], off ? "  <- outside" : "");
		bad += off;
	}
	printf("  dw: max |cpu| %.4g, max error %.3e (%.2e of it), nmse %.3e, %d outside\n", mx, err,
	       mx > 0 ? err / mx : 0, sr > 0 ? se / sr : 0, bad);
	return bad == 0;
}

static void check_weights(const char *what, const char *mode, Supernet *sn, GpuSupernet *gs, const int32_t *ids,
                          const float *th)
{
	char name[96];
	snprintf(name, sizeof name, "%s (%s)", what, mode);
	int LK = sn->L * sn->K;
	double *dwg = (double *)callocCheck((size_t)LK, sizeof(double));
	memset(sn->dw, 0, (size_t)LK * sizeof(double));
	double klc = supernet_backward_kl(sn, ids, B, T, th);
	double klg = gpu_supernet_backward_kl(gs, ids, B, T, sn->w, dwg);
	double klf = gpu_supernet_kl(gs, ids, B, T, sn->w);
	char msg[200];
	printf("  %s: KL cpu %.6g gpu %.6g (forward only %.6g)\n", name, klc, klg, klf);
	snprintf(msg, sizeof msg, "%s: the GPU's KL is the CPU's within 3e-2 (%.5g, %.5g)", name, klg, klc);
	test_cond(msg, fabs(klg - klc) <= 3e-2 * fabs(klc) && klc > 0);
	snprintf(msg, sizeof msg, "%s: the GPU's forward-only KL is its backward's (%.7g, %.7g)", name, klf, klg);
	test_cond(msg, fabs(klf - klg) <= 1e-5 * fabs(klg));
	snprintf(msg, sizeof msg, "%s: the GPU's d(KL)/dw is the CPU's within 5e-2 of max |dw| (every layer and column)",
	         name);
	test_cond(msg, close_dw(dwg, sn->dw, sn, 5e-2));
	free(dwg);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	if (cuda_device_count() == 0) {
		printf("SKIP: no GPU\n");
		return 0;
	}
	ModelConfig c;
	memset(&c, 0, sizeof c);
	c.arch = ARCH_QWEN2, c.L = 3, c.C = 256, c.H = 4, c.G = 2, c.D = 64, c.F = 512, c.V = 512;
	c.eps = 1e-6f, c.rope_theta = 1e4, c.rope_type = ROPE_DEFAULT, c.qkv_bias = 1, c.tied = 0;
	c.bos_id = c.eos_id = -1, c.max_pos = 4096;
	Model m;
	model_init_random(&m, &c, 5);
	model_unpack(&m);
	int ops[4] = {ARCH_FA, ARCH_SWA, ARCH_GDN, ARCH_GLA};
	Supernet sn;
	supernet_init(&sn, &m, 4, ops, NULL, WINDOW, B * T);
	int32_t ids[B * T];
	uint64_t s = 11;
	for (int i = 0; i < B * T; i++)
		ids[i] = (int32_t)(((s = s * 6364136223846793005ULL + 1442695040888963407ULL) >> 33) % (uint64_t)c.V);
	float *th = (float *)mallocCheck((size_t)B * T * c.C * sizeof(float));
	model_forward(&m, ids, B, T, th, NULL, NULL);
	int L = sn.L, K = sn.K;

	/* both ways of the gdn and gla columns: an arena each (what this small
	 * model gets), and one shared arena with each forward run again; then
	 * gdn's float32 path */
	for (int run = 0; run < 3; run++) {
		int shared = run == 1;
		if (shared)
			setenv("DASH_SUPERNET_SHARED", "1", 1);
		else
			unsetenv("DASH_SUPERNET_SHARED");
		if (run == 2)
			setenv("DASH_SUPERNET_F32", "1", 1);
		GpuSupernet *gs = gpu_supernet_new(&sn, B * T + 24);
		const char *mode = gpu_supernet_shared(gs) ? "one shared arena"
		                   : run == 2               ? "an arena an operator, gdn in float32"
		                                            : "an arena an operator";
		char msg[160];
		snprintf(msg, sizeof msg, "the GpuSupernet's gdn and gla columns have %s, as asked", mode);
		test_cond(msg, gpu_supernet_shared(gs) == shared);
		gpu_supernet_teacher(gs, ids, B, T, NULL);

		/* every column mixed, unequal weights (as tests/test_supernet.c) */
		for (int i = 0; i < L * K; i++)
			sn.w[i] = 0.15f + 0.1f * (float)(i % 5);
		check_weights("mixed", mode, &sn, gs, ids, th);

		/* zeros: fa off in layer 0; swa, gla, gdn off in one layer each */
		const float wz[3][4] = {{0, 0.5f, 0.3f, 0.2f}, {0.6f, 0, 0.4f, 0}, {0.3f, 0.3f, 0, 0.4f}};
		for (int l = 0; l < L; l++)
			for (int k = 0; k < K; k++)
				sn.w[l * K + k] = wz[l][k];
		check_weights("zeros", mode, &sn, gs, ids, th);

		/* no attention in layers 1 and 2: fa and swa 0, so no attention
		 * backward there; their dw all the same (the dots alone) */
		const float wn[3][4] = {{0.5f, 0.5f, 0, 0}, {0, 0, 0.6f, 0.4f}, {0, 0, 0.3f, 0.7f}};
		for (int l = 0; l < L; l++)
			for (int k = 0; k < K; k++)
				sn.w[l * K + k] = wn[l][k];
		check_weights("no attention", mode, &sn, gs, ids, th);

		/* one-hot fa: the supernet is the teacher */
		for (int i = 0; i < L * K; i++)
			sn.w[i] = i % K == 0;
		double klc = supernet_kl(&sn, ids, B, T, th, NULL), klg = gpu_supernet_kl(gs, ids, B, T, sn.w);
		double *dwg = (double *)callocCheck((size_t)L * K, sizeof(double));
		double klb = gpu_supernet_backward_kl(gs, ids, B, T, sn.w, dwg);
		printf("  one-hot fa (%s): KL cpu %.3g gpu %.3g (backward %.3g), max |dw| gpu %.3g\n", mode, klc, klg, klb,
		       max_abs(dwg, (size_t)L * K));
		snprintf(msg, sizeof msg, "one-hot fa (%s): the GPU supernet's KL to its teacher is 0 (<= 1e-6), "
		         "forward and backward", mode);
		test_cond(msg, fabs(klg) <= 1e-6 && fabs(klb) <= 1e-6);
		free(dwg);
		gpu_supernet_free(gs);
	}
	unsetenv("DASH_SUPERNET_SHARED"), unsetenv("DASH_SUPERNET_F32");

	/* the backward's products in e4m3 on both sides (--grad fp8): the
	 * GPU's dw against the CPU's, as above; the CPU's against its own
	 * float32 dw: near (the codes' noise), not equal (the codes were used) */
	{
		for (int i = 0; i < L * K; i++)
			sn.w[i] = 0.15f + 0.1f * (float)(i % 5);
		memset(sn.dw, 0, (size_t)L * K * sizeof(double));
		supernet_backward_kl(&sn, ids, B, T, th);
		double *dw32 = (double *)mallocCheck((size_t)L * K * sizeof(double));
		memcpy(dw32, sn.dw, (size_t)L * K * sizeof(double));
		sn.grad_fp8 = 1;
		GpuSupernet *gs = gpu_supernet_new(&sn, B * T);
		gpu_supernet_teacher(gs, ids, B, T, NULL);
		check_weights("mixed", "fp8 products", &sn, gs, ids, th);
		double mx = max_abs(dw32, (size_t)L * K), d = 0;
		for (int i = 0; i < L * K; i++)
			d = fmax(d, fabs(sn.dw[i] - dw32[i]));
		char msg[160];
		snprintf(msg, sizeof msg, "fp8 products: the CPU's dw moves by %.2e of max |dw| (0 < that <= 0.1)",
		         d / mx);
		test_cond(msg, d > 0 && d <= 0.1 * mx);
		sn.grad_fp8 = 0;
		gpu_supernet_free(gs);
		free(dw32);
	}
	/* the supernet's forward in e4m3 too (--forward fp8, with --grad fp8):
	 * the GPU's KL and dw against the CPU's of the same settings, as above;
	 * then every layer fa, where the supernet is the teacher's forward in
	 * e4m3 against its own in bf16 (float32 on the CPU): KL > 0 and near
	 * the CPU's, the codes' divergence, which a teacher run through the
	 * same codes by mistake would not show */
	{
		for (int i = 0; i < L * K; i++)
			sn.w[i] = 0.15f + 0.1f * (float)(i % 5);
		sn.grad_fp8 = sn.fwd_fp8 = 1;
		GpuSupernet *gs = gpu_supernet_new(&sn, B * T);
		gpu_supernet_teacher(gs, ids, B, T, NULL);
		check_weights("mixed", "fp8 forward and backward", &sn, gs, ids, th);
		for (int i = 0; i < L * K; i++)
			sn.w[i] = i % K == 0;
		double klc = supernet_kl(&sn, ids, B, T, th, NULL), klg = gpu_supernet_kl(gs, ids, B, T, sn.w);
		gpu_supernet_teacher(gs, ids, B, T, NULL); /* the teacher again after an e4m3 forward: still bf16 */
		double klg2 = gpu_supernet_kl(gs, ids, B, T, sn.w);
		char msg[200];
		printf("  one-hot fa, forward fp8: KL cpu %.4g gpu %.4g (teacher again: %.4g)\n", klc, klg, klg2);
		snprintf(msg, sizeof msg,
		         "one-hot fa, forward fp8: the GPU's KL of e4m3 to bf16 is the CPU's within a "
		         "factor 1.5 (%.3g, %.3g), and again after another teacher forward",
		         klg, klc);
		test_cond(msg, klc > 0 && klg > klc / 1.5 && klg < klc * 1.5 && klg2 == klg);
		sn.grad_fp8 = sn.fwd_fp8 = 0;
		gpu_supernet_free(gs);
	}
	/* --forward fp8-both: the teacher's forward through the same codes
	 * (the CPU's rows by model_forward_fp8): mixed weights as above, and
	 * every layer fa the teacher again, KL 0 */
	{
		float *th8 = (float *)mallocCheck((size_t)B * T * c.C * sizeof(float));
		model_forward_fp8(&m, ids, B, T, th8, NULL, NULL);
		for (int i = 0; i < L * K; i++)
			sn.w[i] = 0.15f + 0.1f * (float)(i % 5);
		sn.grad_fp8 = 1, sn.fwd_fp8 = 2;
		GpuSupernet *gs = gpu_supernet_new(&sn, B * T);
		gpu_supernet_teacher(gs, ids, B, T, NULL);
		check_weights("mixed", "fp8 forward, the teacher's too", &sn, gs, ids, th8);
		for (int i = 0; i < L * K; i++)
			sn.w[i] = i % K == 0;
		double *dwg = (double *)callocCheck((size_t)L * K, sizeof(double));
		double klg = gpu_supernet_kl(gs, ids, B, T, sn.w),
		       klb = gpu_supernet_backward_kl(gs, ids, B, T, sn.w, dwg);
		char msg[160];
		printf("  one-hot fa, forward fp8-both: KL gpu %.3g (backward %.3g)\n", klg, klb);
		snprintf(msg, sizeof msg,
		         "one-hot fa, forward fp8-both: the GPU supernet's KL to its e4m3 teacher is 0 "
		         "(<= 1e-6), forward and backward");
		test_cond(msg, fabs(klg) <= 1e-6 && fabs(klb) <= 1e-6);
		sn.grad_fp8 = sn.fwd_fp8 = 0;
		gpu_supernet_free(gs);
		free(dwg), free(th8);
	}
	/* --forward fp8-all: fp8-both and both sides' logits from e4m3 codes
	 * (the final norm's of the hidden rows, lm_head's by rows): mixed
	 * weights against the CPU's of the same settings; every layer fa the
	 * teacher again, KL 0; the teacher's rows downloaded and set again
	 * (gpu_supernet_set_teacher, the measures' way: their codes by
	 * fp8_rows_cuda) give the KL of the final norm's codes bit for bit */
	{
		float *th8 = (float *)mallocCheck((size_t)B * T * c.C * sizeof(float));
		model_forward_fp8(&m, ids, B, T, th8, NULL, NULL);
		for (int i = 0; i < L * K; i++)
			sn.w[i] = 0.15f + 0.1f * (float)(i % 5);
		for (int v = 0; v < 3; v++) { /* grad bf16, grad fp8, grad fp8 and fp8-fast */
			int grad8 = v > 0;
			const char *name = v == 2 ? "fp8-fast" : "fp8-all";
			sn.grad_fp8 = grad8, sn.fwd_fp8 = 3, sn.fwd_fast = v == 2;
			GpuSupernet *gs = gpu_supernet_new(&sn, B * T);
			uint16_t *hb = (uint16_t *)mallocCheck((size_t)B * T * c.C * sizeof(uint16_t));
			gpu_supernet_teacher(gs, ids, B, T, hb);
			check_weights("mixed",
			              v == 2  ? "fp8-fast, grad fp8"
			              : grad8 ? "fp8-all, grad fp8"
			                      : "fp8-all, grad bf16",
			              &sn, gs, ids, th8);
			double klt = gpu_supernet_kl(gs, ids, B, T, sn.w);
			gpu_supernet_set_teacher(gs, hb, B * T);
			double klh = gpu_supernet_kl(gs, ids, B, T, sn.w);
			char msg[200];
			printf("  %s: mixed KL %.8g, from the host's rows %.8g\n", name, klt, klh);
			snprintf(msg, sizeof msg,
			         "forward %s%s: the teacher's rows from the host give the same "
			         "KL (%.8g, %.8g)",
			         name, grad8 ? ", grad fp8" : "", klt, klh);
			test_cond(msg, klt == klh);
			float *w = (float *)mallocCheck((size_t)L * K * sizeof(float));
			for (int i = 0; i < L * K; i++)
				w[i] = i % K == 0;
			double *dwg = (double *)callocCheck((size_t)L * K, sizeof(double));
			gpu_supernet_teacher(gs, ids, B, T, NULL);
			double klg = gpu_supernet_kl(gs, ids, B, T, w);
			double klb = gpu_supernet_backward_kl(gs, ids, B, T, w, dwg);
			printf("  one-hot fa, forward %s: KL gpu %.3g (backward %.3g), max |dw| %.3g\n", name, klg, klb,
			       max_abs(dwg, (size_t)L * K));
			snprintf(msg, sizeof msg,
			         "one-hot fa, forward %s%s: the GPU supernet's KL to its e4m3 teacher is 0 "
			         "(<= 1e-6), forward and backward",
			         name, grad8 ? ", grad fp8" : "");
			test_cond(msg, fabs(klg) <= 1e-6 && fabs(klb) <= 1e-6);
			gpu_supernet_free(gs);
			free(hb), free(w), free(dwg);
		}
		sn.grad_fp8 = sn.fwd_fp8 = sn.fwd_fast = 0;
		free(th8);
	}
	supernet_free(&sn);
	free(th);
	model_free(&m);

	/* an o bias: the GpuModel mixes fa and swa before Wo, so the bias
	 * enters with w_fa + w_swa */
	c.o_bias = 1;
	model_init_random(&m, &c, 6);
	model_unpack(&m);
	supernet_init(&sn, &m, 4, ops, NULL, WINDOW, B * T);
	th = (float *)mallocCheck((size_t)B * T * c.C * sizeof(float));
	model_forward(&m, ids, B, T, th, NULL, NULL);
	GpuSupernet *gs = gpu_supernet_new(&sn, B * T);
	gpu_supernet_teacher(gs, ids, B, T, NULL);
	for (int i = 0; i < L * K; i++)
		sn.w[i] = 0.15f + 0.1f * (float)(i % 5);
	check_weights("mixed", "an o bias", &sn, gs, ids, th);
	gpu_supernet_free(gs);
	supernet_free(&sn);
	free(th);
	model_free(&m);
	return test_report();
}
