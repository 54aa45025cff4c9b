/* generate: greedy decoding of a teacher, over lib/decode.h's decoder. */
#include "generate.h"

#include <stdlib.h>
#include <string.h>

#include "decode.h" // defines: Decoder, decoder_init, decoder_greedy, decoder_free
#include "gguf.h"
#include "util.h"

/* the decoder's on_token, for generate_greedy's of one sequence */
typedef struct {
	void (*on_token)(void *ctx, int32_t id);
	void *ctx;
} OneSeq;

static void one_token(void *ctx, int b, int32_t id)
{
	(void)b;
	OneSeq *o = ctx;
	o->on_token(o->ctx, id);
}

void generate_greedy(const Model *m, const int32_t *prompt, int n, int max_new, const int32_t *stop,
                     int nstop, IdVec *out, void (*on_token)(void *ctx, int32_t id), void *ctx)
{
	if (max_new < 1)
		return;
	Decoder d;
	decoder_init(&d, m, NULL, 1, n + max_new, DECODER_KV);
	OneSeq o = {on_token, ctx};
	decoder_greedy(&d, &prompt, &n, max_new, stop, nstop, out, on_token ? one_token : NULL, &o);
	decoder_free(&d);
}

Tokenizer *tokenizer_for_model(const char *model_path)
{
	if (gguf_is_gguf(model_path))
		return tokenizer_load(model_path);
	char *p = path_join(model_path, "tokenizer.json");
	if (!file_exists(p))
		die("no tokenizer.json in model folder '%s'; name one with --tokenizer", model_path);
	Tokenizer *t = tokenizer_load(p);
	free(p);
	return t;
}

int chat_style_for(const Model *m, const Tokenizer *t)
{
	if (tokenizer_token_id(t, "<|im_start|>") < 0 || tokenizer_token_id(t, "<|im_end|>") < 0)
		return -1;
	return m->cfg.arch == ARCH_QWEN2 ? CHAT_QWEN2 : CHAT_SMOLLM2;
}

int generate_stop_ids(const Model *m, const Tokenizer *t, int32_t stop[GENERATE_MAX_STOP])
{
	int n = 0;
	if (m->cfg.eos_id >= 0)
		stop[n++] = m->cfg.eos_id;
	const char *names[] = {"<|im_end|>", "<|endoftext|>"};
	for (int i = 0; i < 2; i++) {
		int32_t id = tokenizer_token_id(t, names[i]);
		int seen = 0;
		for (int j = 0; j < n; j++)
			seen |= stop[j] == id;
		if (id >= 0 && !seen)
			stop[n++] = id;
	}
	return n;
}

typedef struct {
	const Tokenizer *t;
	FILE *out;
	char *buf;
	size_t cap;
} Stream;

static void print_token(void *ctx, int32_t id)
{
	Stream *s = ctx;
	size_t len = 0;
	tokenizer_decode(s->t, &id, 1, &s->buf, &len, &s->cap);
	fwrite(s->buf, 1, len, s->out);
	fflush(s->out);
}

void generate_answer(Model *m, const char *tok_path, const char *prompt, int max_new, int raw, FILE *out)
{
	Tokenizer *t = tok_path ? tokenizer_load(tok_path) : tokenizer_for_model(m->path);
	int style = raw ? -1 : chat_style_for(m, t);
	char *text = style >= 0 ? chat_prompt((ChatStyle)style, NULL, prompt) : strdupCheck(prompt);
	TokEncoder *e = tok_encoder_new(t);
	IdVec ids = {0}, ans = {0};
	tokenizer_encode(e, text, strlen(text), 1, &ids);
	for (size_t i = 0; i < ids.n; i++)
		if (ids.v[i] >= m->cfg.V)
			die("the tokenizer '%s' gives id %d, beyond the model's vocabulary of %d", tokenizer_path(t),
			    ids.v[i], m->cfg.V);
	int32_t stop[GENERATE_MAX_STOP];
	int nstop = generate_stop_ids(m, t, stop);
	fprintf(stderr, "%s: model %s: ", util_tool(), m->path);
	model_describe(m, stderr);
	fprintf(stderr, "%s: prompt of %zu tokens%s, greedy, at most %d new\n", util_tool(), ids.n,
	        style >= 0 ? " (chat template)" : "", max_new);
	model_unpack(m);
	double t0 = now_seconds();
	Stream s = {t, out, NULL, 0};
	generate_greedy(m, ids.v, (int)ids.n, max_new, stop, nstop, &ans, print_token, &s);
	fputc('\n', out);
	double dt = now_seconds() - t0;
	fprintf(stderr, "%s: %zu + %zu tokens in %.1fs (%.1f tokens/s)\n", util_tool(), ids.n, ans.n, dt,
	        (double)(ids.n + ans.n) / dt);
	free(s.buf), free(text);
	idvec_free(&ids), idvec_free(&ans);
	tok_encoder_free(e);
	tokenizer_free(t);
}
