/*
 * ops_cpu: the reference operators, float32, plain loops, OpenMP at most.
 * This file is the specification every CUDA kernel is checked against
 * (kernels/<op>.cu has <op>_forward_kernel and <op>_forward_cuda with the
 * same argument order). Weights are Tensor views in any floating dtype;
 * activations are float32, row-major.
 */
#ifndef DASH_OPS_CPU_H
#define DASH_OPS_CPU_H

#include <stdint.h>

#include "tensor.h"

/* out (n, OC) = x (n, IC) @ w^T + b;  w (OC, IC), b (OC) or NULL (data NULL) */
void matmul_forward_cpu(float *out, const float *x, const Tensor *w, const Tensor *b,
                        int n, int IC, int OC);

/* out (n, C) = x / sqrt(mean(x^2) + eps) * w;  w (C). out may equal x. */
void rmsnorm_forward_cpu(float *out, const float *x, const Tensor *w, int n, int C, float eps);

/* out (n, C) = w[ids] ;  w (V, C) */
void embedding_forward_cpu(float *out, const int32_t *ids, const Tensor *w, int n, int C);

/* rope_forward_cpu rotates x (B*T, NH, D) in place, HF rotate-half
 * convention: for i < D/2 and angle = pos * inv_freq[i], the pair
 * (x[i], x[i + D/2]) turns by angle. pos = pos0 + t within each sequence. */
void rope_forward_cpu(float *x, const float *inv_freq, int B, int T, int pos0, int NH, int D);

/* attention_forward_cpu: causal GQA softmax attention.
 *   q (B*T, H, D), k, v (B*T, G, D) -> out (B*T, H, D)
 * query head h reads kv head h / (H / G); scale 1/sqrt(D). window W > 0
 * restricts query t to keys t-W+1 .. t (sliding window); 0 is full. */
void attention_forward_cpu(float *out, const float *q, const float *k, const float *v,
                           int B, int T, int H, int G, int D, int window);

/* attention_step_cpu: one query position against n cached positions (the
 * last of them its own), for decoding.
 *   q (H, D), kc, vc (n, G, D) -> out (H, D); window as above */
void attention_step_cpu(float *out, const float *q, const float *kc, const float *vc, int n,
                        int H, int G, int D, int window);

/* out (n) = silu(gate) * up */
void swiglu_forward_cpu(float *out, const float *gate, const float *up, int64_t n);

/* out (n) += x */
void residual_forward_cpu(float *out, const float *x, int64_t n);

/* ---------------------------------------------------------------------------
 * fused operators: what the GPU teacher runs (kernels/ops.cu), each defined
 * here as the composition of the operators above */

/* qkv_rope_forward_cpu splits the packed projection qkv (B*T, H*D + 2*G*D)
 * (the columns of q, then k, then v) into q (B*T, H, D), k, v (B*T, G, D),
 * adds the packed bias b (H*D + 2*G*D) (data NULL: none) and rotates q and
 * k as rope_forward_cpu does */
void qkv_rope_forward_cpu(float *q, float *k, float *v, const float *qkv, const Tensor *b,
                          const float *inv_freq, int B, int T, int pos0, int H, int G, int D);

/* out (n, F) = silu(gu[:, :F]) * gu[:, F:];  gu (n, 2F) gate | up, packed */
void swiglu_packed_forward_cpu(float *out, const float *gu, int n, int F);

/* h (n, C) = x + a;  out (n, C) = rmsnorm(h) * w.  h may be x. */
void residual_rmsnorm_forward_cpu(float *h, float *out, const float *x, const float *a, const Tensor *w,
                                  int n, int C, float eps);

/* ---------------------------------------------------------------------------
 * backward, with respect to activations only (weights are frozen in every
 * stage that differentiates: the search and the candidates' inputs). Each
 * takes the forward's inputs and dout and writes (=, not +=) the gradients. */

/* dx (n, IC) = dout (n, OC) @ w (OC, IC) */
void matmul_backward_cpu(float *dx, const float *dout, const Tensor *w, int n, int IC, int OC);

/* dx (n, C) of y = rmsnorm(x) * w */
void rmsnorm_backward_cpu(float *dx, const float *dout, const float *x, const Tensor *w, int n, int C,
                          float eps);

/* rope_backward_cpu turns dy (B*T, NH, D) back into dx in place (the
 * inverse rotation) */
void rope_backward_cpu(float *d, const float *inv_freq, int B, int T, int pos0, int NH, int D);

/* dq (B*T, H, D), dk, dv (B*T, G, D) of attention_forward_cpu */
void attention_backward_cpu(float *dq, float *dk, float *dv, const float *dout, const float *q,
                            const float *k, const float *v, int B, int T, int H, int G, int D,
                            int window);

/* dgate, dup (n) of out = silu(gate) * up; dgate may not alias gate */
void swiglu_backward_cpu(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                         int64_t n);

/* dqkv (B*T, H*D + 2*G*D) of qkv_rope_forward_cpu: dq and dk rotated back,
 * packed with dv as the projection's columns are */
void qkv_rope_backward_cpu(float *dqkv, const float *dq, const float *dk, const float *dv,
                           const float *inv_freq, int B, int T, int pos0, int H, int G, int D);

/* dgu (n, 2F) of swiglu_packed_forward_cpu, dgate | dup */
void swiglu_packed_backward_cpu(float *dgu, const float *dout, const float *gu, int n, int F);

/* residual_rmsnorm_backward_cpu: dh (n, C) = dres + the rmsnorm backward of
 * dout at h, the gradient with respect to h = x + a (so to x and to a) when
 * dres is what reaches h along the residual stream. dh may be dres. */
void residual_rmsnorm_backward_cpu(float *dh, const float *dout, const float *dres, const float *h,
                                   const Tensor *w, int n, int C, float eps);

#endif
