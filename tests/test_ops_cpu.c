/* test_ops_cpu: the reference operators against plain double-precision
 * formulas, at awkward shapes; the float conversions exhaustively. */
#include <string.h>

#include "ops_cpu.h"
#include "test.h"
#include "util.h"

static void test_conversions(void)
{
	int ok16 = 1, okb = 1;
	for (uint32_t h = 0; h < 65536; h++) {
		float f = f16_to_f32((uint16_t)h);
		if (f == f && f32_to_f16(f) != h)
			ok16 = 0;
		float g = bf16_to_f32((uint16_t)h);
		if (g == g && f32_to_bf16(g) != h)
			okb = 0;
	}
	test_cond("every f16 bit pattern survives f16 -> f32 -> f16", ok16);
	test_cond("every bf16 bit pattern survives bf16 -> f32 -> bf16", okb);
	int near = 1;
	for (int i = 0; i < 200000; i++) {
		float f = test_frand() * (i % 3 == 0 ? 70000.0f : i % 3 == 1 ? 1.0f : 1e-5f);
		_Float16 ref = (_Float16)f; /* the compiler's IEEE rounding */
		uint16_t rb;
		memcpy(&rb, &ref, 2);
		if (f32_to_f16(f) != rb)
			near = 0;
	}
	test_cond("f32 -> f16 rounds to nearest even like the compiler, normals, subnormals, overflow", near);
	test_cond("f32 -> bf16 rounds ties to even",
	          f32_to_bf16(1.0f + 1.0f / 256) == 0x3f80 && f32_to_bf16(1.0f + 3.0f / 256) == 0x3f82 &&
	          f32_to_bf16(1.0f + 1.0f / 256 + 1.0f / 65536) == 0x3f81);
}

static void test_matmul(int n, int IC, int OC, DType t, int bias)
{
	float *x = mallocCheck((size_t)n * IC * 4), *w = mallocCheck((size_t)OC * IC * 4);
	float *b = mallocCheck((size_t)OC * 4), *out = mallocCheck((size_t)n * OC * 4);
	uint16_t *w16 = mallocCheck((size_t)OC * IC * 2), *b16 = mallocCheck((size_t)OC * 2);
	double *ref = mallocCheck((size_t)n * OC * 8);
	for (int i = 0; i < n * IC; i++)
		x[i] = test_frand();
	for (int i = 0; i < OC * IC; i++) {
		w[i] = test_frand();
		w16[i] = t == DT_BF16 ? f32_to_bf16(w[i]) : f32_to_f16(w[i]);
		if (t != DT_F32)
			w[i] = t == DT_BF16 ? bf16_to_f32(w16[i]) : f16_to_f32(w16[i]);
	}
	for (int i = 0; i < OC; i++) {
		b[i] = test_frand();
		b16[i] = t == DT_BF16 ? f32_to_bf16(b[i]) : f32_to_f16(b[i]);
		if (t != DT_F32)
			b[i] = t == DT_BF16 ? bf16_to_f32(b16[i]) : f16_to_f32(b16[i]);
	}
	for (int r = 0; r < n; r++)
		for (int o = 0; o < OC; o++) {
			double s = bias ? b[o] : 0;
			for (int i = 0; i < IC; i++)
				s += (double)x[(size_t)r * IC + i] * w[(size_t)o * IC + i];
			ref[(size_t)r * OC + o] = s;
		}
	Tensor W = {.dtype = t, .ndim = 2, .shape = {OC, IC}, .data = t == DT_F32 ? (void *)w : (void *)w16};
	Tensor Bv = {.dtype = t, .ndim = 1, .shape = {OC}, .data = t == DT_F32 ? (void *)b : (void *)b16};
	Tensor none = {0};
	matmul_forward_cpu(out, x, &W, bias ? &Bv : &none, n, IC, OC);
	char msg[128];
	snprintf(msg, sizeof msg, "matmul n=%d IC=%d OC=%d %s%s matches double", n, IC, OC, dtype_name(t),
	         bias ? " +bias" : "");
	test_cond(msg, check_tensor("matmul", out, ref, (size_t)n * OC, 1e-5, 1e-5));
	free(x), free(w), free(b), free(out), free(w16), free(b16), free(ref);
}

/* attention in double: the definition */
static void attention_ref(double *out, const float *q, const float *k, const float *v, int B, int T,
                          int H, int G, int D, int W)
{
	double p[64];
	for (int b = 0; b < B; b++)
		for (int h = 0; h < H; h++)
			for (int t = 0; t < T; t++) {
				int g = h / (H / G);
				double mx = -1e300, z = 0;
				for (int s = 0; s <= t; s++) {
					p[s] = -1e300;
					if (W > 0 && s <= t - W)
						continue;
					double d = 0;
					for (int i = 0; i < D; i++)
						d += (double)q[((b * T + t) * H + h) * D + i] * k[((b * T + s) * G + g) * D + i];
					p[s] = d / sqrt((double)D);
					mx = p[s] > mx ? p[s] : mx;
				}
				for (int s = 0; s <= t; s++)
					z += p[s] > -1e299 ? exp(p[s] - mx) : 0;
				for (int i = 0; i < D; i++) {
					double o = 0;
					for (int s = 0; s <= t; s++)
						if (p[s] > -1e299)
							o += exp(p[s] - mx) / z * v[((b * T + s) * G + g) * D + i];
					out[((b * T + t) * H + h) * D + i] = o;
				}
			}
}

static void test_attention(int B, int T, int H, int G, int D, int W)
{
	size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * G * D;
	float *q = mallocCheck(nq * 4), *k = mallocCheck(nk * 4), *v = mallocCheck(nk * 4), *o = mallocCheck(nq * 4);
	double *ref = mallocCheck(nq * 8);
	for (size_t i = 0; i < nq; i++)
		q[i] = 2 * test_frand();
	for (size_t i = 0; i < nk; i++)
		k[i] = 2 * test_frand(), v[i] = test_frand();
	attention_forward_cpu(o, q, k, v, B, T, H, G, D, W);
	attention_ref(ref, q, k, v, B, T, H, G, D, W);
	char msg[128];
	snprintf(msg, sizeof msg, "attention B=%d T=%d H=%d G=%d D=%d window=%d matches double", B, T, H, G, D, W);
	test_cond(msg, check_tensor("attn", o, ref, nq, 1e-6, 1e-5));
	/* the decoding step for the last position of sequence 0 gives its row */
	float *step = mallocCheck((size_t)H * D * 4);
	attention_step_cpu(step, q + (size_t)(T - 1) * H * D, k, v, T, H, G, D, W);
	snprintf(msg, sizeof msg, "attention_step T=%d window=%d equals the last row of the forward", T, W);
	test_cond(msg, memcmp(step, o + (size_t)(T - 1) * H * D, (size_t)H * D * 4) == 0);
	free(step);
	free(q), free(k), free(v), free(o), free(ref);
}

static void test_rope_rmsnorm(void)
{
	int B = 2, T = 7, NH = 3, D = 8;
	size_t n = (size_t)B * T * NH * D;
	float *x = mallocCheck(n * 4), *y = mallocCheck(n * 4), inv[4] = {1.0f, 0.3f, 0.05f, 0.001f};
	double *ref = mallocCheck(n * 8);
	for (size_t i = 0; i < n; i++)
		x[i] = y[i] = test_frand();
	rope_forward_cpu(y, inv, B, T, 0, NH, D);
	for (int bt = 0; bt < B * T; bt++)
		for (int h = 0; h < NH; h++)
			for (int i = 0; i < D / 2; i++) {
				double a = (double)(bt % T) * inv[i];
				const float *xh = x + ((size_t)bt * NH + h) * D;
				double *rh = ref + ((size_t)bt * NH + h) * D;
				rh[i] = xh[i] * cos(a) - xh[i + D / 2] * sin(a);
				rh[i + D / 2] = xh[i + D / 2] * cos(a) + xh[i] * sin(a);
			}
	test_cond("rope rotates the pairs (i, i + D/2) by pos * inv_freq, per sequence",
	          check_tensor("rope", y, ref, n, 1e-6, 1e-6));

	int C = 37;
	float w[37];
	for (int i = 0; i < C; i++)
		w[i] = 1 + test_frand();
	Tensor W = {.dtype = DT_F32, .ndim = 1, .shape = {C}, .data = w};
	rmsnorm_forward_cpu(y, x, &W, 5, C, 1e-5f);
	for (int r = 0; r < 5; r++) {
		double ss = 0;
		for (int i = 0; i < C; i++)
			ss += (double)x[r * C + i] * x[r * C + i];
		for (int i = 0; i < C; i++)
			ref[r * C + i] = x[r * C + i] / sqrt(ss / C + 1e-5) * w[i];
	}
	test_cond("rmsnorm matches double", check_tensor("rmsnorm", y, ref, 5 * (size_t)C, 1e-6, 1e-6));
	free(x), free(y), free(ref);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	test_seed(0x9e3779b97f4a7c15ULL);
	test_conversions();
	test_matmul(1, 3, 1, DT_F32, 0);
	test_matmul(70, 37, 13, DT_BF16, 1);
	test_matmul(130, 64, 9, DT_F16, 1);
	test_matmul(65, 128, 16, DT_F32, 1);
	test_attention(1, 1, 2, 1, 4, 0);
	test_attention(2, 13, 4, 2, 6, 0);
	test_attention(2, 13, 4, 2, 6, 4);
	test_attention(1, 9, 3, 3, 8, 1);
	test_attention(1, 9, 4, 1, 8, 50);
	test_rope_rmsnorm();
	return test_report();
}
