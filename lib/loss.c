/*
 * loss: the reference vocabulary projection with its loss (the contract is
 * in loss.h). Per chunk of VOCAB_LOSS_CPU_ROWS rows:
 *   1. the chunk's logits (and the teacher's) by matmul_forward_cpu, or
 *      with vocab_loss_logits8_cpu through e4m3 codes (the rows' made
 *      a chunk at a time, W's by its rows once a call, lm_rows),
 *   2. each row's softmax normalisers, loss and dz, dz in place of the
 *      logits (one thread per row, double sums),
 *   3. dhidden = dz @ W by matmul_backward_cpu (float32 sums over v in
 *      order; once double sums in plain loops, a third of a CPU search
 *      step at the 0.5B teacher's V 151936), or with vocab_loss_fp8_cpu
 *      through e4m3 codes (W's made once a call, lm_codes).
 * The specification of kernels/loss.cu.
 */
#include "loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fp8.h"     // defines: fp8_e4m3, fp8_rows_cpu, matmul_backward_fp8_cpu
#include "ops_cpu.h" // defines: matmul_forward_cpu
#include "util.h"    // defines: ASSERT, mallocCheck


/* log sum_v exp(z_v) in double, the max subtracted first so that no exp
 * overflows */
static double logsumexp(const float *z, int V)
{
	float mx = -INFINITY;
	for (int v = 0; v < V; v++)
		mx = z[v] > mx ? z[v] : mx;
	double s = 0;
	for (int v = 0; v < V; v++)
		s += exp((double)z[v] - mx);
	return mx + log(s);
}

/* row_ce returns the cross-entropy of one row of logits z (V) against
 * target (< 0: ignored, 0). With grad, z becomes
 * scale * (softmax(z) - onehot(target)). */
static double row_ce(float *z, int target, int V, float scale, int grad)
{
	if (target < 0) {
		if (grad)
			memset(z, 0, (size_t)V * sizeof(float));
		return 0;
	}
	double lse = logsumexp(z, V), loss = lse - z[target];
	if (grad)
		for (int v = 0; v < V; v++)
			z[v] = (float)(scale * (exp((double)z[v] - lse) - (v == target)));
	return loss;
}

/* row_kl returns KL(softmax(zt) || softmax(z)) of one row (V). With grad, z
 * becomes scale * (softmax(z) - softmax(zt)). When z and zt hold the same
 * values every term is exactly 0, loss and gradient. */
static double row_kl(float *z, const float *zt, int V, float scale, int grad)
{
	double lse = logsumexp(z, V), lset = logsumexp(zt, V), kl = 0;
	for (int v = 0; v < V; v++) {
		double lps = z[v] - lse, lpt = zt[v] - lset, pt = exp(lpt);
		kl += pt * (lpt - lps);
		if (grad)
			z[v] = (float)(scale * (exp(lps) - pt));
	}
	return kl;
}

/* W (V, C)'s e4m3 codes by its columns, w^T (C, V), and their scales (C),
 * as fp8_cols_t_cpu makes them of W in float32, which is converted here a
 * block of rows at a time (twice: the amax, then the codes) */
static void lm_codes(uint8_t *q, float *sw, const Tensor *w, int V, int C)
{
	float *blk = mallocCheck((size_t)VOCAB_LOSS_CPU_ROWS * C * sizeof(float));
	float *amax = callocCheck((size_t)C, sizeof(float)), *inv = mallocCheck((size_t)C * sizeof(float));
	size_t es = dtype_size(w->dtype);
	for (int pass = 0; pass < 2; pass++)
		for (int v0 = 0; v0 < V; v0 += VOCAB_LOSS_CPU_ROWS) {
			int nv = V - v0 < VOCAB_LOSS_CPU_ROWS ? V - v0 : VOCAB_LOSS_CPU_ROWS;
			convert_to_f32(blk, (const char *)w->data + (size_t)v0 * C * es, w->dtype, (size_t)nv * C);
			for (int v = 0; v < nv; v++)
				for (int i = 0; i < C; i++) {
					float x = blk[(size_t)v * C + i];
					if (pass == 0)
						amax[i] = fmaxf(amax[i], fabsf(x));
					else
						q[(size_t)i * V + v0 + v] = fp8_e4m3(x * inv[i]);
				}
			if (pass == 0 && v0 + nv == V)
				for (int i = 0; i < C; i++)
					inv[i] = fp8_inv(amax[i]), sw[i] = fp8_scale(amax[i]);
		}
	free(blk), free(amax), free(inv);
}

/* W (V, C)'s e4m3 codes by its rows (V, C) and their scales (V), as
 * fp8_rows_cpu makes them of W in float32, converted a block of rows at a
 * time */
static void lm_rows(uint8_t *q, float *sw, const Tensor *w, int V, int C)
{
	float *blk = mallocCheck((size_t)VOCAB_LOSS_CPU_ROWS * C * sizeof(float));
	size_t es = dtype_size(w->dtype);
	for (int v0 = 0; v0 < V; v0 += VOCAB_LOSS_CPU_ROWS) {
		int nv = V - v0 < VOCAB_LOSS_CPU_ROWS ? V - v0 : VOCAB_LOSS_CPU_ROWS;
		convert_to_f32(blk, (const char *)w->data + (size_t)v0 * C * es, w->dtype, (size_t)nv * C);
		fp8_rows_cpu(q + (size_t)v0 * C, sw + v0, blk, nv, C);
	}
	free(blk);
}

/* z (nr, V) = x (nr, C) W^T through e4m3: x's rows into codes xq (nr, C),
 * sx (nr), then the product with W's row codes wq (V, C), sw (V) */
static void logits8(float *z, uint8_t *xq, float *sx, const float *x, const uint8_t *wq, const float *sw, int nr,
                    int C, int V)
{
	fp8_rows_cpu(xq, sx, x, nr, C);
	matmul_backward_fp8_cpu(z, xq, sx, wq, sw, nr, V, C); /* the product of two row-coded sides */
}

/* vocab_loss_cpu, or with fp8 vocab_loss_fp8_cpu; with lg8 the logits
 * through e4m3 (vocab_loss_logits8_cpu) */
static double vocab_loss(float *dhidden, float *row_loss, const float *hidden, const float *teacher_hidden,
                         const int32_t *targets, const Tensor *w, int n, int C, int V, float scale, int fp8, int lg8)
{
	ASSERT((targets != NULL) != (teacher_hidden != NULL));
	ASSERT(dtype_is_float(w->dtype) && w->ndim == 2 && w->shape[0] == V && w->shape[1] == C);
	if (n <= 0)
		return 0;
	for (int t = 0; targets && t < n; t++)
		ASSERT(targets[t] < V);
	int kl = teacher_hidden != NULL, grad = dhidden != NULL;
	int R = n < VOCAB_LOSS_CPU_ROWS ? n : VOCAB_LOSS_CPU_ROWS;
	size_t zn = (size_t)R * V;
	float *z = mallocCheck(zn * (kl ? 2 : 1) * sizeof(float)); // (R, V), then the teacher's (R, V)
	float *zt = kl ? z + zn : NULL;
	double total = 0, rl[VOCAB_LOSS_CPU_ROWS];
	uint8_t *wq = NULL, *dq = NULL, *wr = NULL, *xq = NULL;
	float *sw = NULL, *sd = NULL, *swr = NULL, *sx = NULL;
	if (lg8) {
		wr = mallocCheck((size_t)V * C), swr = mallocCheck((size_t)V * sizeof(float));
		xq = mallocCheck((size_t)R * C), sx = mallocCheck((size_t)R * sizeof(float));
		lm_rows(wr, swr, w, V, C);
	}
	if (grad && fp8) {
		wq = mallocCheck((size_t)C * V), sw = mallocCheck((size_t)C * sizeof(float));
		dq = mallocCheck(zn), sd = mallocCheck((size_t)R * sizeof(float));
		lm_codes(wq, sw, w, V, C);
	}
	for (int r0 = 0; r0 < n; r0 += R) {
		int nr = n - r0 < R ? n - r0 : R;
		if (lg8) {
			logits8(z, xq, sx, hidden + (size_t)r0 * C, wr, swr, nr, C, V);
			if (kl)
				logits8(zt, xq, sx, teacher_hidden + (size_t)r0 * C, wr, swr, nr, C, V);
		} else {
			matmul_forward_cpu(z, hidden + (size_t)r0 * C, w, NULL, nr, C, V);
			if (kl)
				matmul_forward_cpu(zt, teacher_hidden + (size_t)r0 * C, w, NULL, nr, C, V);
		}
		#pragma omp parallel for schedule(static)
		for (int r = 0; r < nr; r++)
			rl[r] = kl ? row_kl(z + (size_t)r * V, zt + (size_t)r * V, V, scale, grad)
			           : row_ce(z + (size_t)r * V, targets[r0 + r], V, scale, grad);
		/* the total in row order, whatever the chunking */
		for (int r = 0; r < nr; r++) {
			total += rl[r];
			if (row_loss)
				row_loss[r0 + r] = (float)rl[r];
		}
		/* dh (nr, C) = dz (nr, V) @ W (V, C): the blocked GEMM, each sum
		 * over v in order (lib/ops_cpu.c), whatever the thread count */
		if (grad && fp8) {
			fp8_rows_cpu(dq, sd, z, nr, V);
			matmul_backward_fp8_cpu(dhidden + (size_t)r0 * C, dq, sd, wq, sw, nr, C, V);
		} else if (grad) {
			matmul_backward_cpu(dhidden + (size_t)r0 * C, z, w, nr, C, V);
		}
	}
	free(z), free(wq), free(sw), free(dq), free(sd), free(wr), free(swr), free(xq), free(sx);
	return scale * total;
}

double vocab_loss_cpu(float *dhidden, float *row_loss, const float *hidden, const float *teacher_hidden,
                      const int32_t *targets, const Tensor *w, int n, int C, int V, float scale)
{
	return vocab_loss(dhidden, row_loss, hidden, teacher_hidden, targets, w, n, C, V, scale, 0, 0);
}

double vocab_loss_fp8_cpu(float *dhidden, float *row_loss, const float *hidden, const float *teacher_hidden,
                          const int32_t *targets, const Tensor *w, int n, int C, int V, float scale)
{
	return vocab_loss(dhidden, row_loss, hidden, teacher_hidden, targets, w, n, C, V, scale, 1, 0);
}

double vocab_loss_logits8_cpu(float *dhidden, float *row_loss, const float *hidden, const float *teacher_hidden,
                              const int32_t *targets, const Tensor *w, int n, int C, int V, float scale, int grad_fp8)
{
	return vocab_loss(dhidden, row_loss, hidden, teacher_hidden, targets, w, n, C, V, scale, grad_fp8 != 0, 1);
}
