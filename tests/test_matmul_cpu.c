/* test_matmul_cpu: matmul_forward_cpu and matmul_backward_cpu (the blocked
 * GEMM of lib/ops_cpu.c) against a double-precision loop over the weights
 * that convert_to_f32 gives, for every weight dtype, at awkward shapes (n = 1,
 * odd n, IC and OC off every block size, more than one k and row block),
 * bias or none, on the AVX2 path and the plain C one
 * (DASH_MATMUL_PORTABLE=1). Then what must hold exactly: the weights come
 * through packing and dequantising unchanged (x = the identity), and a row's
 * result does not depend on the other rows or on the thread count (the same
 * bits). */
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "ops_cpu.h"
#include "test.h"
#include "util.h"

static const DType dtypes[] = {DT_F32, DT_F16, DT_BF16, DT_F64, DT_Q4_0, DT_Q4_1, DT_Q5_0,
                               DT_Q5_1, DT_Q8_0, DT_Q4_K, DT_Q5_K, DT_Q6_K};

/* random_weights: n values of type t (n a multiple of its block): floats
 * uniform in [-1, 1); quantised blocks random bytes with sane f16 scales (d,
 * and the minimum where the block has one) */
static void *random_weights(DType t, size_t n)
{
	size_t bytes = dtype_row_bytes(t, (int64_t)n);
	uint8_t *p = mallocCheck(bytes);
	if (!dtype_is_quant(t)) {
		for (size_t i = 0; i < n; i++) {
			float f = test_frand();
			double d = f;
			uint16_t h = t == DT_BF16 ? f32_to_bf16(f) : f32_to_f16(f);
			switch (t) {
			case DT_F32: memcpy(p + 4 * i, &f, 4); break;
			case DT_F64: memcpy(p + 8 * i, &d, 8); break;
			default: memcpy(p + 2 * i, &h, 2); break;
			}
		}
		return p;
	}
	for (size_t i = 0; i < bytes; i++)
		p[i] = (uint8_t)(test_frand() * 128 + 128);
	int f0 = t == DT_Q6_K ? 208 : 0;
	int f1 = t == DT_Q4_1 || t == DT_Q5_1 || t == DT_Q4_K || t == DT_Q5_K ? 2 : -1;
	for (size_t b = 0; b < bytes / dtype_block_bytes(t); b++) {
		uint8_t *blk = p + b * dtype_block_bytes(t);
		uint16_t d = f32_to_f16(0.05f * (1.5f + test_frand())), m = f32_to_f16(0.05f * test_frand());
		memcpy(blk + f0, &d, 2);
		if (f1 >= 0)
			memcpy(blk + f1, &m, 2);
	}
	return p;
}

/* check_rel: |got - ref| <= tol * scale for every element, scale the sum of
 * the magnitudes of the products added (and of the bias) */
static int check_rel(const char *name, const float *got, const double *ref, const double *scale, size_t n,
                     double tol)
{
	double worst = 0;
	int bad = 0;
	for (size_t i = 0; i < n; i++) {
		double e = fabs((double)got[i] - ref[i]) / (scale[i] > 0 ? scale[i] : 1);
		if (!(e <= tol)) {
			if (bad < 5)
				printf("  %s[%zu]: got %.8g ref %.8g\n", name, i, (double)got[i], ref[i]);
			bad++;
		}
		worst = e > worst || isnan(e) ? e : worst;
	}
	printf("  %s %s max error / sum |terms| = %.2e (%zu values)\n", bad ? "TENSOR BAD" : "TENSOR OK", name,
	       worst, n);
	return bad == 0;
}

/* test_shape: forward (bias: 0 none, 1 a NULL-data tensor, 2 a bias) and
 * backward at n, IC, OC against double precision */
static void test_shape(DType t, int n, int IC, int OC, int bias, const char *path)
{
	void *wd = random_weights(t, (size_t)OC * IC);
	DType bt = dtype_is_quant(t) ? DT_F32 : t;
	void *bd = random_weights(bt, (size_t)OC);
	float *wf = mallocCheck((size_t)OC * IC * sizeof(float)), *bf = mallocCheck((size_t)OC * sizeof(float));
	convert_to_f32(wf, wd, t, (size_t)OC * IC);
	convert_to_f32(bf, bd, bt, (size_t)OC);
	Tensor W = {.dtype = t, .ndim = 2, .shape = {OC, IC}, .data = wd};
	Tensor B = {.dtype = bt, .ndim = 1, .shape = {OC}, .data = bias == 2 ? bd : NULL};
	size_t nx = (size_t)n * (IC > OC ? IC : OC);
	float *x = mallocCheck(nx * sizeof(float)), *out = mallocCheck(nx * sizeof(float));
	double *ref = mallocCheck(nx * sizeof(double)), *scale = mallocCheck(nx * sizeof(double));
	for (size_t i = 0; i < nx; i++)
		x[i] = test_frand();

	/* forward: out (n, OC) = x (n, IC) w^T + b */
	for (int r = 0; r < n; r++)
		for (int o = 0; o < OC; o++) {
			double s = bias == 2 ? bf[o] : 0, m = fabs(s);
			for (int i = 0; i < IC; i++) {
				double p = (double)x[(size_t)r * IC + i] * wf[(size_t)o * IC + i];
				s += p, m += fabs(p);
			}
			ref[(size_t)r * OC + o] = s, scale[(size_t)r * OC + o] = m;
		}
	matmul_forward_cpu(out, x, &W, bias ? &B : NULL, n, IC, OC);
	char msg[160];
	snprintf(msg, sizeof msg, "%s forward n=%d IC=%d OC=%d %s%s matches double", path, n, IC, OC, dtype_name(t),
	         bias == 2 ? " +bias" : bias ? " (bias data NULL)" : "");
	test_cond(msg, check_rel("out", out, ref, scale, (size_t)n * OC, 1e-5));

	/* backward: dx (n, IC) = dout (n, OC) w */
	for (int r = 0; r < n; r++)
		for (int i = 0; i < IC; i++) {
			double s = 0, m = 0;
			for (int o = 0; o < OC; o++) {
				double p = (double)x[(size_t)r * OC + o] * wf[(size_t)o * IC + i];
				s += p, m += fabs(p);
			}
			ref[(size_t)r * IC + i] = s, scale[(size_t)r * IC + i] = m;
		}
	matmul_backward_cpu(out, x, &W, n, IC, OC);
	snprintf(msg, sizeof msg, "%s backward n=%d IC=%d OC=%d %s matches double", path, n, IC, OC, dtype_name(t));
	test_cond(msg, check_rel("dx", out, ref, scale, (size_t)n * IC, 1e-5));
	free(wd), free(bd), free(wf), free(bf), free(x), free(out), free(ref), free(scale);
}

/* test_identity: x = the identity gives back w^T (forward) and w (backward)
 * exactly (-0 may come back +0): packing and dequantising lose nothing */
static void test_identity(DType t, int IC, int OC, const char *path)
{
	void *wd = random_weights(t, (size_t)OC * IC);
	float *wf = mallocCheck((size_t)OC * IC * sizeof(float));
	convert_to_f32(wf, wd, t, (size_t)OC * IC);
	Tensor W = {.dtype = t, .ndim = 2, .shape = {OC, IC}, .data = wd};
	int m = IC > OC ? IC : OC;
	float *eye = callocCheck((size_t)m * m, sizeof(float)), *out = mallocCheck((size_t)m * m * sizeof(float));
	/* forward with x = I (IC, IC): out[i][o] = w[o][i] */
	int okf = 1, okb = 1;
	for (int i = 0; i < IC; i++)
		memset(eye + (size_t)i * IC, 0, (size_t)IC * sizeof(float)), eye[(size_t)i * IC + i] = 1;
	matmul_forward_cpu(out, eye, &W, NULL, IC, IC, OC);
	for (int i = 0; i < IC; i++)
		for (int o = 0; o < OC; o++)
			okf &= out[(size_t)i * OC + o] == wf[(size_t)o * IC + i];
	/* backward with dout = I (OC, OC): dx = w */
	for (int o = 0; o < OC; o++)
		memset(eye + (size_t)o * OC, 0, (size_t)OC * sizeof(float)), eye[(size_t)o * OC + o] = 1;
	matmul_backward_cpu(out, eye, &W, OC, IC, OC);
	for (size_t i = 0; i < (size_t)OC * IC; i++)
		okb &= out[i] == wf[i];
	char msg[160];
	snprintf(msg, sizeof msg, "%s %s IC=%d OC=%d: forward and backward of the identity give the weights exactly",
	         path, dtype_name(t), IC, OC);
	test_cond(msg, okf && okb);
	free(wd), free(wf), free(eye), free(out);
}

/* test_invariance: every row alone, and 1 or 2 threads, give the bits of
 * the whole batch, forward and backward */
static void test_invariance(DType t, int n, int IC, int OC)
{
	void *wd = random_weights(t, (size_t)OC * IC), *bd = random_weights(DT_F32, (size_t)OC);
	Tensor W = {.dtype = t, .ndim = 2, .shape = {OC, IC}, .data = wd};
	Tensor B = {.dtype = DT_F32, .ndim = 1, .shape = {OC}, .data = bd};
	size_t nx = (size_t)n * (IC > OC ? IC : OC);
	float *x = mallocCheck(nx * sizeof(float)), *all = mallocCheck(nx * sizeof(float));
	float *one = mallocCheck(nx * sizeof(float)), *thr = mallocCheck(nx * sizeof(float));
	for (size_t i = 0; i < nx; i++)
		x[i] = test_frand();
	for (int bwd = 0; bwd < 2; bwd++) {
		int in = bwd ? OC : IC, on = bwd ? IC : OC;
		if (bwd)
			matmul_backward_cpu(all, x, &W, n, IC, OC);
		else
			matmul_forward_cpu(all, x, &W, &B, n, IC, OC);
		for (int r = 0; r < n; r++) {
			if (bwd)
				matmul_backward_cpu(one + (size_t)r * on, x + (size_t)r * in, &W, 1, IC, OC);
			else
				matmul_forward_cpu(one + (size_t)r * on, x + (size_t)r * in, &W, &B, 1, IC, OC);
		}
#ifdef _OPENMP
		int nth = omp_get_max_threads();
		omp_set_num_threads(nth > 1 ? 1 : 2);
#endif
		if (bwd)
			matmul_backward_cpu(thr, x, &W, n, IC, OC);
		else
			matmul_forward_cpu(thr, x, &W, &B, n, IC, OC);
#ifdef _OPENMP
		omp_set_num_threads(nth);
#endif
		char msg[160];
		snprintf(msg, sizeof msg, "%s n=%d IC=%d OC=%d %s: rows alone and another thread count give the same bits",
		         bwd ? "backward" : "forward", n, IC, OC, dtype_name(t));
		size_t sz = (size_t)n * on * sizeof(float);
		test_cond(msg, memcmp(all, one, sz) == 0 && memcmp(all, thr, sz) == 0);
	}
	free(wd), free(bd), free(x), free(all), free(one), free(thr);
}

int main(void)
{
	test_seed(20261128);
	for (int portable = 0; portable < 2; portable++) {
		const char *path = portable ? "portable" : "default";
		if (portable)
			setenv("DASH_MATMUL_PORTABLE", "1", 1);
		for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
			DType t = dtypes[d];
			int bk = dtype_block(t);
			/* IC: one block, a k block and a bit (k blocking), odd for floats */
			int ics[3] = {bk, bk == 256 ? 512 : bk == 32 ? 288 : 37, bk == 256 ? 768 : bk == 32 ? 544 : 301};
			test_shape(t, 1, ics[0], 1, 2, path);
			test_shape(t, 7, ics[1], 19, 0, path);
			test_shape(t, 13, ics[2], 37, 1, path);
			test_shape(t, 6, ics[0], 16, 2, path);
			test_shape(t, 101, ics[1], 273, 2, path); /* more than one row and column block */
			test_identity(t, ics[1], 35, path);
		}
	}
	unsetenv("DASH_MATMUL_PORTABLE");
	/* past the size at which the matmul takes every thread */
	test_invariance(DT_Q5_0, 100, 512, 400);
	test_invariance(DT_F32, 61, 301, 1029);
	return test_report();
}
