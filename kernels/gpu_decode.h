/*
 * gpu_decode: batched greedy decoding of a teacher or of a hybrid on the
 * GPU (kernels/decode.cu), the twin of lib/decode.h, whose contract it
 * keeps: B sequences of at most cap positions, each layer by its own state
 *   fa       keys (after RoPE) and values of every position so far, bf16,
 *            (cap, G, D) each
 *   swa      a ring of the last S = min(W, cap) positions' k and v, bf16,
 *            position p in slot p % S
 *   gdn, gla the recurrence's state (H, D, D), float32
 * so the states of gpu_decoder_bytes are B decoder_state_bytes(m, hy, cap,
 * DT_BF16), in one device allocation, layer by layer (layer l of every
 * sequence together, so that a step's gdn and gla states of sequences
 * b, b+1, ... lie side by side).
 *
 * Prefill runs one sequence's prompt in one pass through the teacher's GPU
 * forward (kernels/gpu_model.h, its flash attention; a hybrid's layers by a
 * GpuLayerHook: swa the teacher's q, k, v through attention_forward_cuda
 * with the window, gdn and gla a GpuLop from the zero state to its final
 * state), copying each fa and swa layer's k and v into the cache or ring.
 * A step runs one token of each of n sequences through every layer: fa and
 * swa attend their one query to the cache (split over the positions, then
 * combined), gdn and gla advance their state by one token. Logits are
 * float32 (the vocabulary projection's GEMM writes float32), and greedy
 * takes the argmax on the device (the first of equal logits).
 */
#ifndef DASH_GPU_DECODE_H
#define DASH_GPU_DECODE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "decode.h" // defines: DecodeTokenFn
#include "hybrid.h" // defines: Hybrid
#include "model.h"  // defines: Model
#include "tokenizer.h" // defines: IdVec
#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct GpuDecoder GpuDecoder;

/* gpu_decoder_new uploads teacher m (and hy's operators when hy is not
 * NULL; both must outlive the decoder) and allocates the states of B
 * sequences of at most cap positions and the buffers of a prefill of up to
 * cap tokens; dies when the CUDA backend lacks something (gpu_model_new,
 * gpu_lop_new) or the device memory does not suffice (naming what it
 * needed). */
GpuDecoder *gpu_decoder_new(const Model *m, const Hybrid *hy, int B, int cap);
void gpu_decoder_free(GpuDecoder *d);
/* gpu_decoder_bytes: device bytes of the weights (teacher and operators),
 * of the decode states (B sequences of cap positions) and of the rest
 * (prefill and step buffers) */
void gpu_decoder_bytes(const GpuDecoder *d, size_t *weights, size_t *states, size_t *rest);
/* gpu_decoder_reset empties sequence b: no tokens, recurrent states zero */
void gpu_decoder_reset(GpuDecoder *d, int b);
/* gpu_decoder_prefill fills the empty sequence b with the n >= 1 tokens ids
 * (n <= cap; dies if b holds tokens) and writes the float32 logits (V) of
 * the last one to host logits (NULL: none) */
void gpu_decoder_prefill(GpuDecoder *d, int b, const int32_t *ids, int n, float *logits);
/* gpu_decoder_step appends token ids[i] to sequence seq[i] for the n
 * distinct sequences seq (n), all at once, and writes the next-token
 * logits of each to host logits (n, V) (NULL: none) */
void gpu_decoder_step(GpuDecoder *d, const int *seq, const int32_t *ids, int n, float *logits);
/* gpu_decoder_greedy: decoder_greedy's contract (lib/decode.h) on the GPU,
 * for the first n (1 <= n <= B) sequences: it empties sequences 0..n-1
 * (the others are left as they are), prefills sequence b with prompts[b]
 * (lens[b] >= 1 tokens), then decodes the live ones a step together,
 * appending up to max_new ids to out[b] (n of them), a stop id ending a
 * sequence (not appended), the last id not fed back (lens[b] + max_new - 1
 * <= cap suffices); on_token, if not NULL, sees each new id as it comes.
 * The argmax (the first of equal logits) runs on the device. */
void gpu_decoder_greedy(GpuDecoder *d, int n, const int32_t *const *prompts, const int *lens, int max_new,
                        const int32_t *stop, int nstop, IdVec *out, DecodeTokenFn on_token, void *ctx);

#ifdef __cplusplus
}
#endif
#endif
