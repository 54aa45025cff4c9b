/*
 * fp8: float8 e4m3 for the backward's products (search-logits --grad fp8)
 * and the supernet's forward's (--forward fp8, matmul_forward_fp8_cpu).
 * e4m3: a sign, 4 exponent bits (bias 7), 3 mantissa bits, no infinities;
 * 448 the largest finite value, 2^-9 the smallest subnormal. A matrix is
 * held as e4m3 codes and a float32 scale a row: row r's largest |x| maps to
 * 448 (inv = 448 / amax, q = e4m3(x inv), scale = amax / 448), so x is
 * about q scale. The product dx = dout w of a linear layer's backward then
 * takes dout by its rows and w by its columns (w^T's rows):
 *
 *   dx[t][i] = sd[t] sw[i] sum_o q(dout)[t][o] q(w^T)[i][o]
 *
 * the twin of cuBLASLt's float8 product with a scale vector a side
 * (kernels/fp8.cu). Each code is within 1/16 of its value (relative) in
 * the normal range; a product sums K of them, so its error is a few percent
 * of its typical size, not of its largest.
 */
#ifndef DASH_FP8_H
#define DASH_FP8_H

#include <stdint.h>

#include "tensor.h"

/* x to e4m3: round to nearest even, saturate at +-448; NaN to 0x7f */
uint8_t fp8_e4m3(float x);
/* the value of an e4m3 code */
float fp8_e4m3_value(uint8_t q);

/* a row (or column) of largest |x| amax: what its values are multiplied by
 * into codes, 448 / amax, and the scale its codes are multiplied by back,
 * amax / 448. A row of amax below FP8_AMAX_MIN codes as zeros (inv 0, scale
 * 1): a row of zeros, and one so small (a KL's dz where the student's
 * softmax is the teacher's to 1e-38) that 448 / amax would be infinite and
 * its zeros' codes NaN (0 inf). */
#define FP8_AMAX_MIN 0x1p-100f
float fp8_inv(float amax);
float fp8_scale(float amax);
/* q (n, k) and scale (n): x (n, k) a row at a time */
void fp8_rows_cpu(uint8_t *q, float *scale, const float *x, int n, int k);
/* q (IC, OC) and scale (IC): w (OC, IC) by its columns, transposed */
void fp8_cols_t_cpu(uint8_t *q, float *scale, const float *w, int OC, int IC);
/* dx (n, IC) = the product above: dq (n, OC), sd (n), wq (IC, OC), sw (IC);
 * sums in double */
void matmul_backward_fp8_cpu(float *dx, const uint8_t *dq, const float *sd, const uint8_t *wq, const float *sw, int n,
                             int IC, int OC);
/* dx (n, IC) = dout (n, OC) @ w (OC, IC) through e4m3: both quantised as
 * above, then the product (w float32, OC x IC) */
void matmul_backward_fp8_f32_cpu(float *dx, const float *dout, const float *w, int n, int IC, int OC);
/* dx (n, IC) = [d[0] | d[1] | ...] (n, sum oc) [w[0]; w[1]; ...] (sum oc,
 * IC) through e4m3: the rows side by side and the stacked weights' columns
 * quantised as one matrix each, as the CUDA backend quantises the stacked
 * weights it multiplies by in one product (d[j] (n, oc[j]) float32, w[j]
 * (oc[j], IC) of any dtype convert_to_f32 reads) */
void matmul_backward_fp8_cat_cpu(float *dx, int n, int IC, int nw, const float *const *d, const Tensor *const *w,
                                 const int *oc);
/* out (n, OC) = x (n, IC) w^T + b through e4m3, the forward's product
 * (search-logits --forward fp8; matmul_forward_cpu's arguments): x by its
 * rows, w (OC, IC) by its rows, out[t][o] = sx[t] sw[o] sum_i q(x)[t][i]
 * q(w)[o][i], then the bias (b NULL or empty: none) in float32 */
void matmul_forward_fp8_cpu(float *out, const float *x, const Tensor *w, const Tensor *b, int n, int IC, int OC);

#endif
