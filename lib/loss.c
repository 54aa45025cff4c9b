/*
 * loss: the reference vocabulary projection with its loss (the contract is
 * in loss.h). Per chunk of VOCAB_LOSS_CPU_ROWS rows:
 *   1. the chunk's logits (and the teacher's) by matmul_forward_cpu,
 *   2. each row's softmax normalisers, loss and dz, dz in place of the
 *      logits (one thread per row, double sums),
 *   3. dhidden = dz @ W, W converted to float32 a block of rows at a time.
 * The plain loops are the specification of kernels/loss.cu; they are not
 * meant to be fast at the Qwen shape.
 */
#include "loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops_cpu.h" // defines: matmul_forward_cpu
#include "util.h"    // defines: ASSERT, mallocCheck

#define W_BLOCK 64 /* rows of W in float32 at a time for dhidden */

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

/* dhidden_rows: dh (nr, C) = dz (nr, V) @ W (V, C), each sum in double
 * (acc, nr * C). All threads convert a block of W_BLOCK rows of W, then each
 * thread adds the block into its own rows of acc: every sum runs over v in
 * order, so the bits do not depend on the thread count. wblk holds
 * W_BLOCK * C floats. */
static void dhidden_rows(float *dh, const float *dz, const Tensor *w, int nr, int C, int V, double *acc,
                         float *wblk)
{
	size_t rowb = dtype_row_bytes(w->dtype, C);
	const uint8_t *wd = w->data;
	memset(acc, 0, (size_t)nr * C * sizeof(double));
	#pragma omp parallel
	for (int v0 = 0; v0 < V; v0 += W_BLOCK) {
		int nb = V - v0 < W_BLOCK ? V - v0 : W_BLOCK;
		#pragma omp for schedule(static)
		for (int j = 0; j < nb; j++)
			convert_to_f32(wblk + (size_t)j * C, wd + (size_t)(v0 + j) * rowb, w->dtype, (size_t)C);
		/* the implicit barriers: the block is whole before it is read, and
		 * read by everyone before the next one overwrites it */
		#pragma omp for schedule(static)
		for (int r = 0; r < nr; r++) {
			double *a = acc + (size_t)r * C;
			for (int j = 0; j < nb; j++) {
				double g = dz[(size_t)r * V + v0 + j];
				if (g == 0) /* ignored rows, underflowed probabilities */
					continue;
				const float *wr = wblk + (size_t)j * C;
				for (int i = 0; i < C; i++)
					a[i] += g * wr[i];
			}
		}
	}
	for (size_t i = 0; i < (size_t)nr * C; i++)
		dh[i] = (float)acc[i];
}

double vocab_loss_cpu(float *dhidden, float *row_loss, const float *hidden, const float *teacher_hidden,
                      const int32_t *targets, const Tensor *w, int n, int C, int V, float scale)
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
	double *acc = grad ? mallocCheck((size_t)R * C * sizeof(double)) : NULL; // (R, C)
	float *wblk = grad ? mallocCheck((size_t)W_BLOCK * C * sizeof(float)) : NULL;
	double total = 0, rl[VOCAB_LOSS_CPU_ROWS];
	for (int r0 = 0; r0 < n; r0 += R) {
		int nr = n - r0 < R ? n - r0 : R;
		matmul_forward_cpu(z, hidden + (size_t)r0 * C, w, NULL, nr, C, V);
		if (kl)
			matmul_forward_cpu(zt, teacher_hidden + (size_t)r0 * C, w, NULL, nr, C, V);
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
		if (grad)
			dhidden_rows(dhidden + (size_t)r0 * C, z, w, nr, C, V, acc, wblk);
	}
	free(z), free(acc), free(wblk);
	return scale * total;
}
