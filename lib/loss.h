/*
 * loss: the vocabulary projection fused with its loss, forward and backward,
 * for a batch of n rows, without ever holding all n x V logits at once.
 *
 * Logits z = W h for a row h (C) and W (V, C) the (tied) vocabulary
 * projection: a Tensor in any floating dtype on the CPU, bf16 on the GPU.
 * Two modes, chosen by which of targets / teacher_hidden is given (exactly
 * one of them):
 *
 *   cross-entropy (targets != NULL, teacher_hidden NULL):
 *     row loss = logsumexp(z) - z[target]
 *     A target < 0 means "ignore this row": row loss 0, zero gradient.
 *     dz = softmax(z) - onehot(target)
 *
 *   KL (teacher hidden rows g given, targets NULL): zt = W g,
 *     row loss = sum_v softmax(zt)_v (log_softmax(zt)_v - log_softmax(z)_v)
 *              = KL(teacher || student)
 *     dz = softmax(z) - softmax(zt); no gradient flows to the teacher.
 *
 * total loss = scale * sum of row losses (scale is usually 1/n), returned.
 * dhidden (n, C) = d(total)/dh = scale * dz @ W; dhidden may be NULL (forward
 * only). row_loss (n), the unscaled row losses, is optional (NULL).
 *
 * The rows are processed VOCAB_LOSS_CPU_ROWS at a time, so the memory beyond
 * the inputs and outputs is O(VOCAB_LOSS_CPU_ROWS * V) (twice that for KL),
 * and W is converted to float32 a block of rows at a time, never whole.
 * Each row's results do not depend on n, on the chunking or on the thread
 * count: the same row gives the same bits alone or in a batch.
 *
 * The GPU twin is vocab_loss_cuda in kernels/loss.cu (declared in
 * kernels/gpu.h).
 */
#ifndef DASH_LOSS_H
#define DASH_LOSS_H

#include <stdint.h>

#include "tensor.h"

#define VOCAB_LOSS_CPU_ROWS 64 /* rows whose logits are held at once */

/* vocab_loss_cpu: float32 activations, double accumulation for the
 * softmax normalisers and the losses; the rows of dhidden are float32 sums
 * over the vocabulary in order (the blocked GEMM of lib/ops_cpu.c).
 *   dhidden (n, C) or NULL, row_loss (n) or NULL   outputs
 *   hidden (n, C), teacher_hidden (n, C) or NULL, targets (n) or NULL
 *   w (V, C) any floating dtype
 * Returns scale * the sum of the row losses. */
double vocab_loss_cpu(float *dhidden, float *row_loss, const float *hidden, const float *teacher_hidden,
                      const int32_t *targets, const Tensor *w, int n, int C, int V, float scale);
/* vocab_loss_fp8_cpu: the same, with dhidden = dz W through float8 e4m3
 * (lib/fp8.h): dz quantised by its rows, W by its columns (over all V, a
 * byte a value held for the call), as the CUDA backend's --grad fp8. The
 * losses are vocab_loss_cpu's, bit for bit. */
double vocab_loss_fp8_cpu(float *dhidden, float *row_loss, const float *hidden, const float *teacher_hidden,
                          const int32_t *targets, const Tensor *w, int n, int C, int V, float scale);
/* vocab_loss_logits8_cpu: vocab_loss_cpu (grad_fp8 0) or vocab_loss_fp8_cpu
 * (1) with the logits z = W h (and the teacher's zt = W g) through e4m3
 * too (search-logits --forward fp8-all): h's rows (and g's) quantised by
 * their rows, W by its rows (a byte a value held for the call), z[t][v] =
 * sh[t] sw[v] sum_i q(h)[t][i] q(W)[v][i] summed in double
 * (matmul_backward_fp8_cpu). dhidden = dz W as the other two take it, from
 * W itself: the codes' rounding is passed through as the identity, as the
 * layers' e4m3 forwards do. A row compared with itself still gives KL 0 and
 * dz 0. The twin of vocab_loss_logits8_cuda. */
double vocab_loss_logits8_cpu(float *dhidden, float *row_loss, const float *hidden, const float *teacher_hidden,
                              const int32_t *targets, const Tensor *w, int n, int C, int V, float scale, int grad_fp8);

#endif
