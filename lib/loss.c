/*
 * loss: the reference vocabulary projection with its loss (the contract is
 * in loss.h). Per chunk of VOCAB_LOSS_CPU_ROWS rows:
 *   1. the chunk's logits (and the teacher's) by matmul_forward_cpu,
 *   2. each row's softmax normalisers, loss and dz, dz in place of the
 *      logits (one thread per row, double sums),
 *   3. dhidden = dz @ W by matmul_backward_cpu (float32 sums over v in
 *      order; once double sums in plain loops, a third of a CPU search
 *      step at the 0.5B teacher's V 151936).
 * The specification of kernels/loss.cu.
 */
#include "loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
		/* dh (nr, C) = dz (nr, V) @ W (V, C): the blocked GEMM, each sum
		 * over v in order (lib/ops_cpu.c), whatever the thread count */
		if (grad)
			matmul_backward_cpu(dhidden + (size_t)r0 * C, z, w, nr, C, V);
	}
	free(z);
	return scale * total;
}
