/*
 * fp8: float8 e4m3 codes, the rows and columns of a matrix in them, and the
 * backward's and the forward's products through them (lib/fp8.h).
 */
#include "fp8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

uint8_t fp8_e4m3(float x)
{
	if (isnan(x))
		return 0x7f;
	uint8_t s = signbit(x) ? 0x80 : 0;
	float a = fabsf(x);
	if (a >= 448)
		return s | 0x7e;
	int e;
	frexpf(a, &e); /* a in [2^(e-1), 2^e) */
	int E = e - 1 < -6 ? -6 : e - 1;
	float quantum = ldexpf(1, E - 3), r = rintf(a / quantum) * quantum;
	if (r == 0)
		return s;
	frexpf(r, &e); /* rounding may have carried into the next binade */
	E = e - 1;
	if (E < -6) /* subnormal: r = m 2^-9 */
		return s | (uint8_t)ldexpf(r, 9);
	return s | (uint8_t)((E + 7) << 3) | (uint8_t)(ldexpf(r, 3 - E) - 8);
}

float fp8_e4m3_value(uint8_t q)
{
	int e = q >> 3 & 15, m = q & 7;
	float v = e == 15 && m == 7 ? NAN : e == 0 ? ldexpf(m, -9) : ldexpf(8 + m, e - 10);
	return q & 0x80 ? -v : v;
}

float fp8_inv(float amax) { return amax >= FP8_AMAX_MIN ? 448.0f / amax : 0.0f; }
float fp8_scale(float amax) { return amax >= FP8_AMAX_MIN ? amax / 448.0f : 1.0f; }

/* one row's codes: x[j * stride], j < k */
static float quant_row(uint8_t *q, const float *x, long stride, int k)
{
	float amax = 0;
	for (int j = 0; j < k; j++)
		amax = fmaxf(amax, fabsf(x[(long)j * stride]));
	float inv = fp8_inv(amax);
	for (int j = 0; j < k; j++)
		q[j] = fp8_e4m3(x[(long)j * stride] * inv);
	return fp8_scale(amax);
}

void fp8_rows_cpu(uint8_t *q, float *scale, const float *x, int n, int k)
{
	for (int r = 0; r < n; r++)
		scale[r] = quant_row(q + (long)r * k, x + (long)r * k, 1, k);
}

void fp8_cols_t_cpu(uint8_t *q, float *scale, const float *w, int OC, int IC)
{
	for (int i = 0; i < IC; i++)
		scale[i] = quant_row(q + (long)i * OC, w + i, IC, OC);
}

void matmul_backward_fp8_cpu(float *dx, const uint8_t *dq, const float *sd, const uint8_t *wq, const float *sw, int n,
                             int IC, int OC)
{
	float lut[256];
	for (int c = 0; c < 256; c++)
		lut[c] = fp8_e4m3_value((uint8_t)c);
#pragma omp parallel for schedule(static)
	for (int t = 0; t < n; t++)
		for (int i = 0; i < IC; i++) {
			const uint8_t *a = dq + (long)t * OC, *b = wq + (long)i * OC;
			double s = 0;
			for (int o = 0; o < OC; o++)
				s += (double)lut[a[o]] * lut[b[o]];
			dx[(long)t * IC + i] = (float)(s * sd[t] * sw[i]);
		}
}

void matmul_backward_fp8_f32_cpu(float *dx, const float *dout, const float *w, int n, int IC, int OC)
{
	uint8_t *dq = mallocCheck((size_t)n * OC), *wq = mallocCheck((size_t)IC * OC);
	float *sd = mallocCheck((size_t)n * sizeof(float)), *sw = mallocCheck((size_t)IC * sizeof(float));
	fp8_rows_cpu(dq, sd, dout, n, OC);
	fp8_cols_t_cpu(wq, sw, w, OC, IC);
	matmul_backward_fp8_cpu(dx, dq, sd, wq, sw, n, IC, OC);
	free(dq), free(wq), free(sd), free(sw);
}

void matmul_backward_fp8_cat_cpu(float *dx, int n, int IC, int nw, const float *const *d, const Tensor *const *w,
                                 const int *oc)
{
	int OC = 0;
	for (int j = 0; j < nw; j++)
		OC += oc[j];
	float *dcat = mallocCheck((size_t)n * OC * sizeof(float)), *wcat = mallocCheck((size_t)OC * IC * sizeof(float));
	for (int j = 0, off = 0; j < nw; off += oc[j], j++) {
		for (int t = 0; t < n; t++)
			memcpy(dcat + (size_t)t * OC + off, d[j] + (size_t)t * oc[j], (size_t)oc[j] * sizeof(float));
		convert_to_f32(wcat + (size_t)off * IC, w[j]->data, w[j]->dtype, (size_t)oc[j] * IC);
	}
	matmul_backward_fp8_f32_cpu(dx, dcat, wcat, n, IC, OC);
	free(dcat), free(wcat);
}

void matmul_forward_fp8_cpu(float *out, const float *x, const Tensor *w, const Tensor *b, int n, int IC, int OC)
{
	uint8_t *xq = mallocCheck((size_t)n * IC), *wq = mallocCheck((size_t)OC * IC);
	float *sx = mallocCheck((size_t)n * sizeof(float)), *sw = mallocCheck((size_t)OC * sizeof(float));
	float *wf = mallocCheck((size_t)OC * IC * sizeof(float));
	convert_to_f32(wf, w->data, w->dtype, (size_t)OC * IC);
	fp8_rows_cpu(xq, sx, x, n, IC);
	fp8_rows_cpu(wq, sw, wf, OC, IC);
	matmul_backward_fp8_cpu(out, xq, sx, wq, sw, n, OC, IC); /* the same product of two row-coded sides */
	if (b && b->data) {
		convert_to_f32(wf, b->data, b->dtype, (size_t)OC);
		for (long t = 0; t < n; t++)
			for (int o = 0; o < OC; o++)
				out[t * OC + o] += wf[o];
	}
	free(xq), free(wq), free(sx), free(sw), free(wf);
}
