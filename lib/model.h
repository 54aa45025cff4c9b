/*
 * model: a pretrained teacher (Qwen2 or Llama family), its configuration,
 * its weights as views into the memory-mapped checkpoint, and the CPU
 * reference forward pass.
 *
 * Letters (used in every shape comment of the project):
 *   B batch, T time, C model width, L layers, H query heads, G kv heads,
 *   D head dim, F MLP hidden width, V vocabulary, K candidate ops per layer.
 *
 * A layer: u = rmsnorm(x) * ln1; a = A(u); h = x + a;
 *          x' = h + Wdown(silu(Wgate n) * Wup n), n = rmsnorm(h) * ln2,
 * where A is causal GQA softmax attention with RoPE (the HF rotate-half
 * convention). u is the operator input and a its output (before the
 * residual add): later stages imitate a and mix operators on u, so the
 * forward pass hands both to a LayerHook, which may replace a.
 */
#ifndef DASH_MODEL_H
#define DASH_MODEL_H

#include <stdint.h>

#include "safetensors.h"
#include "tensor.h"

typedef enum { ARCH_QWEN2, ARCH_LLAMA } Arch;
typedef enum { ROPE_DEFAULT, ROPE_LINEAR, ROPE_LLAMA3 } RopeType;

typedef struct {
	Arch arch;
	int L, C, H, G, D, F, V;
	float eps;         /* rms_norm_eps */
	double rope_theta;
	RopeType rope_type;
	double rope_factor, rope_low_freq, rope_high_freq;
	int rope_orig_max_pos;
	int tied;          /* lm_head shares the embedding */
	int qkv_bias;      /* q, k, v projections have biases (Qwen2) */
	int o_bias;        /* o projection has a bias (Llama attention_bias) */
	int mlp_bias;      /* gate, up, down have biases (Llama mlp_bias) */
	int bos_id, eos_id; /* -1 when the config has none */
	int max_pos;
} ModelConfig;

typedef struct {
	Tensor ln1;            // (C)
	Tensor wq, bq;         // (H*D, C), (H*D)
	Tensor wk, bk;         // (G*D, C), (G*D)
	Tensor wv, bv;         // (G*D, C), (G*D)
	Tensor wo, bo;         // (C, H*D), (C)
	Tensor ln2;            // (C)
	Tensor wgate, bgate;   // (F, C), (F)
	Tensor wup, bup;       // (F, C), (F)
	Tensor wdown, bdown;   // (C, F), (C)
} LayerWeights;            /* an absent bias has data == NULL */

typedef struct {
	ModelConfig cfg;
	Tensor embed;          // (V, C)
	LayerWeights *layers;  // [L]
	Tensor norm;           // (C)
	Tensor lm_head;        // (V, C); the embedding when tied
	float *inv_freq;       // (D/2) RoPE inverse frequencies, scaling applied
	SafeTensors st;        /* a Hugging Face folder, or */
	struct Gguf *gguf;     /* a GGUF file */
	void **owned;          /* weights rebuilt in memory (GGUF llama q/k) */
	int nowned;
	char *path;
	char fingerprint[17];  /* hex, see model_load */
} Model;

/* model_load opens a Hugging Face checkpoint folder (config.json and
 * model.safetensors or model.safetensors.index.json) or a GGUF file
 * (architectures qwen2 and llama; quantised weights stay quantised in the
 * map and are dequantised row by row as they are used; the q/k row
 * permutation of llama.cpp's converter is undone) and checks every tensor's
 * presence, type and shape against the config; it dies naming the file on
 * any problem. The fingerprint hashes the config and every tensor's
 * name, dtype, shape and a sample of its bytes, in a fixed order, so it does
 * not depend on how the checkpoint is sharded and costs milliseconds.
 * "random:qwen2.5-3b" and "random:qwen2.5-0.5b" give random bf16 weights of
 * those shapes (model_init_random, seed 1), for benchmarks. */
void model_load(Model *m, const char *path);
void model_free(Model *m);
/* model_init_random makes a model of config c with random bf16 weights held
 * in memory (uniform, scaled like an initialised transformer; norms near
 * 1; biases small), for benchmarks at real shapes and tests. Deterministic
 * for a seed. c->rope_theta and c->eps must be set. */
void model_init_random(Model *m, const ModelConfig *c, uint64_t seed);
/* model_describe prints a one-line summary to f:
 * "qwen2 L36 C2048 H16/G2 D128 F11008 V151936 tied bf16". */
void model_describe(const Model *m, FILE *f);

/* ---------------------------------------------------------------------------
 * forward (CPU reference, float32, OpenMP) */

/* A LayerHook sees layer l's operator input u (B*T, C) and output a
 * (B*T, C) before the residual add; it may overwrite a. */
typedef void (*LayerHook)(void *ctx, int l, const float *u, float *a, int B, int T);

/* model_forward runs B sequences of T tokens (ids (B*T), each < V; every
 * sequence starts at position 0) and writes the final-normed hidden states
 * to hidden (B*T, C). hook may be NULL. */
void model_forward(const Model *m, const int32_t *ids, int B, int T, float *hidden,
                   LayerHook hook, void *ctx);
/* model_forward_fp8: model_forward with every layer's products through
 * float8 e4m3 (LayerScratch.fp8), the twin of gpu_model_forward_fp8 */
void model_forward_fp8(const Model *m, const int32_t *ids, int B, int T, float *hidden, LayerHook hook, void *ctx);
/* One layer's intermediates, for layer_forward and the backward's recomputation. */
typedef struct {
	float *u, *a, *h, *u2;   // (B*T, C) norm1(x), attention out, x + a, norm2(h)
	float *q, *att;          // (B*T, H, D) after RoPE; attention before Wo
	float *k, *v;            // (B*T, G, D) k after RoPE
	float *g, *up, *act;     // (B*T, F) gate, up, silu(gate) * up
	int fp8;                 // 1: the layer's products through float8 e4m3
	                         // (matmul_forward_fp8_cpu; search-logits
	                         // --forward fp8), 0 from layer_scratch_init
} LayerScratch;
void layer_scratch_init(LayerScratch *s, const ModelConfig *c, int n);
void layer_scratch_free(LayerScratch *s);
/* layer_forward runs layer l on x (B*T, C) into xout (B*T, C), keeping its
 * intermediates in s; hook as in model_forward. */
void layer_forward(const Model *m, int l, const float *x, float *xout, LayerScratch *s, int B, int T,
                   LayerHook hook, void *ctx);

/* model_logits projects n hidden rows (n, C) to logits (n, V). */
void model_logits(const Model *m, const float *hidden, int n, float *logits);

/* ---------------------------------------------------------------------------
 * backward (CPU reference), with respect to activations only */

/* A LayerGradHook sees, going backwards, layer l's operator input u (B*T, C)
 * and the gradient of the loss with respect to its output a (B*T, C). */
typedef void (*LayerGradHook)(void *ctx, int l, const float *u, const float *da, int B, int T);

/* model_backward runs the forward again (keeping each layer's input, so
 * memory is (L+1) B T C floats; the rest is recomputed layer by layer) and
 * then back-propagates dhidden (B*T, C), the gradient with respect to the
 * final-normed hidden states, through every layer, calling grad_hook with
 * each layer's dL/da. dx0, if not NULL, receives the gradient with respect
 * to the embeddings (B*T, C). */
void model_backward(const Model *m, const int32_t *ids, int B, int T, const float *dhidden,
                    LayerGradHook grad_hook, void *ctx, float *dx0);
/* What model_backward_hooks lets a caller change: a supernet's layers mix
 * the teacher's attention with other operators (lib/supernet.h).
 *   forward  replaces a in every forward the backward runs, as
 *            model_forward's hook (NULL: the teacher's attention)
 *   mix      going backwards, sees layer l's u and dL/da (of the mixed a),
 *            writes to du (=) the gradient with respect to u through its
 *            own operators, and returns the factor w with which the
 *            teacher's attention enters a (the teacher's path is then
 *            back-propagated from w dL/da, and skipped when w is 0)
 *   grad     a read-only view of u and dL/da, as model_backward's grad_hook
 *   loss     when set, called once after the forward with its final-normed
 *            hidden rows (n, C), writes dhidden (n, C) and returns the loss,
 *            in place of a given dhidden */
typedef float (*LayerMixGrad)(void *ctx, int l, const float *u, const float *da, float *du, int B, int T);
typedef struct {
	LayerHook forward;
	LayerMixGrad mix;
	LayerGradHook grad;
	double (*loss)(void *ctx, const float *hidden, float *dhidden, int n);
	void *ctx;
	int fp8; /* 1: the layers' products dx = dout w through float8 e4m3
	          * (lib/fp8.h), as the CUDA backend's gpu_model_grad_fp8:
	          * q|k|v and gate|up each as one product */
	int fwd8; /* 1: the forward's (and its recomputation's) products
	           * through e4m3 too (LayerScratch.fp8) */
} BackwardHooks;
/* model_backward_hooks is model_backward with hooks (h may be NULL); it
 * returns h->loss's value, or 0 without it (dhidden is then read). */
double model_backward_hooks(const Model *m, const int32_t *ids, int B, int T, const float *dhidden,
                            const BackwardHooks *h, float *dx0);
/* model_logits_backward: dhidden (n, C) from dlogits (n, V) */
void model_logits_backward(const Model *m, const float *dlogits, int n, float *dhidden);

/* A key/value cache for decoding one sequence: keys and values after RoPE,
 * k, v (L, cap, G*D); n positions filled. */
typedef struct {
	float *k, *v;
	int cap, n, gd;
} KVCache;
void kvcache_init(KVCache *kv, const Model *m, int cap);
void kvcache_free(KVCache *kv);
/* model_step runs token at position kv->n, appends its keys and values and
 * writes the next-token logits (V). */
void model_step(const Model *m, KVCache *kv, int32_t token, float *logits);

/* model_unpack turns every quantised (or half-precision) weight into float32
 * held by the model, which makes decoding, one row at a time, several times
 * faster at the cost of 4 bytes a parameter. */
void model_unpack(Model *m);
/* unpack_tensor does it for one tensor (used by model_unpack). */
void unpack_tensor(Model *m, Tensor *t);

#endif
