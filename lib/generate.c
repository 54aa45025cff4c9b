/* generate: greedy decoding over the KV cache. */
#include "generate.h"

#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "util.h"

void generate_greedy(const Model *m, const int32_t *prompt, int n, int max_new, const int32_t *stop,
                     int nstop, IdVec *out, void (*on_token)(void *ctx, int32_t id), void *ctx)
{
	int V = m->cfg.V;
	KVCache kv;
	kvcache_init(&kv, m, n + max_new + 1);
	float *logits = mallocCheck((size_t)V * sizeof(float));
	for (int i = 0; i < n; i++)
		model_step(m, &kv, prompt[i], logits);
	for (int k = 0; k < max_new; k++) {
		int32_t best = 0;
		for (int v = 1; v < V; v++)
			if (logits[v] > logits[best])
				best = v;
		for (int s = 0; s < nstop; s++)
			if (best == stop[s])
				goto done;
		idvec_push(out, best);
		if (on_token)
			on_token(ctx, best);
		if (k + 1 < max_new)
			model_step(m, &kv, best, logits);
	}
done:
	free(logits);
	kvcache_free(&kv);
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
	/* stop at the model's end-of-sequence and at the ChatML end of turn */
	int32_t stop[3];
	int nstop = 0;
	const char *names[] = {"<|im_end|>", "<|endoftext|>"};
	if (m->cfg.eos_id >= 0)
		stop[nstop++] = m->cfg.eos_id;
	for (int i = 0; i < 2; i++)
		if (tokenizer_token_id(t, names[i]) >= 0)
			stop[nstop++] = tokenizer_token_id(t, names[i]);
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
