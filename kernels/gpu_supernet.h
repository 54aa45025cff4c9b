/*
 * gpu_supernet: the search's supernet on the GPU (kernels/supernet.cu), the
 * twin of supernet_kl and supernet_backward_kl in lib/supernet.h, which
 * states the math: every layer mixes K operators on its attention input u,
 *
 *   a_l = w_l0 fa(u_l) + sum_{k>0} w_lk op_k(u_l)
 *
 * A GpuSupernet is built from a CPU Supernet (its teacher, its columns and
 * their operators, which must outlive it) and holds a train GpuModel
 * (kernels/gpu_model.h) and, per column:
 *   fa   the teacher's attention, what the GpuModel computes anyway
 *   swa  the second attention of the GpuModel's layer (GpuMixAtt, through
 *        gpu_model_forward_mix): the teacher's q, k, v in the window, in
 *        the same pass as fa's; the two mixed before the one Wo GEMM,
 *        a = Wo (w_0 att + w_swa att_swa) + (w_0 + w_swa) bo, and both
 *        backwards on the one datt = dL/da Wo, sharing the Wqkv GEMM
 *   gdn, gla  a GpuLop each (kernels/gpu_lop.h; its backward without
 *        parameter gradients; gdn by gpu_lop_forward_bf16, bf16 operands
 *        in its projections, unless DASH_SUPERNET_F32=1 asks for its
 *        float32 path; gla always float32), each with an arena of its own when
 *        all of them fit beside the rest with an eighth of the device's
 *        memory to spare (32 GB for 36 gdn layers at 4096 tokens); else
 *        one arena for all, and the backward runs each layer's operator
 *        forward again right before its backward (DASH_SUPERNET_SHARED=1
 *        chooses this)
 * A hybrid's supernet (supernet_init_hybrid) lacks the operators its
 * layers do not use; it runs forwards only (gpu_supernet_kl,
 * gpu_supernet_eval).
 * Only the mixing weights w (L, K) vary; they stay on the host and are
 * passed to every call. dL/dw_lk = <dL/da_l, op_k(u_l)> (fa's and swa's
 * as <datt_l, att>, the same sum before Wo) is summed on the device in double (a fixed grid of partial sums,
 * deterministic) and downloaded once a step.
 *
 * A step: gpu_supernet_teacher (the teacher's forward, all fa; its final
 * hidden rows kept on the device), then gpu_supernet_backward_kl (the
 * supernet's forward with the mixing hook, the KL(teacher || supernet)
 * over the vocabulary by vocab_loss_cuda, and gpu_model_backward_mix).
 * The relaxation, the budget term and the optimizer stay on the host
 * (lib/supernet.h's relax_*).
 *
 * Precision: bf16 activations as the GpuModel's (the gdn and gla columns'
 * recurrences and elementwise math in float32 between a bf16 u and the
 * bf16 mixture; gdn's projections bf16 GEMMs like the teacher's). On the test's random
 * model (L 3, C 256, 2 x 100 tokens) the KL came within 1e-3 relative of
 * the float32 CPU reference and every dw within 1.2e-3 of max |dw|
 * (tests/test_supernet.cu, which allows 3e-2 and 5e-2). Not bit for bit
 * repeatable: the attention backward sums dq by float32 atomics. Under
 * Supernet.grad_fp8 the backward's products, under Supernet.fwd_fp8 the
 * supernet's forward's four a layer and its gdn columns' two (and at 2 the
 * teacher's forward's too) go through float8 e4m3 (lib/fp8.h;
 * gpu_model_forward_fp8 switched on around each forward that takes it,
 * gpu_lop_forward_fp8 once); at 3 (--forward fp8-all) both sides'
 * vocabulary logits too: the GpuModel's final norm writes the hidden rows'
 * codes (gpu_model_logits_fp8), the teacher's are kept beside its rows
 * (made again by fp8_rows_cuda from rows that gpu_supernet_set_teacher
 * brings), and the KL reads logits of cuBLASLt's e4m3 product
 * (vocab_loss_logits8_cuda). The test's model with both: KL
 * within 3e-4, dw within 5e-2 of the CPU's of the same settings; at 2 and
 * 3 the all-fa supernet's KL 0 (H200).
 * gpu_supernet_eval of hybrids (H100): on tests/t0205's random model (L 4,
 * C 256, D 64, 4 x 128 tokens) the KL within 1e-4 and the losses within
 * 2.5e-4 relative of the CPU's eval-lm --arch; on the Qwen2.5-0.5B shape
 * with random weights (2 x 128 tokens, 18 gdn or swa layers) within 2.8e-3
 * and 6e-4. All fa gives KL 1.8e-4, not 0, on the first: the teacher's forward
 * (no hook) adds the residual inside the o GEMM, the hooked one cannot.
 *
 * Device memory beyond the GpuModel's, for n = max_tokens rows: every
 * column's output (gdn, gla: unless shared; with a shared arena each
 * layer's u too) and swa's attention output (bf16) and lse: L n (C K + H D)
 * bf16 + L n H float32; the GpuLops' parameters and arenas; scratch of a
 * few (n, C) float32 and the vocabulary loss's work (vocab_loss_work).
 */
#ifndef DASH_GPU_SUPERNET_H
#define DASH_GPU_SUPERNET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "supernet.h" // defines: Supernet
#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct GpuSupernet GpuSupernet;

/* gpu_supernet_new uploads sn's teacher and operators for B*T <=
 * max_tokens rows a call; dies when the CUDA backend lacks something the
 * teacher needs (gpu_model_new) or an operator (gpu_lop_new) */
GpuSupernet *gpu_supernet_new(const Supernet *sn, int max_tokens);
/* gpu_supernet_fp8_fits: 1 when sn->grad_fp8 would run on this GPU (a
 * Hopper or newer; the teacher's and every gdn column's widths multiples
 * of 16), what search-logits --grad auto asks */
int gpu_supernet_fp8_fits(const Supernet *sn);
void gpu_supernet_free(GpuSupernet *g);
/* gpu_supernet_shared: 1 when the gdn and gla columns share one arena
 * (and run their forward twice a step) */
int gpu_supernet_shared(const GpuSupernet *g);
/* gpu_supernet_bytes: device bytes of the GpuModel (weights and arena)
 * and of the rest (operators, kept outputs, scratch) */
void gpu_supernet_bytes(const GpuSupernet *g, size_t *model, size_t *rest);

/* gpu_supernet_teacher runs the teacher (every layer fa) on B sequences of
 * T ids and keeps its final-normed hidden rows (B*T, C) on the device as the
 * KL's reference; host_rows (B*T*C bf16) or NULL receives a copy. */
void gpu_supernet_teacher(GpuSupernet *g, const int32_t *ids, int B, int T, uint16_t *host_rows);
/* gpu_supernet_set_teacher: the reference rows from the host instead */
void gpu_supernet_set_teacher(GpuSupernet *g, const uint16_t *host_rows, int n);

/* gpu_supernet_kl: the forward of the same B x T ids mixed by w (L, K)
 * (host), and the mean over rows of KL(teacher || supernet). Columns of
 * weight 0 are not run. */
double gpu_supernet_kl(GpuSupernet *g, const int32_t *ids, int B, int T, const float *w);
/* gpu_supernet_backward_kl: the same mean KL, and its gradient with
 * respect to w added to dw (L, K) (host, +=) */
double gpu_supernet_backward_kl(GpuSupernet *g, const int32_t *ids, int B, int T, const float *w, double *dw);
/* gpu_supernet_eval: what eval-lm --arch reports of a hybrid (a
 * Supernet of supernet_init_hybrid, w one-hot) on B sequences of T ids:
 * the teacher's forward, then the forward mixed by w (columns of weight 0
 * not run), and the sums over the B*T rows of KL(teacher || supernet)
 * (*kl) and of the next-token cross-entropy of the supernet (*nll) and of
 * the teacher (*teacher_nll) against targets (host, B*T; a row whose
 * target is < 0 left out), all three by vocab_loss_cuda. The teacher's
 * rows it keeps replace those of gpu_supernet_teacher. */
void gpu_supernet_eval(GpuSupernet *g, const int32_t *ids, int B, int T, const float *w, const int32_t *targets,
                       double *kl, double *nll, double *teacher_nll);

/* gpu_supernet_phases: milliseconds of the last teacher forward, supernet
 * forward, loss and backward (CUDA events; waits for them), after a
 * gpu_supernet_teacher and a gpu_supernet_backward_kl */
void gpu_supernet_phases(GpuSupernet *g, float ms[4]);

#ifdef __cplusplus
}
#endif
#endif
