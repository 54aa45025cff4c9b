/* model: config.json parsing, weight loading and checking, fingerprint. */
#include "model.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gguf.h"
#include "util.h"

// ----------------------------------------------------------------------------
// config.json

typedef struct {
	cJSON *root;
	const char *path;
} Json;

static cJSON *jget(const Json *j, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(j->root, key);
}

static int jint(const Json *j, const char *key, int dflt, int required)
{
	cJSON *v = jget(j, key);
	if (!v || cJSON_IsNull(v)) {
		if (required)
			die("missing field '%s' in '%s'", key, j->path);
		return dflt;
	}
	if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
	    v->valuedouble > 1e9)
		die("field '%s' in '%s' is not a non-negative integer", key, j->path);
	return (int)v->valuedouble;
}

static double jnum(const cJSON *obj, const char *key, double dflt, const char *path)
{
	cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
	if (!v || cJSON_IsNull(v))
		return dflt;
	if (!cJSON_IsNumber(v))
		die("field '%s' in '%s' is not a number", key, path);
	return v->valuedouble;
}

static int jbool(const Json *j, const char *key, int dflt)
{
	cJSON *v = jget(j, key);
	if (!v || cJSON_IsNull(v))
		return dflt;
	if (!cJSON_IsBool(v))
		die("field '%s' in '%s' is not true or false", key, j->path);
	return cJSON_IsTrue(v);
}

/* a token id, or the first of a list of them, or -1 */
static int jtoken(const Json *j, const char *key)
{
	cJSON *v = jget(j, key);
	if (cJSON_IsArray(v))
		v = cJSON_GetArrayItem(v, 0);
	return cJSON_IsNumber(v) ? (int)v->valuedouble : -1;
}

static void parse_rope(ModelConfig *c, const Json *j)
{
	/* rope_theta at the top level (released Qwen2.5 files) or inside
	 * rope_parameters (newer transformers); scaling in rope_scaling (older)
	 * or rope_parameters (newer) */
	cJSON *params = jget(j, "rope_parameters");
	cJSON *scaling = jget(j, "rope_scaling");
	if (params && !cJSON_IsNull(params) && !cJSON_IsObject(params))
		die("field 'rope_parameters' in '%s' is not an object", j->path);
	if (scaling && !cJSON_IsNull(scaling) && !cJSON_IsObject(scaling))
		die("field 'rope_scaling' in '%s' is not an object", j->path);
	c->rope_theta = jnum(j->root, "rope_theta", NAN, j->path);
	if (isnan(c->rope_theta) && cJSON_IsObject(params))
		c->rope_theta = jnum(params, "rope_theta", NAN, j->path);
	if (isnan(c->rope_theta)) {
		warn("no rope_theta in '%s'; using 10000 as transformers does", j->path);
		c->rope_theta = 10000;
	}
	if (!(c->rope_theta > 0))
		die("field 'rope_theta' in '%s' must be positive", j->path);

	cJSON *s = cJSON_IsObject(scaling) ? scaling : cJSON_IsObject(params) ? params : NULL;
	c->rope_type = ROPE_DEFAULT;
	if (!s)
		return;
	cJSON *t = cJSON_GetObjectItemCaseSensitive(s, "rope_type");
	if (!cJSON_IsString(t))
		t = cJSON_GetObjectItemCaseSensitive(s, "type");
	const char *type = cJSON_IsString(t) ? t->valuestring : "default";
	if (strcmp(type, "default") == 0)
		return;
	c->rope_factor = jnum(s, "factor", NAN, j->path);
	if (!(c->rope_factor > 0))
		die("rope scaling '%s' in '%s' needs a positive 'factor'", type, j->path);
	if (strcmp(type, "linear") == 0) {
		c->rope_type = ROPE_LINEAR;
	} else if (strcmp(type, "llama3") == 0) {
		c->rope_type = ROPE_LLAMA3;
		c->rope_low_freq = jnum(s, "low_freq_factor", NAN, j->path);
		c->rope_high_freq = jnum(s, "high_freq_factor", NAN, j->path);
		c->rope_orig_max_pos = (int)jnum(s, "original_max_position_embeddings", NAN, j->path);
		if (!(c->rope_low_freq > 0) || !(c->rope_high_freq > c->rope_low_freq) || c->rope_orig_max_pos <= 0)
			die("rope scaling 'llama3' in '%s' needs low_freq_factor < high_freq_factor and "
			    "original_max_position_embeddings", j->path);
	} else {
		die("unsupported rope scaling '%s' in '%s' (supported: default, linear, llama3)", type, j->path);
	}
}

static void parse_config(ModelConfig *c, const char *path)
{
	char *text = read_file(path, NULL);
	Json j = {cJSON_Parse(text), path};
	if (!j.root || !cJSON_IsObject(j.root)) {
		const char *at = cJSON_GetErrorPtr();
		int line = 1;
		for (const char *p = text; at && p < at && *p; p++)
			line += *p == '\n';
		die("malformed JSON in '%s' near line %d", path, line);
	}
	memset(c, 0, sizeof *c);
	cJSON *mt = jget(&j, "model_type");
	if (!cJSON_IsString(mt))
		die("missing field 'model_type' in '%s'", path);
	if (strcmp(mt->valuestring, "qwen2") == 0)
		c->arch = ARCH_QWEN2;
	else if (strcmp(mt->valuestring, "llama") == 0)
		c->arch = ARCH_LLAMA;
	else
		die("unsupported model_type '%s' in '%s' (supported: qwen2, llama)", mt->valuestring, path);

	c->C = jint(&j, "hidden_size", 0, 1);
	c->L = jint(&j, "num_hidden_layers", 0, 1);
	c->H = jint(&j, "num_attention_heads", 0, 1);
	c->G = jint(&j, "num_key_value_heads", c->H, 0);
	c->F = jint(&j, "intermediate_size", 0, 1);
	c->V = jint(&j, "vocab_size", 0, 1);
	c->D = jint(&j, "head_dim", c->H ? c->C / c->H : 0, 0);
	c->max_pos = jint(&j, "max_position_embeddings", 0, 0);
	c->eps = (float)jnum(j.root, "rms_norm_eps", 1e-6, path);
	if (!jget(&j, "rms_norm_eps"))
		die("missing field 'rms_norm_eps' in '%s'", path);
	if (c->C <= 0 || c->L <= 0 || c->H <= 0 || c->G <= 0 || c->F <= 0 || c->V <= 0 || c->D <= 0)
		die("'%s': sizes must be positive", path);
	if (c->H % c->G != 0)
		die("'%s': num_attention_heads %d is not a multiple of num_key_value_heads %d", path, c->H, c->G);
	if (c->D % 2 != 0)
		die("'%s': head dim %d is odd", path, c->D);
	if (!(c->eps > 0))
		die("field 'rms_norm_eps' in '%s' must be positive", path);
	cJSON *act = jget(&j, "hidden_act");
	if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0))
		die("unsupported hidden_act in '%s' (supported: silu)", path);
	if (jbool(&j, "use_sliding_window", 0))
		die("'%s' sets use_sliding_window; only full-attention teachers are supported", path);
	c->tied = jbool(&j, "tie_word_embeddings", 0);
	if (c->arch == ARCH_QWEN2) {
		c->qkv_bias = 1;
	} else {
		c->qkv_bias = c->o_bias = jbool(&j, "attention_bias", 0);
		c->mlp_bias = jbool(&j, "mlp_bias", 0);
	}
	c->bos_id = jtoken(&j, "bos_token_id");
	c->eos_id = jtoken(&j, "eos_token_id");
	parse_rope(c, &j);
	cJSON_Delete(j.root);
	free(text);
}

// ----------------------------------------------------------------------------
// RoPE frequencies, as transformers computes them (float32)

static void rope_init(Model *m)
{
	const ModelConfig *c = &m->cfg;
	int half = c->D / 2;
	m->inv_freq = mallocCheck((size_t)half * sizeof(float));
	for (int i = 0; i < half; i++) {
		float e = (float)(2 * i) / (float)c->D;
		float f = (float)(1.0 / pow(c->rope_theta, (double)e));
		if (c->rope_type == ROPE_LINEAR) {
			f = (float)(f / c->rope_factor);
		} else if (c->rope_type == ROPE_LLAMA3) {
			double lo_wl = c->rope_orig_max_pos / c->rope_low_freq;
			double hi_wl = c->rope_orig_max_pos / c->rope_high_freq;
			double wl = 2 * M_PI / f;
			if (wl > lo_wl) {
				f = (float)(f / c->rope_factor);
			} else if (wl >= hi_wl) { /* between the two: interpolate */
				double sm = (c->rope_orig_max_pos / wl - c->rope_low_freq) /
				            (c->rope_high_freq - c->rope_low_freq);
				f = (float)((1 - sm) * f / c->rope_factor + sm * f);
			}
		}
		m->inv_freq[i] = f;
	}
}

// ----------------------------------------------------------------------------
// weights

static Tensor get1(const Model *m, const char *name, int64_t a)
{
	int64_t s[1] = {a};
	return st_get(&m->st, name, 1, s);
}

static Tensor get2(const Model *m, const char *name, int64_t a, int64_t b)
{
	int64_t s[2] = {a, b};
	return st_get(&m->st, name, 2, s);
}

static void load_layer(Model *m, int l)
{
	const ModelConfig *c = &m->cfg;
	LayerWeights *w = &m->layers[l];
	char n[128];
	int64_t HD = (int64_t)c->H * c->D, GD = (int64_t)c->G * c->D;
#define NAME(fmt) (snprintf(n, sizeof n, "model.layers.%d." fmt, l), n)
	w->ln1 = get1(m, NAME("input_layernorm.weight"), c->C);
	w->ln2 = get1(m, NAME("post_attention_layernorm.weight"), c->C);
	w->wq = get2(m, NAME("self_attn.q_proj.weight"), HD, c->C);
	w->wk = get2(m, NAME("self_attn.k_proj.weight"), GD, c->C);
	w->wv = get2(m, NAME("self_attn.v_proj.weight"), GD, c->C);
	w->wo = get2(m, NAME("self_attn.o_proj.weight"), c->C, HD);
	if (c->qkv_bias) {
		w->bq = get1(m, NAME("self_attn.q_proj.bias"), HD);
		w->bk = get1(m, NAME("self_attn.k_proj.bias"), GD);
		w->bv = get1(m, NAME("self_attn.v_proj.bias"), GD);
	}
	if (c->o_bias)
		w->bo = get1(m, NAME("self_attn.o_proj.bias"), c->C);
	w->wgate = get2(m, NAME("mlp.gate_proj.weight"), c->F, c->C);
	w->wup = get2(m, NAME("mlp.up_proj.weight"), c->F, c->C);
	w->wdown = get2(m, NAME("mlp.down_proj.weight"), c->C, c->F);
	if (c->mlp_bias) {
		w->bgate = get1(m, NAME("mlp.gate_proj.bias"), c->F);
		w->bup = get1(m, NAME("mlp.up_proj.bias"), c->F);
		w->bdown = get1(m, NAME("mlp.down_proj.bias"), c->C);
	}
#undef NAME
}

static uint64_t hash_tensor(uint64_t h, const char *name, const Tensor *t)
{
	h = hash_str(h, name);
	if (!t->data)
		return hash_u64(h, 0);
	h = hash_str(h, dtype_name(t->dtype));
	for (int i = 0; i < t->ndim; i++)
		h = hash_u64(h, (uint64_t)t->shape[i]);
	size_t n = dtype_row_bytes(t->dtype, tensor_numel(t));
	enum { WIN = 4096, NWIN = 16 };
	if (n <= WIN * NWIN)
		return hash_bytes(h, t->data, n);
	for (int i = 0; i < NWIN; i++) /* evenly spaced windows, the last ends the tensor */
		h = hash_bytes(h, (const uint8_t *)t->data + (n - WIN) / (NWIN - 1) * (size_t)i, WIN);
	return h;
}

static void fingerprint(Model *m)
{
	const ModelConfig *c = &m->cfg;
	uint64_t h = HASH_INIT;
	int64_t ints[] = {c->arch, c->L, c->C, c->H, c->G, c->D, c->F, c->V, c->rope_type, c->tied,
	                  c->qkv_bias, c->o_bias, c->mlp_bias, c->rope_orig_max_pos};
	double reals[] = {c->eps, c->rope_theta, c->rope_factor, c->rope_low_freq, c->rope_high_freq};
	for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
		h = hash_u64(h, (uint64_t)ints[i]);
	for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++) {
		uint64_t u;
		memcpy(&u, &reals[i], 8);
		h = hash_u64(h, u);
	}
	h = hash_tensor(h, "embed", &m->embed);
	for (int l = 0; l < c->L; l++) {
		const Tensor *t = (const Tensor *)&m->layers[l];
		for (size_t i = 0; i < sizeof(LayerWeights) / sizeof(Tensor); i++)
			h = hash_tensor(h, "layer", &t[i]);
	}
	h = hash_tensor(h, "norm", &m->norm);
	h = hash_tensor(h, "lm_head", &m->lm_head);
	fingerprint_hex(h, m->fingerprint);
}

// ----------------------------------------------------------------------------
// GGUF

static Tensor gguf_get(Model *m, const char *name, int ndim, int64_t rows, int64_t cols, int required)
{
	const GgufTensor *g = gguf_tensor(m->gguf, name);
	const char *path = m->path;
	if (!g) {
		if (required)
			die("missing tensor '%s' in '%s'", name, path);
		return (Tensor){0};
	}
	if (g->dtype < 0)
		die("tensor '%s' in '%s' has quantisation type %s, which is not supported", name, path,
		    gguf_type_name(g->ggml_type));
	/* GGUF lists dimensions innermost first: (in, out) is our (out, in) */
	int64_t want[2] = {ndim == 2 ? rows : cols, cols};
	int ok = g->ndim == ndim && g->ne[0] == cols && (ndim == 1 || g->ne[1] == rows);
	if (!ok) {
		char got[96], w[96];
		Tensor gt = {.ndim = g->ndim}, wt = {.ndim = ndim};
		for (int i = 0; i < g->ndim; i++)
			gt.shape[i] = g->ne[g->ndim - 1 - i];
		memcpy(wt.shape, ndim == 2 ? want : want + 1, (size_t)ndim * sizeof *want);
		die("tensor '%s' in '%s' has shape %s, the metadata says %s", name, path,
		    tensor_shape_str(&gt, got, sizeof got), tensor_shape_str(&wt, w, sizeof w));
	}
	Tensor t = {.dtype = (DType)g->dtype, .ndim = ndim, .data = g->data};
	if (ndim == 2)
		t.shape[0] = rows, t.shape[1] = cols;
	else
		t.shape[0] = cols;
	return t;
}

static void own(Model *m, void *p)
{
	m->owned = reallocCheck(m->owned, (size_t)(m->nowned + 1) * sizeof *m->owned);
	m->owned[m->nowned++] = p;
}

/* llama.cpp stores a llama model's q and k rows interleaved per head
 * (row 2j + i of a head holds Hugging Face row i*D/2 + j); rebuild them in
 * Hugging Face order, as float32 */
static Tensor unpermute(Model *m, Tensor w, int heads)
{
	if (!w.data)
		return w;
	int64_t rows = w.shape[0], cols = w.ndim == 2 ? w.shape[1] : 1;
	int D = (int)(rows / heads);
	size_t rowb = dtype_row_bytes(w.dtype, cols);
	float *out = mallocCheck((size_t)rows * cols * sizeof(float));
	for (int64_t r = 0; r < rows; r++) {
		int64_t h = r / D, x = r % D, i = x / (D / 2), j = x % (D / 2);
		int64_t src = h * D + 2 * j + i;
		if (w.ndim == 2)
			convert_to_f32(out + r * cols, (const uint8_t *)w.data + (size_t)src * rowb, w.dtype, (size_t)cols);
		else
			convert_to_f32(out + r, (const uint8_t *)w.data + dtype_row_bytes(w.dtype, src), w.dtype, 1);
	}
	own(m, out);
	w.dtype = DT_F32;
	w.data = out;
	return w;
}

void unpack_tensor(Model *m, Tensor *t)
{
	if (!t->data || t->dtype == DT_F32)
		return;
	size_t n = (size_t)tensor_numel(t);
	float *out = mallocCheck(n * sizeof(float));
	size_t rows = t->ndim == 2 ? (size_t)t->shape[0] : 1, cols = n / rows;
	size_t rowb = dtype_row_bytes(t->dtype, (int64_t)cols);
	#pragma omp parallel for
	for (size_t r = 0; r < rows; r++)
		convert_to_f32(out + r * cols, (const uint8_t *)t->data + r * rowb, t->dtype, cols);
	own(m, out);
	t->dtype = DT_F32;
	t->data = out;
}

static void load_gguf(Model *m, const char *path)
{
	m->gguf = callocCheck(1, sizeof *m->gguf);
	Gguf *g = m->gguf;
	gguf_open(g, path);
	ModelConfig *c = &m->cfg;
	char *arch = gguf_str(g, "general.architecture"), key[128];
	if (!arch)
		die("missing key 'general.architecture' in '%s'", path);
	if (strcmp(arch, "qwen2") == 0)
		c->arch = ARCH_QWEN2;
	else if (strcmp(arch, "llama") == 0)
		c->arch = ARCH_LLAMA;
	else
		die("unsupported architecture '%s' in '%s' (supported: qwen2, llama)", arch, path);
#define KEY(k) (snprintf(key, sizeof key, "%s." k, arch), key)
	c->L = (int)gguf_int(g, KEY("block_count"), 0, 1);
	c->C = (int)gguf_int(g, KEY("embedding_length"), 0, 1);
	c->F = (int)gguf_int(g, KEY("feed_forward_length"), 0, 1);
	c->H = (int)gguf_int(g, KEY("attention.head_count"), 0, 1);
	c->G = (int)gguf_int(g, KEY("attention.head_count_kv"), c->H, 0);
	c->D = (int)gguf_int(g, KEY("attention.key_length"), c->H ? c->C / c->H : 0, 0);
	c->max_pos = (int)gguf_int(g, KEY("context_length"), 0, 0);
	c->eps = (float)gguf_float(g, KEY("attention.layer_norm_rms_epsilon"), NAN);
	c->rope_theta = gguf_float(g, KEY("rope.freq_base"), 10000);
	const GgufTensor *emb = gguf_tensor(g, "token_embd.weight");
	const GgufKV *toks = gguf_find(g, "tokenizer.ggml.tokens");
	c->V = (int)gguf_int(g, KEY("vocab_size"), toks ? (int64_t)toks->n : emb ? emb->ne[1] : 0, 0);
	char *scaling = gguf_str(g, KEY("rope.scaling.type"));
	if (scaling && strcmp(scaling, "linear") == 0) {
		c->rope_type = ROPE_LINEAR;
		c->rope_factor = gguf_float(g, KEY("rope.scaling.factor"), NAN);
		if (!(c->rope_factor > 0))
			die("'%s': linear rope scaling without a positive factor", path);
	} else if (scaling && strcmp(scaling, "none") != 0) {
		die("unsupported rope scaling '%s' in '%s' (supported: none, linear)", scaling, path);
	}
#undef KEY
	if (c->C <= 0 || c->L <= 0 || c->H <= 0 || c->G <= 0 || c->F <= 0 || c->V <= 0 || c->D <= 0 ||
	    c->H % c->G != 0 || c->D % 2 != 0 || !(c->eps > 0))
		die("'%s': inconsistent model metadata (sizes, heads or rms epsilon)", path);
	c->bos_id = (int)gguf_int(g, "tokenizer.ggml.bos_token_id", -1, 0);
	c->eos_id = (int)gguf_int(g, "tokenizer.ggml.eos_token_id", -1, 0);

	int64_t HD = (int64_t)c->H * c->D, GD = (int64_t)c->G * c->D;
	m->embed = gguf_get(m, "token_embd.weight", 2, c->V, c->C, 1);
	m->norm = gguf_get(m, "output_norm.weight", 1, 0, c->C, 1);
	m->lm_head = gguf_get(m, "output.weight", 2, c->V, c->C, 0);
	c->tied = m->lm_head.data == NULL;
	if (c->tied)
		m->lm_head = m->embed;
	m->layers = callocCheck((size_t)c->L, sizeof *m->layers);
	char n[96];
#define NAME(fmt) (snprintf(n, sizeof n, "blk.%d." fmt, l), n)
	for (int l = 0; l < c->L; l++) {
		LayerWeights *w = &m->layers[l];
		w->ln1 = gguf_get(m, NAME("attn_norm.weight"), 1, 0, c->C, 1);
		w->ln2 = gguf_get(m, NAME("ffn_norm.weight"), 1, 0, c->C, 1);
		w->wq = gguf_get(m, NAME("attn_q.weight"), 2, HD, c->C, 1);
		w->wk = gguf_get(m, NAME("attn_k.weight"), 2, GD, c->C, 1);
		w->wv = gguf_get(m, NAME("attn_v.weight"), 2, GD, c->C, 1);
		w->wo = gguf_get(m, NAME("attn_output.weight"), 2, c->C, HD, 1);
		int req = c->arch == ARCH_QWEN2;
		w->bq = gguf_get(m, NAME("attn_q.bias"), 1, 0, HD, req);
		w->bk = gguf_get(m, NAME("attn_k.bias"), 1, 0, GD, req);
		w->bv = gguf_get(m, NAME("attn_v.bias"), 1, 0, GD, req);
		w->bo = gguf_get(m, NAME("attn_output.bias"), 1, 0, c->C, 0);
		w->wgate = gguf_get(m, NAME("ffn_gate.weight"), 2, c->F, c->C, 1);
		w->wup = gguf_get(m, NAME("ffn_up.weight"), 2, c->F, c->C, 1);
		w->wdown = gguf_get(m, NAME("ffn_down.weight"), 2, c->C, c->F, 1);
		if (c->arch == ARCH_LLAMA) {
			w->wq = unpermute(m, w->wq, c->H), w->bq = unpermute(m, w->bq, c->H);
			w->wk = unpermute(m, w->wk, c->G), w->bk = unpermute(m, w->bk, c->G);
		}
	}
#undef NAME
	c->qkv_bias = m->layers[0].bq.data != NULL;
	c->o_bias = m->layers[0].bo.data != NULL;
	free(arch), free(scaling);
}

/* the shapes "random:NAME" stands for: random weights for benchmarks */
static const struct {
	const char *name;
	ModelConfig c;
} random_shapes[] = {
	{"qwen2.5-3b", {.arch = ARCH_QWEN2, .L = 36, .C = 2048, .H = 16, .G = 2, .D = 128, .F = 11008, .V = 151936,
	                .eps = 1e-6f, .rope_theta = 1e6, .tied = 1, .qkv_bias = 1, .bos_id = -1, .eos_id = -1,
	                .max_pos = 32768}},
	{"qwen2.5-0.5b", {.arch = ARCH_QWEN2, .L = 24, .C = 896, .H = 14, .G = 2, .D = 64, .F = 4864, .V = 151936,
	                  .eps = 1e-6f, .rope_theta = 1e6, .tied = 1, .qkv_bias = 1, .bos_id = -1, .eos_id = -1,
	                  .max_pos = 32768}},
};

void model_load(Model *m, const char *path)
{
	if (strncmp(path, "random:", 7) == 0) {
		for (size_t i = 0; i < sizeof random_shapes / sizeof random_shapes[0]; i++)
			if (strcmp(path + 7, random_shapes[i].name) == 0) {
				model_init_random(m, &random_shapes[i].c, 1);
				free(m->path);
				m->path = strdupCheck(path);
				return;
			}
		die("%s: not a model shape known here (random:qwen2.5-3b, random:qwen2.5-0.5b)", path);
	}
	memset(m, 0, sizeof *m);
	m->path = strdupCheck(path);
	if (!file_exists(path))
		die("cannot open model '%s': no such file or directory", path);
	struct stat st;
	if (gguf_is_gguf(path)) {
		load_gguf(m, path);
	} else if (stat(path, &st) == 0 && !S_ISDIR(st.st_mode)) {
		die("not a GGUF file or a Hugging Face model folder: '%s'", path);
	} else {
		char *cfg = path_join(path, "config.json");
		if (!file_exists(cfg))
			die("no config.json in model folder '%s'", path);
		parse_config(&m->cfg, cfg);
		free(cfg);
		st_open_dir(&m->st, path);
		const ModelConfig *c = &m->cfg;
		m->embed = get2(m, "model.embed_tokens.weight", c->V, c->C);
		m->norm = get1(m, "model.norm.weight", c->C);
		if (c->tied)
			m->lm_head = m->embed;
		else
			m->lm_head = get2(m, "lm_head.weight", c->V, c->C);
		m->layers = callocCheck((size_t)c->L, sizeof *m->layers);
		for (int l = 0; l < c->L; l++)
			load_layer(m, l);
	}
	rope_init(m);
	fingerprint(m);
}

/* a weight of rows x cols bf16 in memory the model owns, uniform in
 * [-scale, scale] around center */
static Tensor random_tensor(Model *m, int ndim, int64_t rows, int64_t cols, float center, float scale,
                            uint64_t seed)
{
	size_t n = (size_t)rows * (size_t)cols;
	uint16_t *w = mallocCheck(n * sizeof *w);
	#pragma omp parallel
	{
		#pragma omp for schedule(static)
		for (size_t i = 0; i < n; i++) {
			uint64_t z = (seed + i) * 0x9e3779b97f4a7c15ULL; /* splitmix64 of the index */
			z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
			z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
			z ^= z >> 31;
			w[i] = f32_to_bf16(center + scale * (float)((double)(z >> 11) / 4503599627370496.0 - 1.0));
		}
	}
	own(m, w);
	Tensor t = {.dtype = DT_BF16, .ndim = ndim, .data = w};
	if (ndim == 2)
		t.shape[0] = rows, t.shape[1] = cols;
	else
		t.shape[0] = cols;
	return t;
}

void model_init_random(Model *m, const ModelConfig *c, uint64_t seed)
{
	memset(m, 0, sizeof *m);
	m->cfg = *c;
	m->path = strdupCheck("(random)");
	int64_t HD = (int64_t)c->H * c->D, GD = (int64_t)c->G * c->D;
	float sC = 1.7f / sqrtf((float)c->C), sF = 1.7f / sqrtf((float)c->F), sH = 1.7f / sqrtf((float)HD);
	uint64_t k = seed << 32;
	m->embed = random_tensor(m, 2, c->V, c->C, 0, 1.0f, k += 1ULL << 40);
	m->norm = random_tensor(m, 1, 1, c->C, 1, 0.1f, k += 1ULL << 40);
	m->lm_head = c->tied ? m->embed : random_tensor(m, 2, c->V, c->C, 0, sC, k += 1ULL << 40);
	m->layers = callocCheck((size_t)c->L, sizeof *m->layers);
	for (int l = 0; l < c->L; l++) {
		LayerWeights *w = &m->layers[l];
		w->ln1 = random_tensor(m, 1, 1, c->C, 1, 0.1f, k += 1ULL << 40);
		w->ln2 = random_tensor(m, 1, 1, c->C, 1, 0.1f, k += 1ULL << 40);
		w->wq = random_tensor(m, 2, HD, c->C, 0, sC, k += 1ULL << 40);
		w->wk = random_tensor(m, 2, GD, c->C, 0, sC, k += 1ULL << 40);
		w->wv = random_tensor(m, 2, GD, c->C, 0, sC, k += 1ULL << 40);
		w->wo = random_tensor(m, 2, c->C, HD, 0, sH, k += 1ULL << 40);
		if (c->qkv_bias) {
			w->bq = random_tensor(m, 1, 1, HD, 0, 0.1f, k += 1ULL << 40);
			w->bk = random_tensor(m, 1, 1, GD, 0, 0.1f, k += 1ULL << 40);
			w->bv = random_tensor(m, 1, 1, GD, 0, 0.1f, k += 1ULL << 40);
		}
		if (c->o_bias)
			w->bo = random_tensor(m, 1, 1, c->C, 0, 0.1f, k += 1ULL << 40);
		w->wgate = random_tensor(m, 2, c->F, c->C, 0, sC, k += 1ULL << 40);
		w->wup = random_tensor(m, 2, c->F, c->C, 0, sC, k += 1ULL << 40);
		w->wdown = random_tensor(m, 2, c->C, c->F, 0, sF, k += 1ULL << 40);
	}
	rope_init(m);
	fingerprint(m);
}

void model_free(Model *m)
{
	st_close(&m->st);
	if (m->gguf) {
		gguf_close(m->gguf);
		free(m->gguf);
	}
	for (int i = 0; i < m->nowned; i++)
		free(m->owned[i]);
	free(m->owned);
	free(m->layers);
	free(m->inv_freq);
	free(m->path);
	memset(m, 0, sizeof *m);
}

void model_describe(const Model *m, FILE *f)
{
	const ModelConfig *c = &m->cfg;
	fprintf(f, "%s L%d C%d H%d/G%d D%d F%d V%d %s %s rope %g fingerprint %s\n",
	        c->arch == ARCH_QWEN2 ? "qwen2" : "llama", c->L, c->C, c->H, c->G, c->D, c->F, c->V,
	        c->tied ? "tied" : "untied", dtype_name(m->layers[0].wq.dtype), c->rope_theta, m->fingerprint);
}
