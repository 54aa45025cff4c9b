/*
 * gpu_model: the teacher on the GPU (kernels/forward.cu), the twin of
 * model_forward, model_logits and model_backward in lib/. A GpuModel holds
 * the model's weights as bf16 on the device (q, k, v stacked into one
 * matrix, gate and up into another) and every activation buffer for up to
 * max_tokens tokens (B*T) per call, both sized and allocated once by
 * gpu_model_new.
 *
 * A train GpuModel also keeps, for each layer, what its backward reads (the
 * layer input, q, k, v after RoPE, the attention output and its lse, h =
 * x + attention, gate | up and both norms' rstd: about 61.5 KB a token a
 * layer at the Qwen2.5-3B shape), so gpu_model_backward runs the layers
 * backwards without recomputing any of them.
 *
 * Every call queues its device work on the default stream; those that
 * return host data wait for it.
 */
#ifndef DASH_GPU_MODEL_H
#define DASH_GPU_MODEL_H

#include "gpu.h" // defines: bf16_t

#ifdef __cplusplus
extern "C" {
#endif
#include "model.h"
#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct GpuModel GpuModel;

/* gpu_model_new uploads m (which must outlive the GpuModel) and allocates
 * the activations for max_tokens tokens; train != 0 adds the saved
 * activations and the backward's scratch. Dies when the model needs what
 * the CUDA backend does not have (head dims other than 64 and 128, MLP
 * biases). */
GpuModel *gpu_model_new(const Model *m, int max_tokens, int train);
void gpu_model_free(GpuModel *g);
/* gpu_model_bytes: the device memory of the weights and of the activation
 * arena (saved activations and scratch), in bytes */
void gpu_model_bytes(const GpuModel *g, size_t *weights, size_t *activations);
/* gpu_model_grad_fp8: the backward's products from now on in float8 e4m3
 * (lib/fp8.h): the four weights of every layer and lm_head quantised by
 * their columns into a new allocation (counted in the weights' bytes; w^T,
 * a byte a value), dout by its rows before each product. Only the activation
 * gradients change (by the codes' noise); the forwards stay bf16. Dies
 * with a message on a GPU before Hopper or widths not multiples of 16
 * (gpu_model_fp8_fits: C, H*D, q|k|v's, F and V). */
void gpu_model_grad_fp8(GpuModel *g);
int gpu_model_fp8_fits(const ModelConfig *c);
/* gpu_model_forward_fp8: on 1, the forwards from now on take their four
 * layer products (q|k|v, o, gate|up, down) through float8 e4m3, the twin of
 * layer_forward's under LayerScratch.fp8 (search-logits --forward fp8: the
 * supernet's forward, never the teacher's): each input quantised by its
 * rows before its product, each weight by its rows (their codes made at
 * the first call into a new allocation, counted in the weights' bytes);
 * on 0, bf16 again. Dies as gpu_model_grad_fp8 does where the GPU or the
 * widths do not take it. */
void gpu_model_forward_fp8(GpuModel *g, int on);
/* gpu_model_logits_fp8: on 1, the forwards from now on also write the
 * e4m3 codes by rows of their final-normed hidden rows (the final norm
 * makes them with its output: rmsnorm_forward_fp8_cuda; gpu_model_hidden8),
 * and lm_head's codes by its rows are made at the first call
 * (gpu_model_lm_head_rows8, counted in the weights' bytes): what
 * vocab_loss_logits8_cuda reads (search-logits --forward fp8-all); the
 * bf16 hidden rows are written as ever. On 0, no codes. Dies as
 * gpu_model_grad_fp8 does where the GPU or the widths do not take it. */
void gpu_model_logits_fp8(GpuModel *g, int on);

/* gpu_model_forward runs B sequences of T tokens (host ids (B*T), each < V;
 * every sequence starts at position 0) up to the final-normed hidden rows
 * and, if logits is not NULL, writes every position's logits (B*T, V) to
 * host memory. In a train GpuModel it keeps what gpu_model_backward needs. */
void gpu_model_forward(GpuModel *g, const int32_t *ids, int B, int T, float *logits);
/* A GpuLayerHook sees, going forwards, layer l's attention input d_u =
 * norm1(x) and its output d_a (before the residual add), both device (n, C)
 * bf16, as soon as a is computed. It may change d_a (the residual add reads
 * it next) but not d_u; device work it queues on the default stream reads
 * both safely; the buffers are reused after it returns. */
typedef void (*GpuLayerHook)(void *ctx, int l, const uint16_t *d_u, uint16_t *d_a, int n, int C);
/* gpu_model_forward_layers: the forward of layers 0..last only (no final
 * norm unless last is the last layer), calling hook (or not, when NULL) in
 * every layer; what the distillation of layer candidates needs */
void gpu_model_forward_layers(GpuModel *g, const int32_t *ids, int B, int T, int last, GpuLayerHook hook,
                              void *ctx);
/* A GpuMixAtt: a second attention of a layer's own q, k, v (the teacher's
 * in a window, a supernet's swa column) whose output enters a through the
 * layer's Wo with weight w, as the layer's own attention does with its
 * weight wfa: a = Wo (wfa att + w att2) + (wfa + w) bo. att (n, H*D) and
 * lse (B, H, T) are the caller's buffers: the forward writes them, the
 * backward reads them. dot1 and dot2 (device doubles, or NULL; either may
 * be set without att): where gpu_model_backward_mix adds <datt, att> of the
 * layer's own attention and <datt, att2>, the gradients with respect to
 * wfa and w (whatever the weights, after the layer's GpuMixGrad). */
typedef struct {
	float w;
	int window;
	bf16_t *att;
	float *lse;
	double *dot1, *dot2;
} GpuMixAtt;
/* A GpuAttHook is what gpu_model_forward_mix asks, going forwards, before
 * layer l's attention: it returns wfa and may fill *att2 (which arrives
 * zeroed) with a second attention. The model then runs both attentions in
 * one pass (attention_forward2_cuda), also when att2->w is 0 (the caller
 * may want its output all the same; att and lse NULL with a window and w
 * 0: the same pass for the layer's own attention's bits, the second not
 * stored), and, unless wfa is 1 and w 0, their mixture through one Wo
 * GEMM. */
typedef float (*GpuAttHook)(void *ctx, int l, GpuMixAtt *att2);
/* gpu_model_forward_mix: gpu_model_forward_layers to the last layer with a
 * GpuAttHook (or not, when NULL) besides the GpuLayerHook; a supernet's
 * forward. att runs before each layer's attention, hook after its Wo. */
void gpu_model_forward_mix(GpuModel *g, const int32_t *ids, int B, int T, GpuAttHook att, GpuLayerHook hook,
                           void *ctx);
/* gpu_model_hidden: the device rows (B*T, C) of the last forward after the
 * final RMSNorm, the input of the vocabulary projection; valid until the
 * next forward. gpu_model_lm_head: that projection's device weight (V, C). */
const bf16_t *gpu_model_hidden(GpuModel *g);
const bf16_t *gpu_model_lm_head(GpuModel *g);
/* gpu_model_lm_head8: after gpu_model_grad_fp8, that weight's e4m3 codes by
 * its columns (C, V) and their scales (C) for vocab_loss_fp8_cuda; NULL
 * before */
const uint8_t *gpu_model_lm_head8(GpuModel *g, const float **scale);
/* gpu_model_hidden8: the codes (B*T, C) and scales (B*T) of
 * gpu_model_hidden's rows, written by the last forward when it ran with
 * gpu_model_logits_fp8 on; else NULL. gpu_model_lm_head_rows8: lm_head's
 * codes by its rows (V, C) and their scales (V) after gpu_model_logits_fp8
 * (1); NULL before. */
const uint8_t *gpu_model_hidden8(GpuModel *g, const float **scale);
const uint8_t *gpu_model_lm_head_rows8(GpuModel *g, const float **scale);
/* gpu_model_embedding: the device embedding (V, C); gpu_model_final_norm:
 * the final RMSNorm's weight (C) (what a decoder's own passes need) */
const bf16_t *gpu_model_embedding(const GpuModel *g);
const bf16_t *gpu_model_final_norm(const GpuModel *g);

/* A GpuGradHook sees, going backwards, the device gradient dL/da (n, C)
 * of layer l's attention output (before the residual add). Device work it
 * queues on the default stream reads d_da safely; the buffer is reused
 * after the hook returns. */
typedef void (*GpuGradHook)(void *ctx, int l, const uint16_t *d_da, int n, int C);

/* gpu_model_backward: the twin of model_backward, without its forward: it
 * back-propagates from d_dhidden (B*T, C), the device gradient with respect
 * to the final-normed hidden rows of the last forward (which must have run
 * in this train GpuModel with the same B and T), through the final norm and
 * every layer, calling grad_hook (or not, when NULL) for each layer from the
 * last. d_dx0 (device, (B*T, C), or NULL) receives the gradient with
 * respect to the embeddings' output. */
void gpu_model_backward(GpuModel *g, int B, int T, const bf16_t *d_dhidden, GpuGradHook grad_hook, void *ctx,
                        bf16_t *d_dx0);
/* A GpuMixGrad is what gpu_model_backward_mix asks, going backwards, at
 * each layer l whose attention output a is a mixture (a supernet's,
 * kernels/gpu_supernet.h), given dL/da (device (n, C) bf16, of the mixed a,
 * before the residual add), before the attention path is back-propagated
 * (the gradients of the attentions' own weights, <dL/da Wo, att>, are the
 * backward's: where the GpuMixAtt's dot1 and dot2 say). That path runs
 * with the weights and second attention that the forward's GpuAttHook gave
 * (both attention backwards on the one datt = dL/da Wo into one dq, dk,
 * dv, attention_backward2_cuda, then one Wqkv; nothing of it when both
 * weights were 0). The GpuMixGrad sets *d_du
 * to device (n, C) float32 holding the gradient with respect to u =
 * norm1(x) through its own operators, or to NULL when they add none; the
 * attention path's Wqkv GEMM adds its own into that buffer (which it may
 * thus change) before the backward of norm1. It must not change d_da;
 * *d_du must stay valid until the next layer's call (device work it
 * queues on the default stream is ordered with the backward's). */
typedef void (*GpuMixGrad)(void *ctx, int l, const uint16_t *d_da, float **d_du, int n, int C);
/* gpu_model_hook_codes: within a GpuLayerHook under the fp8 forward, the
 * e4m3 codes of its d_u by rows (n, C) and their scales (n), as
 * fp8_rows_cuda would make them (the norm that wrote d_u made them); within
 * a GpuMixGrad under the fp8 backward, those of its d_da. Valid, like d_u
 * and d_da, until the hook returns; 0 where there are none. */
int gpu_model_hook_codes(const GpuModel *g, const uint8_t **d_q, const float **d_s);
/* gpu_model_backward_mix: gpu_model_backward after gpu_model_forward_mix
 * (the layers' weights and second attentions are its GpuAttHook's; without
 * one, wfa 1 and none), with a GpuMixGrad in every layer; the twin of
 * model_backward_hooks' mix (lib/model.h). Without d_dx0 the first layer's
 * backward ends at its GpuMixGrad, called with d_du NULL (it is to read
 * d_da and queue nothing that only a du would need), and the attentions'
 * dots: nothing below the first mixture wants a gradient, so neither its
 * operators' backwards nor the norm's and the Wqkv GEMM's run. */
void gpu_model_backward_mix(GpuModel *g, int B, int T, const bf16_t *d_dhidden, GpuMixGrad mix, void *ctx,
                            bf16_t *d_dx0);

/* GpuLayerView: layer l's weights on the device and what the last forward
 * made of its attention input: q, k, v after RoPE (bias included), as
 * attention_forward_cuda takes them, and the attention's output and lse.
 * In a train GpuModel those stay valid until the next forward; without
 * train only within a GpuLayerHook of layer l (every layer shares them). A
 * supernet's dw of fa reads the output; a decoder's step
 * (kernels/gpu_decode.h) runs the whole layer on the weights. */
typedef struct {
	const bf16_t *wqkv;      // (H*D + 2*G*D, C) wq | wk | wv
	const bf16_t *bqkv;      // (H*D + 2*G*D) or NULL
	const bf16_t *wo;        // (C, H*D)
	const bf16_t *bo;        // (C) or NULL
	const float *inv_freq;   // (D/2) RoPE's
	const bf16_t *q;         // (n, H, D)
	const bf16_t *k, *v;     // (n, G, D)
	const bf16_t *att;       // (n, H, D) the layer's own attention output, before Wo
	const float *lse;        // (B, H, T) its log-sum-exp
	const bf16_t *ln1, *ln2; // (C) the two RMSNorms' weights
	const bf16_t *wgu;       // (2F, C) wgate | wup
	const bf16_t *wdown;     // (C, F)
} GpuLayerView;
void gpu_model_layer(const GpuModel *g, int l, GpuLayerView *v);

/* gpu_model_backward_host: the same from host float32 dhidden (B*T, C),
 * writing dx0 (B*T, C) float32 to the host if not NULL (for tests) */
void gpu_model_backward_host(GpuModel *g, int B, int T, const float *dhidden, GpuGradHook grad_hook, void *ctx,
                             float *dx0);

#ifdef __cplusplus
}
#endif
#endif
