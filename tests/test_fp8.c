/* test_fp8: float8 e4m3 codes (lib/fp8.c): every code's value codes back to
 * itself, midpoints round to the even code, the range saturates at 448, the
 * known values; rows and columns with their scales; the product against
 * float32 dout w within the codes' noise; the forward's product (x w^T + b
 * through both sides' row codes) likewise. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp8.h"
#include "test.h"
#include "util.h"

static void test_codes(void)
{
	int back = 0, mid = 0, order = 0;
	for (int c = 0; c < 256; c++) {
		if ((c & 0x7f) == 0x7f)
			continue; /* the NaNs */
		float v = fp8_e4m3_value((uint8_t)c);
		back += fp8_e4m3(v) == c || (v == 0 && (fp8_e4m3(v) & 0x7f) == 0);
		if ((c & 0x80) || c >= 0x7e)
			continue;
		/* between c and c + 1 (both positive, finite): the midpoint goes to
		 * the even one, a hair either side to the nearer */
		float w = fp8_e4m3_value((uint8_t)(c + 1)), m = (v + w) / 2;
		uint8_t even = (c & 1) ? (uint8_t)(c + 1) : (uint8_t)c;
		mid += fp8_e4m3(m) == even && fp8_e4m3(nextafterf(m, 0)) == c && fp8_e4m3(nextafterf(m, 1e9f)) == c + 1;
		order += v < w;
	}
	test_cond("e4m3: every code's value codes back to the code (254 finite codes)", back == 254);
	test_cond("e4m3: values ascend with the codes, midpoints round to even (126 pairs)",
	          mid == 126 && order == 126);
	test_cond("e4m3: known values (1 0x38, 448 0x7e, 2^-9 0x01, 2^-6 0x08, -0.0625 0x98, 0.3 0x2a)",
	          fp8_e4m3(1) == 0x38 && fp8_e4m3(448) == 0x7e && fp8_e4m3(ldexpf(1, -9)) == 0x01 &&
	                  fp8_e4m3(ldexpf(1, -6)) == 0x08 && fp8_e4m3(-0.0625f) == 0x98 && fp8_e4m3(0.3f) == 0x2a);
	test_cond("e4m3: saturates (500 -> 448, -1e30 -> -448), NaN -> 0x7f, 2^-11 -> 0",
	          fp8_e4m3(500) == 0x7e && fp8_e4m3(-1e30f) == 0xfe && fp8_e4m3(NAN) == 0x7f &&
	                  fp8_e4m3(ldexpf(1, -11)) == 0);
}

static void test_rows_and_product(int n, int IC, int OC)
{
	float *dout = mallocCheck((size_t)n * OC * 4), *w = mallocCheck((size_t)OC * IC * 4);
	float *dx = mallocCheck((size_t)n * IC * 4), *sd = mallocCheck((size_t)n * 4),
	      *sw = mallocCheck((size_t)IC * 4);
	uint8_t *dq = mallocCheck((size_t)n * OC), *wq = mallocCheck((size_t)IC * OC);
	for (size_t i = 0; i < (size_t)n * OC; i++)
		dout[i] = 1e-3f * test_frand() * (i % 7 == 0 ? 10 : 1);
	for (int o = 0; o < OC; o++)
		for (int i = 0; i < IC; i++) /* column i spans a range of its own */
			w[(size_t)o * IC + i] = test_frand() * (1 + i % 5);
	for (int i = 0; i < OC; i++) /* a zero row, and one near 1e-38 (448 / amax overflows): scale 1, zero codes */
		dout[i] = 0, dout[OC + i] = i % 3 ? 0 : 1e-38f * (1 + i % 4);
	fp8_rows_cpu(dq, sd, dout, n, OC);
	fp8_cols_t_cpu(wq, sw, w, OC, IC);
	int ok = sd[0] == 1 && sd[1] == 1, peak = 1;
	for (int i = 0; i < 2 * OC; i++)
		ok &= dq[i] == 0;
	for (int r = 2; r < n; r++) { /* each row's largest |x| is the code 448 */
		int has = 0;
		for (int j = 0; j < OC; j++)
			has |= (dq[(size_t)r * OC + j] & 0x7f) == 0x7e;
		peak &= has;
	}
	for (int i = 0; i < IC; i++) {
		float m = 0;
		for (int o = 0; o < OC; o++)
			m = fmaxf(m, fabsf(w[(size_t)o * IC + i]));
		ok &= sw[i] == m / 448.0f &&
		      fabsf(fp8_e4m3_value(wq[(size_t)i * OC]) * sw[i] - w[i]) <= fabsf(w[i]) / 16 + 1e-30f;
	}
	char msg[160];
	snprintf(msg, sizeof msg, "fp8 rows and columns n=%d IC=%d OC=%d: scales, the zero and tiny rows, amax at 448",
	         n, IC, OC);
	test_cond(msg, ok && peak);
	/* the product through the codes against float32's: the codes' noise */
	matmul_backward_fp8_cpu(dx, dq, sd, wq, sw, n, IC, OC);
	double e = 0, r = 0;
	for (int t = 0; t < n; t++)
		for (int i = 0; i < IC; i++) {
			double s = 0;
			for (int o = 0; o < OC; o++)
				s += (double)dout[(size_t)t * OC + o] * w[(size_t)o * IC + i];
			e += (dx[(size_t)t * IC + i] - s) * (dx[(size_t)t * IC + i] - s), r += s * s;
		}
	snprintf(msg, sizeof msg, "fp8 product n=%d IC=%d OC=%d: relative error %.4f within e4m3's (0.005..0.06)", n,
	         IC, OC, sqrt(e / r));
	test_cond(msg, sqrt(e / r) > 0.005 && sqrt(e / r) < 0.06);
	free(dout), free(w), free(dx), free(sd), free(sw), free(dq), free(wq);
}

/* the forward's product (--forward fp8): out = x w^T + b through x's and
 * w's row codes, exactly the product of those codes; the codes' noise
 * against float32's; a bf16 weight the same as the float32 of its values */
static void test_forward_product(int n, int IC, int OC)
{
	size_t nx = (size_t)n * IC, nw = (size_t)OC * IC, no = (size_t)n * OC;
	float *x = mallocCheck(nx * 4), *w = mallocCheck(nw * 4), *b = mallocCheck((size_t)OC * 4);
	float *out = mallocCheck(no * 4), *out16 = mallocCheck(no * 4), *sx = mallocCheck((size_t)n * 4),
	      *sw = mallocCheck((size_t)OC * 4);
	uint16_t *w16 = mallocCheck(nw * 2);
	uint8_t *xq = mallocCheck(nx), *wq = mallocCheck(nw);
	for (size_t i = 0; i < nx; i++)
		x[i] = test_frand() * (i % 11 == 0 ? 20 : 1); /* outlying channels, as activations have */
	for (size_t i = 0; i < nw; i++)
		w16[i] = f32_to_bf16(0.05f * test_frand() * (1 + (float)(i / IC % 3))), w[i] = bf16_to_f32(w16[i]);
	for (int o = 0; o < OC; o++)
		b[o] = 0.1f * test_frand();
	Tensor wt = {DT_F32, 2, {OC, IC}, w}, wb = {DT_BF16, 2, {OC, IC}, w16}, bt = {DT_F32, 1, {OC}, b};
	matmul_forward_fp8_cpu(out, x, &wt, &bt, n, IC, OC);
	matmul_forward_fp8_cpu(out16, x, &wb, &bt, n, IC, OC);
	fp8_rows_cpu(xq, sx, x, n, IC);
	fp8_rows_cpu(wq, sw, w, OC, IC);
	double e = 0, r = 0, de = 0;
	for (int t = 0; t < n; t++)
		for (int o = 0; o < OC; o++) {
			double s = 0, q = 0;
			for (int i = 0; i < IC; i++) {
				s += (double)x[(size_t)t * IC + i] * w[(size_t)o * IC + i];
				q += (double)fp8_e4m3_value(xq[(size_t)t * IC + i]) *
				     fp8_e4m3_value(wq[(size_t)o * IC + i]);
			}
			s += b[o], q = (float)(q * sx[t] * sw[o]) + b[o];
			double got = out[(size_t)t * OC + o];
			de = fmax(de, fabs(got - q) / (fabs(q) + 1e-6));
			e += (got - s) * (got - s), r += s * s;
		}
	char msg[160];
	snprintf(msg, sizeof msg, "fp8 forward product n=%d IC=%d OC=%d: the codes' product plus b (%.1e); bf16 w alike",
	         n, IC, OC, de);
	test_cond(msg, de < 1e-6 && !memcmp(out, out16, no * 4));
	snprintf(msg, sizeof msg,
	         "fp8 forward product n=%d IC=%d OC=%d: relative error %.4f within e4m3's (0.005..0.06)", n, IC, OC,
	         sqrt(e / r));
	test_cond(msg, sqrt(e / r) > 0.005 && sqrt(e / r) < 0.06);
	free(x), free(w), free(b), free(out), free(out16), free(sx), free(sw), free(w16), free(xq), free(wq);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	test_seed(7);
	test_codes();
	test_rows_and_product(9, 48, 64);
	test_rows_and_product(33, 80, 1000);
	test_forward_product(7, 96, 40);
	test_forward_product(20, 512, 130);
	return test_report();
}
