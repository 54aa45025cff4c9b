/*
 * gpu: the C interface of kernels/ (built into kernels/libdash_cuda.a when
 * nvcc is found). Each launcher <op>_cuda is the twin of <op>_cpu in
 * lib/ops_cpu.h, with the same argument order; d_ pointers are device
 * memory. Activations and weights are bf16 on the device (bf16_t here, the
 * bits of __nv_bfloat16); arithmetic is float32. All launchers run on the
 * default stream and check their launch.
 */
#ifndef DASH_GPU_H
#define DASH_GPU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint16_t bf16_t;

#include "train.h" // defines: AdamSeg, AdamStep

/* cuda_device_count returns the number of usable GPUs, 0 when there is no
 * driver or no device (never an error). */
int cuda_device_count(void);
/* cuda_device_name writes "NVIDIA H100 80GB HBM3 (sm_90, 79.2 GiB)" for
 * device i into buf. */
void cuda_device_name(int i, char *buf, size_t n);

/* ---------------------------------------------------------------------------
 * memory */

void *gpu_alloc(size_t bytes);               /* dies on failure */
void gpu_free(void *d);
void gpu_upload(void *d, const void *h, size_t bytes);
void gpu_download(void *h, const void *d, size_t bytes);
void gpu_zero(void *d, size_t bytes);
void gpu_sync(void);

/* ---------------------------------------------------------------------------
 * operators (shapes as in lib/ops_cpu.h) */

/* out (n, OC) = x (n, IC) @ w^T (+ b);  w (OC, IC), b (OC) or NULL. cuBLAS,
 * float32 accumulation. */
void matmul_forward_cuda(bf16_t *d_out, const bf16_t *d_x, const bf16_t *d_w, const bf16_t *d_b, int n,
                         int IC, int OC);
/* out (n, OC) += s b (OC): a bias, scaled (matmul_forward_cuda's with s 1) */
void add_bias_cuda(bf16_t *d_out, const bf16_t *d_b, float s, int n, int OC);
/* dx (n, IC) = dout (n, OC) @ w (OC, IC) */
void matmul_backward_cuda(bf16_t *d_dx, const bf16_t *d_dout, const bf16_t *d_w, int n, int IC, int OC);
/* out (n, OC) = res (n, OC) + x (n, IC) @ w^T in one GEMM (the residual as
 * its addend, beta 1: the sum rounded to bf16 once); out may be res. The
 * composition of matmul_forward_cpu (no bias) and residual_forward_cpu, up
 * to a rounding: the product is not rounded to bf16 before the add. */
void matmul_forward_residual_cuda(bf16_t *d_out, const bf16_t *d_x, const bf16_t *d_w, const bf16_t *d_res, int n,
                                  int IC, int OC);

/* The backward's product in float8 e4m3 (lib/fp8.h, kernels/fp8.cu): codes
 * q and a float32 scale a row. fp8_rows_cuda quantises x (n, k) by its
 * rows; fp8_cols_t_cuda w (OC, IC) by its columns into w^T (IC, OC);
 * swiglu_packed_backward_fp8_cuda is swiglu_packed_backward_cuda with dgu
 * (n, 2F) written as codes, the same codes as fp8_rows_cuda makes of that
 * kernel's dgu (returns 0, having done nothing, where F is not a multiple
 * of 8, above 51200, or a pointer is not 16-byte aligned: then use those
 * two). matmul_backward_fp8_cuda:
 * dx (n, IC) = (or, acc 1, +=) dq (n, OC) wq (IC, OC)^T scaled by sd (n)
 * and sw (IC); dx float32 (f32 1) or bf16; IC and OC multiples of 16,
 * codes 16-byte aligned; cuBLASLt, Hopper or newer. */
void fp8_rows_cuda(uint8_t *d_q, float *d_scale, const bf16_t *d_x, int n, int k);
/* the same of rows ldx values apart in d_x (the codes still k apart) */
void fp8_rows_ld_cuda(uint8_t *d_q, float *d_scale, const bf16_t *d_x, int64_t ldx, int n, int k);
void fp8_cols_t_cuda(uint8_t *d_q, float *d_scale, const bf16_t *d_w, int OC, int IC);
int swiglu_packed_backward_fp8_cuda(uint8_t *d_q, float *d_scale, const bf16_t *d_dout, const bf16_t *d_gu, int n,
                                    int F);
void matmul_backward_fp8_cuda(void *d_dx, int f32, int acc, const uint8_t *d_dq, const float *d_sd, const uint8_t *d_wq,
                              const float *d_sw, int n, int IC, int OC);
/* how the e4m3 products that follow sum (kernels/matmul.cu): mode 0 (the
 * start) cuBLASLt's split float32 accumulation, 1 the tensor cores' own
 * accumulator (faster, less exact) where k is at most 65536, 2 that at
 * any k (benchmarks) */
void matmul_fp8_fast(int mode);
/* fp8_unfused: DASH_FP8_UNFUSED set and not 0, read at every call. Then
 * every kernel below that writes its output straight into codes (an
 * int-returning *_fp8_cuda) declines, as it does where its widths do not
 * allow it, and the codes come from the plain kernel and fp8_rows_cuda:
 * the same bytes (the tests check the fused kernels so). */
int fp8_unfused(void);
/* matmul_forward_fp8_cuda: the forward's product in e4m3 (search-logits
 * --forward fp8), the twin of matmul_forward_fp8_cpu: out (n, OC) = [res +]
 * xq (n, IC) wq (OC, IC)^T scaled by sx (n) and sw (OC), x's codes by
 * fp8_rows_cuda, w's by fp8_rows_cuda of w itself (its rows); out may be
 * res; IC and OC multiples of 16, as above. */
void matmul_forward_fp8_cuda(bf16_t *d_out, const bf16_t *d_res, const uint8_t *d_xq, const float *d_sx,
                             const uint8_t *d_wq, const float *d_sw, int n, int IC, int OC);
/* the same product into float32 out (n, OC), rows OC apart, no addend (the
 * vocabulary's logits under --forward fp8-all: cuBLASLt takes a float32 D
 * with e4m3 A, B and the outer-vector scales, as matmul_backward_fp8_cuda's
 * f32 1 does) */
void matmul_forward_fp8_f32_cuda(float *d_out, const uint8_t *d_xq, const float *d_sx, const uint8_t *d_wq,
                                 const float *d_sw, int n, int IC, int OC);
/* The forward's inputs written straight as codes, the same codes (and the
 * same bf16 values) as the plain kernel followed by fp8_rows_cuda: each
 * returns 0, having done nothing, where its widths or pointers do not
 * allow it (then use those two). swiglu_packed_forward_fp8_cuda: act
 * (n, F)'s codes, F a multiple of 8 up to 102400, q 8-byte and gu 16-byte
 * aligned. rmsnorm_forward_fp8_cuda: rmsnorm_forward_cuda's out (or, out
 * NULL, only its codes) and rstd, and the codes of out; C a multiple of 8,
 * out, x and w 16-byte aligned, q 8-byte; residual_rmsnorm_forward_fp8_cuda
 * the same of residual_rmsnorm_forward_cuda (h, x and a aligned too). */
int swiglu_packed_forward_fp8_cuda(uint8_t *d_q, float *d_scale, const bf16_t *d_gu, int n, int F);
int rmsnorm_forward_fp8_cuda(bf16_t *d_out, float *d_rstd, uint8_t *d_q, float *d_scale, const bf16_t *d_x,
                             const bf16_t *d_w, int n, int C, float eps);
int residual_rmsnorm_forward_fp8_cuda(bf16_t *d_h, bf16_t *d_out, float *d_rstd, uint8_t *d_q, float *d_scale,
                                      const bf16_t *d_x, const bf16_t *d_a, const bf16_t *d_w, int n, int C, float eps);
/* att_mix_cuda: out (n) = w1 a1 + w2 a2 (n a multiple of 8, 16-byte
 * aligned: a supernet's fa and swa outputs into Wo); att_mix_fp8_cuda the
 * same rows (n of k values) written only as codes, 0 where k or the
 * pointers do not allow it */
void att_mix_cuda(bf16_t *d_out, float w1, const bf16_t *d_a1, float w2, const bf16_t *d_a2, int64_t n);
int att_mix_fp8_cuda(uint8_t *d_q, float *d_scale, float w1, const bf16_t *d_a1, float w2, const bf16_t *d_a2, int n,
                     int k);
/* residual_rmsnorm_backward_fp8_cuda: residual_rmsnorm_backward_cuda (f32
 * 0) or its _f32 twin (f32 1), and dh's codes (--grad fp8: the next
 * product's dout), 0 where C or the pointers do not allow it, as above */
int residual_rmsnorm_backward_fp8_cuda(bf16_t *d_dh, uint8_t *d_q, float *d_scale, const void *d_dout, int f32,
                                       const bf16_t *d_dres, const bf16_t *d_h, const float *d_rstd, const bf16_t *d_w,
                                       int n, int C);

/* out (n, C) = x / rms(x) * w; rstd (n) keeps 1/rms for the backward */
void rmsnorm_forward_cuda(bf16_t *d_out, float *d_rstd, const bf16_t *d_x, const bf16_t *d_w, int n, int C,
                          float eps);
/* dx (n, C) from dout, x and the forward's rstd */
void rmsnorm_backward_cuda(bf16_t *d_dx, const bf16_t *d_dout, const bf16_t *d_x, const float *d_rstd,
                           const bf16_t *d_w, int n, int C);

/* out (n, C) = w[ids];  w (V, C) */
void embedding_forward_cuda(bf16_t *d_out, const int32_t *d_ids, const bf16_t *d_w, int n, int C);

/* x (B*T, NH, D) rotated in place by pos * inv_freq (pos = pos0 + t), and
 * back (the backward); inv_freq (D/2) float32 on the device */
void rope_forward_cuda(bf16_t *d_x, const float *d_inv_freq, int B, int T, int pos0, int NH, int D);
void rope_backward_cuda(bf16_t *d_dx, const float *d_inv_freq, int B, int T, int pos0, int NH, int D);

/* out (n) = silu(gate) * up, and its backward */
void swiglu_forward_cuda(bf16_t *d_out, const bf16_t *d_gate, const bf16_t *d_up, int64_t n);
void swiglu_backward_cuda(bf16_t *d_dgate, bf16_t *d_dup, const bf16_t *d_dout, const bf16_t *d_gate,
                          const bf16_t *d_up, int64_t n);

/* causal GQA attention (window W > 0: the last W keys), flash style on the
 * tensor cores: q (B*T, H, D), k, v (B*T, G, D) -> out (B*T, H, D) and
 * lse (B, H, T) float32 for the backward; D 64 or 128 */
void attention_forward_cuda(bf16_t *d_out, float *d_lse, const bf16_t *d_q, const bf16_t *d_k,
                            const bf16_t *d_v, int B, int T, int H, int G, int D, int window);
/* the full causal attention (out1, lse1) and the window window2's (out2,
 * lse2; <= 0 or >= T: the same as out1) of one q, k, v in one pass, as two
 * calls of attention_forward_cuda would give them; out2 and lse2 NULL: the
 * same pass without storing the window's (out1 the same bits) */
void attention_forward2_cuda(bf16_t *d_out1, float *d_lse1, bf16_t *d_out2, float *d_lse2, const bf16_t *d_q,
                             const bf16_t *d_k, const bf16_t *d_v, int B, int T, int H, int G, int D, int window2);

/* the backward of attention_forward_cuda: dq (B*T, H, D), dk, dv (B*T, G, D)
 * from dout, the forward's out and lse, and q, k, v. work is float32 device
 * memory of attention_backward_work(B, T, H, D) floats. */
size_t attention_backward_work(int B, int T, int H, int D);
void attention_backward_cuda(bf16_t *d_dq, bf16_t *d_dk, bf16_t *d_dv, const bf16_t *d_dout,
                             const bf16_t *d_out, const float *d_lse, const bf16_t *d_q, const bf16_t *d_k,
                             const bf16_t *d_v, int B, int T, int H, int G, int D, int window, float *d_work);
/* the same for w1 attention_W1(q, k, v) + w2 attention_W2(q, k, v), two
 * attentions of one q, k, v (windows W1, W2; a supernet's fa and swa) and
 * one dout: each with its forward's out and lse, summed in the float32
 * accumulators and rounded to bf16 once. An attention of weight 0 is left
 * out (its lse is not read, nor its out unless its dot is asked for), not
 * both. d_dot1, d_dot2 (device doubles, or NULL): += <dout, out1> and
 * <dout, out2> over all of the rows (their weights' gradients in a
 * supernet, from the rows' sums the backward makes anyway), also for an
 * attention of weight 0. d_dq, d_dk, d_dv all NULL: the gradients stay
 * float32 in d_work, dq (B*T, H, D) first, then dk and dv (B*T, G, D), dq
 * yet to be multiplied by attention_backward_qscale(D);
 * attention_convert_cuda then rounds them to bf16 as the call with outputs
 * would have, and qkv_rope_backward_fp8_acc_cuda reads them so. */
void attention_backward2_cuda(bf16_t *d_dq, bf16_t *d_dk, bf16_t *d_dv, const bf16_t *d_dout, float w1,
                              const bf16_t *d_out1, const float *d_lse1, int window1, float w2, const bf16_t *d_out2,
                              const float *d_lse2, int window2, const bf16_t *d_q, const bf16_t *d_k,
                              const bf16_t *d_v, int B, int T, int H, int G, int D, float *d_work, double *d_dot1,
                              double *d_dot2);
float attention_backward_qscale(int D);
void attention_convert_cuda(bf16_t *d_dq, bf16_t *d_dk, bf16_t *d_dv, const float *d_work, int B, int T, int H, int G,
                            int D);
/* only those dots (either NULL), where no backward runs; d_work as
 * attention_backward2_cuda's */
void attention_dots_cuda(double *d_dot1, double *d_dot2, const bf16_t *d_dout, const bf16_t *d_out1,
                         const bf16_t *d_out2, int B, int T, int H, int D, float *d_work);

/* out (n) += x */
void residual_forward_cuda(bf16_t *d_out, const bf16_t *d_x, int64_t n);

/* ---------------------------------------------------------------------------
 * fused operators of the teacher's layer (kernels/forward.cu), twins of the
 * same-named compositions in lib/ops_cpu.h */

/* qkv (B*T, H*D + 2*G*D), the packed projection (q | k | v columns), plus
 * the packed bias b (H*D + 2*G*D) or NULL -> q (B*T, H, D), k, v (B*T, G, D)
 * with RoPE on q and k (pos = pos0 + t), as attention_forward_cuda wants */
void qkv_rope_forward_cuda(bf16_t *d_q, bf16_t *d_k, bf16_t *d_v, const bf16_t *d_qkv, const bf16_t *d_b,
                           const float *d_inv_freq, int B, int T, int pos0, int H, int G, int D);
/* its backward: dqkv (B*T, H*D + 2*G*D) = dq, dk rotated back, and dv, packed */
void qkv_rope_backward_cuda(bf16_t *d_dqkv, const bf16_t *d_dq, const bf16_t *d_dk, const bf16_t *d_dv,
                            const float *d_inv_freq, int B, int T, int pos0, int H, int G, int D);
/* the same rows only as e4m3 codes by rows (--grad fp8: the Wqkv product's
 * input), qkv_rope_backward_cuda's and fp8_rows_cuda's byte for byte; 0
 * where D or the pointers do not allow it (D % 16, (H + 2 G) D / 16 at
 * most 1024, dq, dk, dv 16-byte aligned, q 8-byte) */
int qkv_rope_backward_fp8_cuda(uint8_t *d_q, float *d_scale, const bf16_t *d_dq, const bf16_t *d_dk, const bf16_t *d_dv,
                               const float *d_inv_freq, int B, int T, int pos0, int H, int G, int D);
/* the same from attention_backward2_cuda's float32 gradients left in its
 * work d_acc (called with no outputs, qscale attention_backward_qscale(D)):
 * the codes attention_convert_cuda followed by qkv_rope_backward_fp8_cuda
 * make, byte for byte, without the bf16 rows; 0 where that one's would be
 * (d_acc then 16-byte aligned) */
int qkv_rope_backward_fp8_acc_cuda(uint8_t *d_q, float *d_scale, const float *d_acc, float qscale,
                                   const float *d_inv_freq, int B, int T, int pos0, int H, int G, int D);

/* out (n, F) = silu(gu[:, :F]) * gu[:, F:];  gu (n, 2F) gate | up packed,
 * and its backward dgu (n, 2F) = dgate | dup */
void swiglu_packed_forward_cuda(bf16_t *d_out, const bf16_t *d_gu, int n, int F);
void swiglu_packed_backward_cuda(bf16_t *d_dgu, const bf16_t *d_dout, const bf16_t *d_gu, int n, int F);

/* h (n, C) = x + a (h may be x); out (n, C) = rmsnorm(h) * w, rstd (n)
 * keeps 1/rms of the bf16 h for the backward */
void residual_rmsnorm_forward_cuda(bf16_t *d_h, bf16_t *d_out, float *d_rstd, const bf16_t *d_x,
                                   const bf16_t *d_a, const bf16_t *d_w, int n, int C, float eps);
/* dh (n, C) = dres + the rmsnorm backward of dout at h (rstd from the
 * forward): the gradient with respect to x and a of the forward above when
 * dres is what reaches h along the residual stream. dh may be dres. */
void residual_rmsnorm_backward_cuda(bf16_t *d_dh, const bf16_t *d_dout, const bf16_t *d_dres, const bf16_t *d_h,
                                    const float *d_rstd, const bf16_t *d_w, int n, int C);
/* the same from float32 dout */
void residual_rmsnorm_backward_f32_cuda(bf16_t *d_dh, const float *d_dout, const bf16_t *d_dres, const bf16_t *d_h,
                                        const float *d_rstd, const bf16_t *d_w, int n, int C);

/* ---------------------------------------------------------------------------
 * the vocabulary projection fused with its loss, twin of vocab_loss_cpu
 * (lib/loss.h states the contract: cross-entropy against targets, or
 * KL(teacher || student) against teacher hidden rows) */

/* rows of float32 logits the scratch holds: one cross-entropy chunk; a KL
 * chunk is half of it (the student's logits and the teacher's) */
#ifndef VOCAB_LOSS_ROWS
#define VOCAB_LOSS_ROWS 2048
#endif

/* vocab_loss_work: bytes of device scratch vocab_loss_cuda needs, whatever
 * n: VOCAB_LOSS_ROWS rows of V (rounded up to 8) float32 logits and a
 * little, 1.24 GB at V 151936. C does not enter into it. */
size_t vocab_loss_work(int C, int V);
/* vocab_loss_cuda: d_loss (one float, written, not added to) =
 * scale * the sum of the row losses; deterministic.
 *   d_row_loss (n) float32, unscaled, or NULL
 *   d_dhidden (n, C) or NULL (forward only)
 *   d_hidden (n, C); d_teacher_hidden (n, C) or NULL; d_targets (n) or NULL
 *   (exactly one of the two; a target < 0 ignores its row)
 *   d_w (V, C); d_work: vocab_loss_work(C, V) bytes, 256-byte aligned
 * (as cudaMalloc gives) */
void vocab_loss_cuda(float *d_loss, float *d_row_loss, bf16_t *d_dhidden, const bf16_t *d_hidden,
                     const bf16_t *d_teacher_hidden, const int32_t *d_targets, const bf16_t *d_w, int n, int C,
                     int V, float scale, void *d_work);
/* vocab_loss_fp8_cuda: the same for KL, with dhidden = dz W through e4m3
 * (twin of vocab_loss_fp8_cpu): dz quantised by its rows (in the teacher
 * logits' place, read by then), d_w8 (C, V) and d_w8s (C) W's codes by its
 * columns (fp8_cols_t_cuda); V a multiple of 16, a Hopper or newer. The
 * losses are vocab_loss_cuda's. */
void vocab_loss_fp8_cuda(float *d_loss, float *d_row_loss, bf16_t *d_dhidden, const bf16_t *d_hidden,
                         const bf16_t *d_teacher_hidden, const bf16_t *d_w, const uint8_t *d_w8, const float *d_w8s,
                         int n, int C, int V, float scale, void *d_work);
/* vocab_loss_logits8_cuda: the same KL (d_w8 NULL: dhidden as
 * vocab_loss_cuda's, bf16 dz W; else as vocab_loss_fp8_cuda's) with both
 * logits through e4m3 (search-logits --forward fp8-all; twin of
 * vocab_loss_logits8_cpu): z = W h from h's codes by rows d_hq (n, C),
 * d_hs (n) and W's by rows d_wr (V, C), d_wrs (V) (fp8_rows_cuda of d_w),
 * zt from the teacher's d_tq, d_ts, each into the float32 logits the row
 * kernels read (matmul_forward_fp8_f32_cuda). C and V multiples of 16,
 * codes 16-byte aligned, a Hopper or newer. */
void vocab_loss_logits8_cuda(float *d_loss, float *d_row_loss, bf16_t *d_dhidden, const uint8_t *d_hq,
                             const float *d_hs, const uint8_t *d_tq, const float *d_ts, const bf16_t *d_w,
                             const uint8_t *d_wr, const float *d_wrs, const uint8_t *d_w8, const float *d_w8s, int n,
                             int C, int V, float scale, void *d_work);

/* ---------------------------------------------------------------------------
 * training candidates (kernels/train.cu); sums in double, deterministic.
 * d_work: train_work() bytes. */
size_t train_work(void);
/* bf16 values to float32, and back (rounded to nearest even) */
void bf16_to_f32_cuda(float *d_out, const bf16_t *d_in, size_t n);
void f32_to_bf16_cuda(bf16_t *d_out, const float *d_in, size_t n);
/* nmse_cuda: the twin of nmse_cpu (lib/train.h), the two sums left on the
 * device: d_sums (2 doubles) = |ah - a|^2, |a|^2 */
void nmse_cuda(double *d_sums, float *d_dah, const float *d_ah, const float *d_a, size_t n, void *d_work);
/* adamw_cuda: the twin of adamw_cpu (lib/train.h) */
void adamw_cuda(float *d_w, float *d_m, float *d_v, const float *d_grad, size_t n, const AdamSeg *segs, int nseg,
                const AdamStep *st, void *d_work);

/* ---------------------------------------------------------------------------
 * the linear-attention recurrences, recurrent form (kernels/linear_attn.cu),
 * twins of gdn_forward_recurrent and gla_forward_recurrent in
 * lib/linear_attn.h: float32 throughout, q, k (B, T, H, Dk), v, o (B, T, H,
 * Dv), g, beta (B, T, H), gk (B, T, H, Dk), d_S (B, H, Dk, Dv) the state in
 * and out (T = 1: a decoding step). Dk 64 or 128, Dv up to 1024. */
void gdn_forward_recurrent_cuda(float *d_o, float *d_S, const float *d_q, const float *d_k, const float *d_v,
                                const float *d_g, const float *d_beta, int B, int T, int H, int Dk, int Dv,
                                float scale);
void gla_forward_recurrent_cuda(float *d_o, float *d_S, const float *d_q, const float *d_k, const float *d_v,
                                const float *d_gk, int B, int T, int H, int Dk, int Dv, float scale);

/* GLA in chunks of 64 (kernels/gla_chunked.cu), twins of gla_forward_chunked
 * and gla_backward_chunked (chunk 64): layouts as above, Dk and Dv 1 to 128
 * (64 and 128 the fast ones), any B and T. d_S: the initial state in, the
 * final state out; NULL: zeros and no final state. In the backward d_S0 NULL
 * is a zero start, d_dSf NULL zero, and d_dS0, d_dgk NULL are not wanted.
 * d_work: gla_chunked_work bytes (both calls), 256-byte aligned as
 * cudaMalloc gives. */
size_t gla_chunked_work(int B, int T, int H, int Dk, int Dv);
void gla_forward_chunked_cuda(float *d_o, float *d_S, const float *d_q, const float *d_k, const float *d_v,
                              const float *d_gk, int B, int T, int H, int Dk, int Dv, float scale, void *d_work);
void gla_backward_chunked_cuda(float *d_dq, float *d_dk, float *d_dv, float *d_dgk, float *d_dS0,
                               const float *d_dout, const float *d_dSf, const float *d_q, const float *d_k,
                               const float *d_v, const float *d_gk, const float *d_S0, int B, int T, int H, int Dk,
                               int Dv, float scale, void *d_work);

/* the Gated DeltaNet in chunks of 64 (kernels/gdn_chunked.cu), twins of
 * gdn_forward_chunked and gdn_backward_chunked (chunk 64): layouts as above,
 * Dk and Dv 1 to 128 (64 and 128 the fast ones), any B and T. d_S: the
 * initial state in, the final state out; NULL: zeros and no final state. In
 * the backward d_S0 NULL is a zero start, d_dSf NULL zero, and d_dS0, d_dg,
 * d_dbeta NULL are not wanted. d_work: gdn_chunked_work bytes (both calls),
 * 256-byte aligned as cudaMalloc gives. */
size_t gdn_chunked_work(int B, int T, int H, int Dk, int Dv);
void gdn_forward_chunked_cuda(float *d_o, float *d_S, const float *d_q, const float *d_k, const float *d_v,
                              const float *d_g, const float *d_beta, int B, int T, int H, int Dk, int Dv, float scale,
                              void *d_work);
void gdn_backward_chunked_cuda(float *d_dq, float *d_dk, float *d_dv, float *d_dg, float *d_dbeta, float *d_dS0,
                               const float *d_dout, const float *d_dSf, const float *d_q, const float *d_k,
                               const float *d_v, const float *d_g, const float *d_beta, const float *d_S0, int B,
                               int T, int H, int Dk, int Dv, float scale, void *d_work);
/* The backward without recomputing the forward: gdn_forward_chunked_keep_cuda
 * is gdn_forward_chunked_cuda (same arguments, o and final state) that also
 * leaves in d_work all that the backward recomputes (G, Ak, the WY factors,
 * Wn and every chunk's start state); gdn_backward_chunked_kept_cuda is
 * gdn_backward_chunked_cuda (same arguments, same bits) that reads them
 * there instead of recomputing them (chunk + state pass, about 0.48 ms at
 * B 1, T 4096, H 16, D 128 on an H100). Between the two calls on one
 * d_work: the same d_q, d_k, d_v, d_g, d_beta with unchanged contents, the
 * same B, T, H, Dk, Dv, and nothing else writing d_work (no other forward,
 * gdn or gla, and no recomputing backward on it). Its gradient is that of
 * the forward as it ran, from the initial state that forward read in d_S
 * (zeros when d_S was NULL): the kept backward reads neither d_S0 nor d_g
 * (either may be NULL), so the start state is fixed by the forward. Nothing
 * checks any of this. The kept backward leaves the forward's part of d_work
 * as it was: more kept backwards (other d_dout, d_dSf) may follow.
 * tf32 (both calls alike): the state passes' products on the tensor cores
 * in TF32 (operands rounded to 10-bit mantissas) instead of float32 on the
 * CUDA cores: faster, less exact (the search's path, kernels/gpu_lop.h's
 * bf16 one); tf32 0 gives the bits of the plain calls. */
void gdn_forward_chunked_keep_cuda(float *d_o, float *d_S, const float *d_q, const float *d_k, const float *d_v,
                                   const float *d_g, const float *d_beta, int B, int T, int H, int Dk, int Dv,
                                   float scale, void *d_work, int tf32);
void gdn_backward_chunked_kept_cuda(float *d_dq, float *d_dk, float *d_dv, float *d_dg, float *d_dbeta,
                                    float *d_dS0, const float *d_dout, const float *d_dSf, const float *d_q,
                                    const float *d_k, const float *d_v, const float *d_g, const float *d_beta,
                                    const float *d_S0, int B, int T, int H, int Dk, int Dv, float scale,
                                    void *d_work, int tf32);
/* The tf32 state passes on a Hopper take each chunk's two large operands
 * by bulk copies (the same bits as by cp.async): gdn_chunked_bulk(0) turns
 * that off for the calls that follow, (1) on again (the default, unless
 * DASH_GDN_CPASYNC=1 in the environment); returns the setting before. */
int gdn_chunked_bulk(int on);

/* DASH_CHECK_FINITE=1 in the environment: says on stderr how many of n
 * values (float32 when f32, else bf16) of a device buffer are not finite,
 * naming what and layer l (a debugging aid; waits for the device). Does
 * nothing otherwise. */
void check_finite_cuda(const char *what, int l, const void *d_x, size_t n, int f32);

#ifdef __cplusplus
}
#endif
#endif
