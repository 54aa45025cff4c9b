/* test_train: lib/train.c, the normalised error and AdamW of distill-linear.
 * The error's gradient by central differences (double sums, float inputs:
 * 1e-3 relative); AdamW's first step against its closed form (m^ = g, v^ =
 * g^2, so the step is lr (g / (|g| + eps) + wd w)), clipping, segments
 * without decay, and values outside every segment untouched. */
#include <string.h>

#include "test.h"
#include "train.h"
#include "util.h"

static void test_nmse(void)
{
	size_t n = 257;
	float *ah = test_rnd(n, 1), *a = test_rnd(n, 1), *d = mallocCheck(n * sizeof(float));
	double e = nmse_cpu(d, ah, a, n), num = 0, den = 0;
	for (size_t i = 0; i < n; i++)
		num += ((double)ah[i] - a[i]) * ((double)ah[i] - a[i]), den += (double)a[i] * a[i];
	test_cond("nmse_cpu is |ah - a|^2 / |a|^2", fabs(e - num / den) < 1e-12 * (num / den));
	double worst = 0;
	for (size_t i = 0; i < n; i += 16) {
		float keep = ah[i], h = 1e-2f;
		ah[i] = keep + h;
		double ep = nmse_cpu(NULL, ah, a, n);
		ah[i] = keep - h;
		double em = nmse_cpu(NULL, ah, a, n);
		ah[i] = keep;
		double fd = (ep - em) / (2 * (double)h), r = fabs(fd - d[i]) / (fabs(fd) + 1e-6);
		worst = r > worst ? r : worst;
	}
	char msg[96];
	snprintf(msg, sizeof msg, "nmse_cpu gradient by central differences (worst %.1e)", worst);
	test_cond(msg, worst < 1e-3);
	memset(a, 0, n * sizeof(float));
	test_cond("nmse_cpu of an all-zero target divides by 1", nmse_cpu(NULL, ah, a, n) > 0);
	free(ah), free(a), free(d);
}

static void test_adamw(float clip)
{
	size_t n = 300;
	float *w = test_rnd(n, 1), *w0 = mallocCheck(n * sizeof(float)), *g = test_rnd(n, 1);
	float *m = callocCheck(n, sizeof(float)), *v = callocCheck(n, sizeof(float));
	memcpy(w0, w, n * sizeof(float));
	AdamSeg segs[2] = {{0, 100, 1}, {100, 150, 0}}; /* 250..299 outside */
	AdamStep st = {0, 1e-2f, 0.1f, clip};
	adamw_cpu(w, m, v, g, n, segs, 2, &st);
	double norm = 0;
	for (size_t i = 0; i < n; i++)
		norm += (double)g[i] * g[i];
	double k = sqrt(norm) > clip ? clip / sqrt(norm) : 1, worst = 0;
	int outside = 1;
	for (size_t i = 0; i < n; i++) {
		if (i >= 250) {
			outside &= w[i] == w0[i];
			continue;
		}
		double gi = g[i] * k, want = w0[i] - 1e-2 * (gi / (fabs(gi) + 1e-8) + (i < 100 ? 0.1 * w0[i] : 0));
		worst = fabs(w[i] - want) > worst ? fabs(w[i] - want) : worst;
	}
	char msg[96];
	snprintf(msg, sizeof msg, "adamw_cpu first step, clip %g (|g| %.1f): closed form within %.1e", clip, sqrt(norm),
	         worst);
	test_cond(msg, worst < 1e-6);
	test_cond("adamw_cpu leaves values outside its segments alone", outside);
	free(w), free(w0), free(g), free(m), free(v);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	test_seed(0x3c6ef372fe94f82bULL);
	test_nmse();
	test_adamw(1e9f);
	test_adamw(1.0f);
	return test_report();
}
