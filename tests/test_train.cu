/* test_train (GPU): kernels/train.cu against lib/train.c: the normalised
 * error and its gradient (n not a multiple of anything), AdamW over three
 * steps with and without clipping and a value outside the segments, the
 * bf16 conversion exactly; and the sums deterministic (two calls, the same
 * bits). Runs on a GPU: make test-gpu. */
#include <string.h>

#include "gpu.h"
extern "C" {
#include "tensor.h"
#include "test.h"
#include "train.h"
#include "util.h"
}
#include "gpu_test.h"

static void test_nmse(size_t n)
{
	float *ah = test_rnd(n, 1), *a = test_rnd(n, 2), *rd = (float *)mallocCheck(n * 4), *d = (float *)mallocCheck(n * 4);
	double re = nmse_cpu(rd, ah, a, n), sums[2], again[2];
	float *dah = dev_f32(ah, n), *da = dev_f32(a, n), *ddah = (float *)gpu_alloc(n * 4);
	double *dsums = (double *)gpu_alloc(2 * sizeof(double));
	void *work = gpu_alloc(train_work());
	nmse_cuda(dsums, ddah, dah, da, n, work);
	gpu_download(sums, dsums, sizeof sums), gpu_download(d, ddah, n * 4);
	nmse_cuda(dsums, NULL, dah, da, n, work);
	gpu_download(again, dsums, sizeof again);
	double e = sums[0] / sums[1], eg = test_rel_err(d, rd, n);
	char msg[128];
	snprintf(msg, sizeof msg, "nmse_cuda n=%zu: error %.3e vs %.3e, gradient %.1e", n, e, re, eg);
	test_cond(msg, fabs(e - re) < 1e-12 * re && eg < 1e-6);
	test_cond("nmse_cuda sums are deterministic", !memcmp(sums, again, sizeof sums));
	free(ah), free(a), free(rd), free(d);
	gpu_free(dah), gpu_free(da), gpu_free(ddah), gpu_free(dsums), gpu_free(work);
}

static void test_adamw(float clip)
{
	size_t n = 100003;
	float *w = test_rnd(n, 1), *m = (float *)callocCheck(n, 4), *v = (float *)callocCheck(n, 4);
	float *dw = dev_f32(w, n), *dm = dev_f32(m, n), *dv = dev_f32(v, n), *dg = (float *)gpu_alloc(n * 4);
	void *work = gpu_alloc(train_work());
	AdamSeg segs[3] = {{0, 40000, 1}, {40000, 60000, 0}, {100000, 2, 1}}; /* 100002 outside */
	for (int t = 0; t < 3; t++) {
		float *g = test_rnd(n, 0.01f);
		AdamStep st = {t, 1e-3f, 0.1f, clip};
		gpu_upload(dg, g, n * 4);
		adamw_cpu(w, m, v, g, n, segs, 3, &st);
		adamw_cuda(dw, dm, dv, dg, n, segs, 3, &st, work);
		free(g);
	}
	float *gw = (float *)mallocCheck(n * 4), *gm = (float *)mallocCheck(n * 4);
	gpu_download(gw, dw, n * 4), gpu_download(gm, dm, n * 4);
	double ew = test_rel_err(gw, w, n), em = test_rel_err(gm, m, n);
	char msg[128];
	snprintf(msg, sizeof msg, "adamw_cuda 3 steps, clip %g: w %.1e, m %.1e", clip, ew, em);
	test_cond(msg, ew < 1e-6 && em < 1e-6 && gw[n - 1] == w[n - 1]);
	free(w), free(m), free(v), free(gw), free(gm);
	gpu_free(dw), gpu_free(dm), gpu_free(dv), gpu_free(dg), gpu_free(work);
}

static void test_bf16(void)
{
	size_t n = 1001;
	bf16_t *h = (bf16_t *)mallocCheck(n * 2);
	float *f = (float *)mallocCheck(n * 4);
	for (size_t i = 0; i < n; i++)
		h[i] = f32_to_bf16(100 * test_frand());
	bf16_t *dh = (bf16_t *)gpu_alloc(n * 2);
	float *df = (float *)gpu_alloc(n * 4);
	gpu_upload(dh, h, n * 2);
	bf16_to_f32_cuda(df, dh, n);
	gpu_download(f, df, n * 4);
	int same = 1;
	for (size_t i = 0; i < n; i++)
		same &= f[i] == bf16_to_f32(h[i]);
	test_cond("bf16_to_f32_cuda is exact", same);
	free(h), free(f), gpu_free(dh), gpu_free(df);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	test_seed(0xa54ff53a5f1d36f1ULL);
	if (cuda_device_count() == 0) {
		printf("SKIP: no GPU\n");
		return 0;
	}
	test_nmse(1);
	test_nmse(1000003);
	test_adamw(1e9f);
	test_adamw(0.5f);
	test_bf16();
	return test_report();
}
