/*
 * ops_cpu: the reference operators. Clear loops first; the matmul alone is
 * blocked (4 output rows share each pass over an input row, 8 partial sums
 * that the compiler turns into vector lanes) because every later CPU stage
 * spends its time there. Outputs are written by exactly one thread in a
 * fixed order, so results do not depend on the thread count.
 */
#include "ops_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define MM_ROWS 4   /* output rows converted to f32 together */
#define MM_TILE 64  /* input rows per pass, so that they stay in cache */

/* dot products of x (IC) with 4 rows of w (4, IC): 8 partial sums a row,
 * added in a fixed order, so every path gives the same bits */
__attribute__((target_clones("arch=x86-64-v3", "default")))
static void dot4(float out[4], const float *x, const float *w, int IC)
{
	float acc[4][8] = {{0}};
	int i = 0;
	for (; i + 8 <= IC; i += 8)
		for (int r = 0; r < 4; r++)
			for (int j = 0; j < 8; j++)
				acc[r][j] += x[i + j] * w[(size_t)r * IC + i + j];
	for (int r = 0; r < 4; r++) {
		float s = 0;
		for (int j = 0; j < 8; j++)
			s += acc[r][j];
		for (int ii = i; ii < IC; ii++)
			s += x[ii] * w[(size_t)r * IC + ii];
		out[r] = s;
	}
}

/* the same for two input rows x0, x1 at once: each weight load serves two
 * tokens (out0, out1 equal what dot4 gives for each) */
__attribute__((target_clones("arch=x86-64-v3", "default")))
static void dot4x2(float out0[4], float out1[4], const float *x0, const float *x1, const float *w, int IC)
{
	float a0[4][8] = {{0}}, a1[4][8] = {{0}};
	int i = 0;
	for (; i + 8 <= IC; i += 8)
		for (int r = 0; r < 4; r++)
			for (int j = 0; j < 8; j++) {
				float wv = w[(size_t)r * IC + i + j];
				a0[r][j] += x0[i + j] * wv;
				a1[r][j] += x1[i + j] * wv;
			}
	for (int r = 0; r < 4; r++) {
		float s0 = 0, s1 = 0;
		for (int j = 0; j < 8; j++)
			s0 += a0[r][j], s1 += a1[r][j];
		for (int ii = i; ii < IC; ii++) {
			s0 += x0[ii] * w[(size_t)r * IC + ii];
			s1 += x1[ii] * w[(size_t)r * IC + ii];
		}
		out0[r] = s0, out1[r] = s1;
	}
}

void matmul_forward_cpu(float *out, const float *x, const Tensor *w, const Tensor *b,
                        int n, int IC, int OC)
{
	int nblk = (OC + MM_ROWS - 1) / MM_ROWS;
	size_t rowb = dtype_row_bytes(w->dtype, IC);
	const uint8_t *wd = w->data;
	#pragma omp parallel
	{
		float *wrow = callocCheck((size_t)MM_ROWS * IC, sizeof(float));
		float *bias = callocCheck(MM_ROWS, sizeof(float));
		for (int t0 = 0; t0 < n; t0 += MM_TILE) {
			int t1 = t0 + MM_TILE < n ? t0 + MM_TILE : n;
			#pragma omp for schedule(static)
			for (int blk = 0; blk < nblk; blk++) {
				int o0 = blk * MM_ROWS;
				int no = OC - o0 < MM_ROWS ? OC - o0 : MM_ROWS;
				convert_to_f32(wrow, wd + (size_t)o0 * rowb, w->dtype, (size_t)no * IC);
				if (b && b->data)
					convert_to_f32(bias, (const uint8_t *)b->data + dtype_row_bytes(b->dtype, o0),
					               b->dtype, (size_t)no);
				int t = t0;
				for (; t + 1 < t1; t += 2) {
					float r0[4], r1[4];
					dot4x2(r0, r1, x + (size_t)t * IC, x + (size_t)(t + 1) * IC, wrow, IC);
					for (int j = 0; j < no; j++) {
						out[(size_t)t * OC + o0 + j] = r0[j] + bias[j];
						out[(size_t)(t + 1) * OC + o0 + j] = r1[j] + bias[j];
					}
				}
				for (; t < t1; t++) {
					float r[4];
					dot4(r, x + (size_t)t * IC, wrow, IC);
					for (int j = 0; j < no; j++)
						out[(size_t)t * OC + o0 + j] = r[j] + bias[j];
				}
			}
		}
		free(wrow);
		free(bias);
	}
}

void rmsnorm_forward_cpu(float *out, const float *x, const Tensor *w, int n, int C, float eps)
{
	float *wf = mallocCheck((size_t)C * sizeof(float));
	convert_to_f32(wf, w->data, w->dtype, (size_t)C);
	#pragma omp parallel for
	for (int t = 0; t < n; t++) {
		const float *xt = x + (size_t)t * C;
		float *ot = out + (size_t)t * C;
		double ss = 0;
		for (int i = 0; i < C; i++)
			ss += (double)xt[i] * xt[i];
		float rs = (float)(1.0 / sqrt(ss / C + eps));
		for (int i = 0; i < C; i++)
			ot[i] = xt[i] * rs * wf[i];
	}
	free(wf);
}

void embedding_forward_cpu(float *out, const int32_t *ids, const Tensor *w, int n, int C)
{
	size_t rowb = dtype_row_bytes(w->dtype, C);
	for (int t = 0; t < n; t++) {
		ASSERT(ids[t] >= 0 && ids[t] < w->shape[0]);
		convert_to_f32(out + (size_t)t * C, (const uint8_t *)w->data + (size_t)ids[t] * rowb,
		               w->dtype, (size_t)C);
	}
}

/* rope_rotate turns each pair (x[i], x[i + D/2]) of every head by
 * sign * pos * inv_freq[i]: +1 is RoPE, -1 its transpose (the backward) */
static void rope_rotate(float *x, const float *inv_freq, int B, int T, int pos0, int NH, int D, float sign)
{
	int half = D / 2;
	#pragma omp parallel for
	for (int bt = 0; bt < B * T; bt++) {
		float pos = (float)(pos0 + bt % T);
		for (int i = 0; i < half; i++) {
			/* the angle in float32, as transformers computes it */
			float ang = pos * inv_freq[i];
			float c = (float)cos((double)ang), s = sign * (float)sin((double)ang);
			for (int h = 0; h < NH; h++) {
				float *xh = x + ((size_t)bt * NH + h) * D;
				float x1 = xh[i], x2 = xh[i + half];
				xh[i] = x1 * c - x2 * s;
				xh[i + half] = x2 * c + x1 * s;
			}
		}
	}
}

void rope_forward_cpu(float *x, const float *inv_freq, int B, int T, int pos0, int NH, int D)
{
	rope_rotate(x, inv_freq, B, T, pos0, NH, D, 1.0f);
}

/* softmax_scores: the attention scores of query q (D) against the keys of
 * rows s0..s1-1 (row r at k + r*ld), exponentiated after subtracting their
 * max, into p[s0..s1-1]; returns their sum */
static double softmax_scores(float *p, const float *q, const float *k, int s0, int s1, size_t ld, int D,
                             float scale)
{
	float mx = -INFINITY;
	for (int s = s0; s < s1; s++) {
		const float *ks = k + (size_t)s * ld;
		float dot = 0;
		for (int i = 0; i < D; i++)
			dot += q[i] * ks[i];
		p[s] = dot * scale;
		mx = p[s] > mx ? p[s] : mx;
	}
	double sum = 0;
	for (int s = s0; s < s1; s++) {
		p[s] = expf(p[s] - mx);
		sum += p[s];
	}
	return sum;
}

/* attend_one: out (D) = the softmax-weighted sum of the values of rows
 * s0..s1-1 for query q; p is scratch of s1 floats */
static void attend_one(float *out, const float *q, const float *k, const float *v, int s0, int s1,
                       size_t ld, int D, float scale, float *p)
{
	double sum = softmax_scores(p, q, k, s0, s1, ld, D, scale);
	for (int i = 0; i < D; i++)
		out[i] = 0;
	for (int s = s0; s < s1; s++) {
		const float *vs = v + (size_t)s * ld;
		float w = (float)(p[s] / sum);
		for (int i = 0; i < D; i++)
			out[i] += w * vs[i];
	}
}

void attention_forward_cpu(float *out, const float *q, const float *k, const float *v,
                           int B, int T, int H, int G, int D, int window)
{
	float scale = 1.0f / sqrtf((float)D);
	int rep = H / G;
	size_t ld = (size_t)G * D;
	ASSERT(H % G == 0);
	#pragma omp parallel
	{
		float *p = mallocCheck((size_t)T * sizeof(float));
		#pragma omp for collapse(2) schedule(dynamic)
		for (int b = 0; b < B; b++)
			for (int h = 0; h < H; h++) {
				size_t kv0 = (size_t)b * T * ld + (size_t)(h / rep) * D; /* kv head h/rep, position 0 */
				for (int t = 0; t < T; t++) {
					int s0 = window > 0 && t - window + 1 > 0 ? t - window + 1 : 0;
					size_t qo = (((size_t)b * T + t) * H + h) * D;
					attend_one(out + qo, q + qo, k + kv0, v + kv0, s0, t + 1, ld, D, scale, p);
				}
			}
		free(p);
	}
}

void attention_step_cpu(float *out, const float *q, const float *kc, const float *vc, int n,
                        int H, int G, int D, int window)
{
	float scale = 1.0f / sqrtf((float)D);
	int rep = H / G, s0 = window > 0 && n - window > 0 ? n - window : 0;
	size_t ld = (size_t)G * D;
	#pragma omp parallel
	{
		float *p = mallocCheck((size_t)n * sizeof(float));
		#pragma omp for
		for (int h = 0; h < H; h++) {
			size_t kv0 = (size_t)(h / rep) * D;
			attend_one(out + (size_t)h * D, q + (size_t)h * D, kc + kv0, vc + kv0, s0, n, ld, D, scale, p);
		}
		free(p);
	}
}

void swiglu_forward_cpu(float *out, const float *gate, const float *up, int64_t n)
{
	#pragma omp parallel for
	for (int64_t i = 0; i < n; i++)
		out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void residual_forward_cpu(float *out, const float *x, int64_t n)
{
	#pragma omp parallel for
	for (int64_t i = 0; i < n; i++)
		out[i] += x[i];
}

// ----------------------------------------------------------------------------
// fused operators, as compositions of the ones above

void qkv_rope_forward_cpu(float *q, float *k, float *v, const float *qkv, const Tensor *b,
                          const float *inv_freq, int B, int T, int pos0, int H, int G, int D)
{
	int n = B * T, HD = H * D, GD = G * D, W = HD + 2 * GD;
	float *bias = callocCheck((size_t)W, sizeof(float));
	if (b && b->data)
		convert_to_f32(bias, b->data, b->dtype, (size_t)W);
	/* split the columns: q | k | v, plus the bias */
	for (int t = 0; t < n; t++) {
		const float *r = qkv + (size_t)t * W;
		for (int i = 0; i < HD; i++)
			q[(size_t)t * HD + i] = r[i] + bias[i];
		for (int i = 0; i < GD; i++) {
			k[(size_t)t * GD + i] = r[HD + i] + bias[HD + i];
			v[(size_t)t * GD + i] = r[HD + GD + i] + bias[HD + GD + i];
		}
	}
	/* then RoPE on q and k */
	rope_forward_cpu(q, inv_freq, B, T, pos0, H, D);
	rope_forward_cpu(k, inv_freq, B, T, pos0, G, D);
	free(bias);
}

void swiglu_packed_forward_cpu(float *out, const float *gu, int n, int F)
{
	#pragma omp parallel for
	for (int t = 0; t < n; t++)
		for (int j = 0; j < F; j++) {
			float g = gu[(size_t)t * 2 * F + j], u = gu[(size_t)t * 2 * F + F + j];
			out[(size_t)t * F + j] = g / (1.0f + expf(-g)) * u;
		}
}

void residual_rmsnorm_forward_cpu(float *h, float *out, const float *x, const float *a, const Tensor *w,
                                  int n, int C, float eps)
{
	if (h != x)
		memcpy(h, x, (size_t)n * C * sizeof(float));
	residual_forward_cpu(h, a, (int64_t)n * C);
	rmsnorm_forward_cpu(out, h, w, n, C, eps);
}

// ----------------------------------------------------------------------------
// backward

void matmul_backward_cpu(float *dx, const float *dout, const Tensor *w, int n, int IC, int OC)
{
	/* the weight in float32 once, then each row of dx is a sum of weight rows */
	float *wf = mallocCheck((size_t)OC * IC * sizeof(float));
	size_t rowb = dtype_row_bytes(w->dtype, IC);
	#pragma omp parallel for
	for (int o = 0; o < OC; o++)
		convert_to_f32(wf + (size_t)o * IC, (const uint8_t *)w->data + (size_t)o * rowb, w->dtype, (size_t)IC);
	#pragma omp parallel for
	for (int t = 0; t < n; t++) {
		float *dxt = dx + (size_t)t * IC;
		const float *dot = dout + (size_t)t * OC;
		for (int i = 0; i < IC; i++)
			dxt[i] = 0;
		for (int o = 0; o < OC; o++) {
			float g = dot[o];
			const float *wo = wf + (size_t)o * IC;
			for (int i = 0; i < IC; i++)
				dxt[i] += g * wo[i];
		}
	}
	free(wf);
}

void rmsnorm_backward_cpu(float *dx, const float *dout, const float *x, const Tensor *w, int n, int C,
                          float eps)
{
	float *wf = mallocCheck((size_t)C * sizeof(float));
	convert_to_f32(wf, w->data, w->dtype, (size_t)C);
	#pragma omp parallel for
	for (int t = 0; t < n; t++) {
		const float *xt = x + (size_t)t * C, *dt = dout + (size_t)t * C;
		double ss = 0, dot = 0;
		for (int i = 0; i < C; i++) {
			ss += (double)xt[i] * xt[i];
			dot += (double)dt[i] * wf[i] * xt[i];
		}
		/* y_i = x_i r w_i with r = (mean x^2 + eps)^-1/2:
		 * dx_i = r w_i dy_i - x_i r^3 / C * sum_j dy_j w_j x_j */
		double r = 1.0 / sqrt(ss / C + eps);
		double c = r * r * r * dot / C;
		for (int i = 0; i < C; i++)
			dx[(size_t)t * C + i] = (float)(r * wf[i] * dt[i] - c * xt[i]);
	}
	free(wf);
}

void rope_backward_cpu(float *d, const float *inv_freq, int B, int T, int pos0, int NH, int D)
{
	rope_rotate(d, inv_freq, B, T, pos0, NH, D, -1.0f);
}

void attention_backward_cpu(float *dq, float *dk, float *dv, const float *dout, const float *q,
                            const float *k, const float *v, int B, int T, int H, int G, int D,
                            int window)
{
	float scale = 1.0f / sqrtf((float)D);
	int rep = H / G;
	size_t ld = (size_t)G * D;
	memset(dk, 0, (size_t)B * T * ld * sizeof(float));
	memset(dv, 0, (size_t)B * T * ld * sizeof(float));
	/* one thread per (sequence, kv head): the heads that share a kv head
	 * add into the same dk, dv rows */
	#pragma omp parallel
	{
		float *p = mallocCheck((size_t)T * sizeof(float)), *dp = mallocCheck((size_t)T * sizeof(float));
		#pragma omp for collapse(2) schedule(dynamic)
		for (int b = 0; b < B; b++)
			for (int g = 0; g < G; g++) {
				size_t kv0 = (size_t)b * T * ld + (size_t)g * D;
				const float *kb = k + kv0, *vb = v + kv0;
				float *dkb = dk + kv0, *dvb = dv + kv0;
				for (int h = g * rep; h < (g + 1) * rep; h++)
					for (int t = 0; t < T; t++) {
						int s0 = window > 0 && t - window + 1 > 0 ? t - window + 1 : 0;
						size_t qo = (((size_t)b * T + t) * H + h) * D;
						const float *qt = q + qo, *dot = dout + qo;
						float *dqt = dq + qo;
						/* recompute the probabilities */
						double sum = softmax_scores(p, qt, kb, s0, t + 1, ld, D, scale);
						/* dv += p dout; dp = dout . v; ds = p (dp - sum p dp) */
						double pdp = 0;
						for (int s = s0; s <= t; s++) {
							p[s] = (float)(p[s] / sum);
							float a = 0;
							for (int i = 0; i < D; i++) {
								dvb[(size_t)s * ld + i] += p[s] * dot[i];
								a += dot[i] * vb[(size_t)s * ld + i];
							}
							dp[s] = a;
							pdp += (double)p[s] * a;
						}
						for (int i = 0; i < D; i++)
							dqt[i] = 0;
						for (int s = s0; s <= t; s++) {
							float ds = p[s] * (dp[s] - (float)pdp) * scale;
							for (int i = 0; i < D; i++) {
								dqt[i] += ds * kb[(size_t)s * ld + i];
								dkb[(size_t)s * ld + i] += ds * qt[i];
							}
						}
					}
			}
		free(p), free(dp);
	}
}

void swiglu_backward_cpu(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                         int64_t n)
{
	#pragma omp parallel for
	for (int64_t i = 0; i < n; i++) {
		float sg = 1.0f / (1.0f + expf(-gate[i])), silu = gate[i] * sg;
		dup[i] = dout[i] * silu;
		dgate[i] = dout[i] * up[i] * sg * (1.0f + gate[i] * (1.0f - sg));
	}
}

void qkv_rope_backward_cpu(float *dqkv, const float *dq, const float *dk, const float *dv,
                           const float *inv_freq, int B, int T, int pos0, int H, int G, int D)
{
	int n = B * T, HD = H * D, GD = G * D, W = HD + 2 * GD;
	/* RoPE back on copies of dq and dk, then pack q | k | v */
	float *tq = mallocCheck((size_t)n * HD * sizeof(float)), *tk = mallocCheck((size_t)n * GD * sizeof(float));
	memcpy(tq, dq, (size_t)n * HD * sizeof(float));
	memcpy(tk, dk, (size_t)n * GD * sizeof(float));
	rope_backward_cpu(tq, inv_freq, B, T, pos0, H, D);
	rope_backward_cpu(tk, inv_freq, B, T, pos0, G, D);
	for (int t = 0; t < n; t++) {
		float *r = dqkv + (size_t)t * W;
		for (int i = 0; i < HD; i++)
			r[i] = tq[(size_t)t * HD + i];
		for (int i = 0; i < GD; i++) {
			r[HD + i] = tk[(size_t)t * GD + i];
			r[HD + GD + i] = dv[(size_t)t * GD + i];
		}
	}
	free(tq), free(tk);
}

void swiglu_packed_backward_cpu(float *dgu, const float *dout, const float *gu, int n, int F)
{
	#pragma omp parallel for
	for (int t = 0; t < n; t++)
		for (int j = 0; j < F; j++) {
			float g = gu[(size_t)t * 2 * F + j], u = gu[(size_t)t * 2 * F + F + j], d = dout[(size_t)t * F + j];
			float sg = 1.0f / (1.0f + expf(-g));
			dgu[(size_t)t * 2 * F + j] = d * u * sg * (1.0f + g * (1.0f - sg)); /* dgate */
			dgu[(size_t)t * 2 * F + F + j] = d * g * sg;                        /* dup */
		}
}

void residual_rmsnorm_backward_cpu(float *dh, const float *dout, const float *dres, const float *h,
                                   const Tensor *w, int n, int C, float eps)
{
	size_t nC = (size_t)n * C;
	float *t = mallocCheck(nC * sizeof(float));
	rmsnorm_backward_cpu(t, dout, h, w, n, C, eps);
	for (size_t i = 0; i < nC; i++)
		dh[i] = dres[i] + t[i];
	free(t);
}
