/*
 * gpu_lop: the gdn and gla candidate operators on the GPU
 * (kernels/linear_op.cu), the twin of lop_forward and lop_backward in
 * lib/linear_op.h, which states the math. A GpuLop holds a device copy of
 * op->w (same layout, float32) and, sized once by gpu_lop_new for up to
 * max_tokens tokens (B*T) per call, one arena with every activation the
 * backward reads, the backward's scratch and the chunked recurrences'
 * work (kernels/gdn_chunked.cu, kernels/gla_chunked.cu). That work, a
 * state per chunk of 64 steps, is sized for one sequence of max_tokens;
 * B sequences whose short last chunks would not fit run through the
 * recurrences in groups that do (B*T = max_tokens with T a multiple of 64
 * runs in one call).
 *
 * Unlike its CPU twin, gpu_lop_backward does not recompute the forward: it
 * reads what the last gpu_lop_forward kept, so that forward must have run
 * on the same d_u, B and T (it dies otherwise), and nothing may have
 * changed the parameters in between.
 *
 * Precision: float32 storage and elementwise math; the GEMMs by cuBLAS
 * with CUBLAS_COMPUTE_32F_FAST_TF32: operands rounded to the nearest TF32
 * (10-bit mantissa, relative error up to 2^-11 = 4.9e-4 each; cuBLAS rounds,
 * it does not truncate: the errors measured on an H100 match a CPU
 * emulation of rounded operands to two digits), products summed in
 * float32. The rounding errors are unbiased, so a weight gradient's sum
 * over n = B*T tokens (4096 and more) gains error like sqrt(n), no faster
 * than its value grows when the terms vary in sign, and slower when they
 * agree: relative to a block's largest entry the error stays a few 1e-4
 * per GEMM whatever n. Through the operator's chains of GEMMs a, du and
 * every gradient block came within 1.4e-3 of the block's max |value|
 * (tests/test_linear_op.cu, n up to 192; gla within 7.6e-4).
 * Exception: gla's q and k projections run in float32 (CUBLAS_COMPUTE_32F;
 * about 0.7 ms more at C 2048, H*D 2048, 4096 tokens, gla's forward 2.03
 * ms against gdn's 1.30 on an H100): unnormalised, they meet
 * in o = q^T S, and the RMSNorm that follows scales each row of o to unit
 * size, cancellations and their rounding included; in TF32 the gradients'
 * error reached 1.1e-2 of their max (the emulation at the test's C 64
 * shape). Bias, onorm and A_log gradients are float32 column sums
 * (cublasSgemv, no TF32).
 *
 * Every call queues its work on the default stream and returns without
 * waiting, except gpu_lop_download.
 */
#ifndef DASH_GPU_LOP_H
#define DASH_GPU_LOP_H

#ifdef __cplusplus
extern "C" {
#endif
#include <stdint.h>

#include "linear_op.h" // defines: LinearOp, LopParam
#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct GpuLop GpuLop;
typedef struct GpuLopArena GpuLopArena;

/* gpu_lop_new uploads op->w (op need not outlive the GpuLop) and sizes
 * every buffer for B*T <= max_tokens; dies unless op is gdn or gla with D
 * in 1..128. arena NULL: the GpuLop has one of its own. Several GpuLops
 * may share one arena of at least gpu_lop_arena_bytes of each (as
 * distill-linear's many candidates do, which would not all fit otherwise):
 * then each one's backward must follow its own forward with no other
 * sharer's forward in between (checked). */
GpuLop *gpu_lop_new(const LinearOp *op, int max_tokens, GpuLopArena *arena);
size_t gpu_lop_arena_bytes(const LinearOp *op, int max_tokens);
GpuLopArena *gpu_lop_arena_new(size_t bytes);
void gpu_lop_arena_free(GpuLopArena *a);
void gpu_lop_free(GpuLop *g);
/* gpu_lop_params: the device copy of op->w (op->n floats), which the
 * caller's optimizer updates in place */
float *gpu_lop_params(GpuLop *g);
/* gpu_lop_download copies the device parameters back into op->w (an op of
 * the same kind and shape) */
void gpu_lop_download(GpuLop *g, LinearOp *op);
/* gpu_lop_forward: a (B*T, C) from u (B*T, C), device float32, B sequences
 * of T tokens each from a zero state; keeps what gpu_lop_backward reads */
void gpu_lop_forward(GpuLop *g, float *d_a, const float *d_u, int B, int T);
/* gpu_lop_forward_state: the same from given states, the twin of
 * lop_forward_state: d_S (B, H, D, D) float32 device holds each sequence's
 * recurrent state before its T tokens in, and after them out (what a
 * decoder carries from a prompt to its steps). T 1 is a decoding step of B
 * sequences (with D 64 or 128 the recurrent kernel, kernels/linear_attn.cu;
 * else the chunked ones), T a whole prompt the chunked kernels. Keeps
 * nothing for gpu_lop_backward (which then refuses). */
void gpu_lop_forward_state(GpuLop *g, float *d_a, const float *d_u, int B, int T, float *d_S);
/* gpu_lop_backward adds the gradient of every parameter to d_grad (op->n
 * floats, device, +=) and writes du (B*T, C) (=; d_du may be NULL) from da
 * (B*T, C), using the last gpu_lop_forward's activations (same d_u, B, T).
 * d_grad NULL: no parameter gradients (what a search through frozen
 * operators wants: about half the projections' GEMMs fewer, and d_u is not
 * read). */
void gpu_lop_backward(GpuLop *g, float *d_grad, float *d_du, const float *d_da, const float *d_u, int B, int T);
/* gpu_lop_forward_bf16 and gpu_lop_backward_bf16: gdn only, for a search
 * through frozen operators (kernels/supernet.cu): the same operator with
 * bf16 operands in every projection (a bf16 copy of the weights, made at
 * the first call and again after gpu_lop_params has handed the parameters
 * out; float32 sums), u and a in bf16 (B*T, C), the rest as above (the
 * recurrence, the gates, norms and their gradients in float32). The
 * backward reads what the last gpu_lop_forward_bf16 kept (same B, T) and
 * makes no parameter gradients: d_du (B*T, C) float32 = w du, or d_du + w
 * du when accumulate, in one GEMM over every projection. Precision: each
 * projection's operands rounded to bf16 (2^-9 relative), as the teacher's
 * own layers are. d_uq, d_us (d_daq, d_das): where a product in e4m3
 * (gpu_lop_forward_fp8, gpu_lop_grad_fp8) may take u's (da's) codes and
 * scales as fp8_rows_cuda makes them instead of making them (the GpuModel
 * has: gpu_model_hook_codes); NULL: made here. */
void gpu_lop_forward_bf16(GpuLop *g, uint16_t *d_a, const uint16_t *d_u, const uint8_t *d_uq, const float *d_us,
                          int B, int T);
void gpu_lop_backward_bf16(GpuLop *g, float *d_du, float w, int accumulate, const uint16_t *d_da,
                           const uint8_t *d_daq, const float *d_das, int B, int T);
/* gpu_lop_grad_fp8: from now on gpu_lop_backward_bf16's two products
 * through float8 e4m3, the twin of lop_backward_fp8 (search-logits --grad
 * fp8): dy = da Wo and du = [dpq ... dzg] [wq; ...; wg], da and the six
 * gradients quantised by their rows, the weights by their columns (their
 * codes made with the bf16 weights). d_scratch, gpu_lop_fp8_scratch_bytes
 * of device memory, holds the rows' codes during a backward: GpuLops whose
 * backwards run one after another may share it. Returns the codes' bytes.
 * gdn only; dies unless the GPU is a Hopper or newer and C and H*D are
 * multiples of 16 (gpu_lop_fp8_fits). */
size_t gpu_lop_fp8_scratch_bytes(const LinearOp *op, int max_tokens);
size_t gpu_lop_grad_fp8(GpuLop *g, void *d_scratch);
/* gpu_lop_forward_fp8: from now on gpu_lop_forward_bf16's two products
 * through float8 e4m3 too, the twin of lop_forward_fp8 (search-logits
 * --forward fp8): the six input projections from u's codes, the output's
 * from y's, each weight by its rows (codes made with the bf16 weights),
 * the bias added after. d_scratch as above (the same one serves both);
 * returns the codes' bytes; gdn only, dies as gpu_lop_grad_fp8 does. */
size_t gpu_lop_forward_fp8(GpuLop *g, void *d_scratch);
int gpu_lop_fp8_fits(const LinearOp *op);

#ifdef __cplusplus
}
#endif
#endif
