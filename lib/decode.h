/*
 * decode: batched greedy decoding of a teacher or of a hybrid on the CPU,
 * prefill then one token per step, each layer by its own state. What
 * eval-ruler and eval-lm --generate run; not the GPU decoder, and greedy
 * only (no sampling).
 *
 * A Decoder holds B sequences. Sequence b holds pos[b] tokens (0 <= pos[b]
 * <= cap) and, in every layer l, a state in one block of seq_bytes bytes:
 *   fa       keys (after RoPE) and values of every position so far,
 *            k, v (cap, G, D) each, of the cache type kv
 *   swa      a ring of the last W positions' k and v, (S, G, D) each of
 *            type kv, S = min(W, cap) slots, position p in slot p % S
 *   gdn, gla the recurrence's state (H, D, D), float32
 *
 * The cache type kv (fa's cache, swa's ring) is DT_BF16 by default and
 * DT_F32 on request. bf16 halves the memory that grows with the context (a
 * RULER prompt runs to 128K tokens; fa keeps 2 G D e bytes a token a layer:
 * Qwen2.5-3B's 36 layers keep 72 KB a token in float32, 9.7 GB a sequence
 * at 128K, 4.8 GB in bf16), and bf16 is the type the teacher's k and v
 * have in transformers' bf16 inference. Its rounding (8 bits of mantissa on
 * k and v) moves the tiny fixtures' logits by up to 3e-2 (test_decode).
 * float32 gives the full forward's logits to float rounding, which the
 * tests check. Recurrent states stay float32: small, and they accumulate.
 *
 * Prefill runs a prompt in chunks of `chunk` tokens through the full
 * forward's math (each chunk's queries attend to the cache, which already
 * holds the chunk; swa's chunk reads the last W - 1 positions of its ring;
 * gdn and gla run their chunked form from the state), so its memory is the
 * state plus O(chunk) rows, never quadratic in the prompt. A step runs one
 * token of each of n sequences through every layer; per token, fa costs
 * O(context), swa O(W), gdn and gla O(H D^2). A decoded sequence gives the
 * logits the full forward (model_forward with hybrid_hook) gives for the
 * same ids, whatever the batch and the chunking.
 */
#ifndef DASH_DECODE_H
#define DASH_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "hybrid.h"    // defines: Hybrid, ARCH_FA, ARCH_GDN, ARCH_GLA, ARCH_SWA
#include "model.h"     // defines: Model
#include "tokenizer.h" // defines: IdVec

#define DECODER_KV DT_BF16 /* the default cache type */
#define DECODER_CHUNK 256  /* prefill tokens a pass */

struct DecLayer;
struct DecScratch;

typedef struct {
	const Model *m;
	const Hybrid *hy;        /* NULL: every layer fa */
	int B;                   /* sequences */
	int cap;                 /* positions a sequence can hold */
	DType kv;                /* DT_BF16 or DT_F32 */
	int chunk;               /* prefill tokens a pass (DECODER_CHUNK; may be changed) */
	size_t seq_bytes;        /* decode state a sequence, = decoder_state_bytes(m, hy, cap, kv) */
	long long *pos;          // (B) tokens each sequence holds
	uint8_t *state;          // (B, seq_bytes) every layer's state, layer after layer
	struct DecLayer *layer;  /* (L) each layer's operator, weights and offset in a block */
	struct DecScratch *scr;  /* activations of the rows in flight */
} Decoder;

/* decoder_init makes B empty sequences of at most cap positions for teacher
 * m, or for hybrid hy of m when hy is not NULL (both must outlive the
 * decoder; fa layers read m's tensors as they are at each pass, so
 * model_unpack may come before or after); kv is the cache type, DT_BF16 or
 * DT_F32. The states are allocated at once, B * seq_bytes bytes (calloc:
 * the pages of a long cache are touched only as the context reaches them). */
void decoder_init(Decoder *d, const Model *m, const Hybrid *hy, int B, int cap, DType kv);
void decoder_free(Decoder *d);

/* decoder_state_bytes is the decode state of one sequence of n positions:
 *   sum over layers of  fa: 2 n G D e,  swa: 2 min(W, n) G D e,  gdn, gla: 4 H D^2
 * with e the size of kv (2 for bf16, 4 for float32). The "decode-time
 * memory" of a model at context n (weights and the activations of the rows
 * in flight not counted). */
size_t decoder_state_bytes(const Model *m, const Hybrid *hy, long long n, DType kv);
/* decoder_layer_bytes: the same for layer l alone (the term of the sum) */
size_t decoder_layer_bytes(const Model *m, const Hybrid *hy, int l, long long n, DType kv);

/* decoder_reset empties sequence b: no tokens, recurrent states zero. */
void decoder_reset(Decoder *d, int b);

/* decoder_prefill appends the n >= 1 tokens ids (n) to sequence b, chunk by
 * chunk, and writes the logits (V) of the last one to logits (NULL: none).
 * pos[b] + n must not exceed cap. */
void decoder_prefill(Decoder *d, int b, const int32_t *ids, int n, float *logits);

/* decoder_step appends token ids[i] to sequence seq[i] for the n distinct
 * sequences seq (n), all at once, and writes the next-token logits of each
 * to logits (n, V) (NULL: none). */
void decoder_step(Decoder *d, const int *seq, const int32_t *ids, int n, float *logits);

/* decoder_greedy empties every sequence, prefills sequence b with prompt b
 * (prompts[b], lens[b] >= 1 tokens), then decodes greedily (argmax, the
 * first of equal logits), the live sequences a step together: it appends
 * up to max_new new ids to out[b] (B of them), stopping a sequence after an
 * id in stop (nstop of them; the stop id is not appended) or at max_new.
 * The last id is not fed back, so lens[b] + max_new - 1 <= cap suffices.
 * on_token, if not NULL, sees each new id of each sequence as it comes. */
typedef void (*DecodeTokenFn)(void *ctx, int b, int32_t id);
void decoder_greedy(Decoder *d, const int32_t *const *prompts, const int *lens, int max_new, const int32_t *stop,
                    int nstop, IdVec *out, DecodeTokenFn on_token, void *ctx);
/* decoder_accept: the bookkeeping of greedy step k (0-based) of the live
 * sequences seq (live), shared with the GPU decoder: each sequence's next
 * id best[i] ends it when it is a stop id, else it is appended to
 * out[seq[i]] (and shown to on_token) and, unless k + 1 is max_new, kept to
 * be fed back: seq and next (live) are compacted to the sequences to step
 * next and their ids. Returns how many there are. */
int decoder_accept(const int32_t *best, int live, int *seq, int32_t *next, int k, int max_new, const int32_t *stop,
                   int nstop, IdVec *out, DecodeTokenFn on_token, void *ctx);

#endif
