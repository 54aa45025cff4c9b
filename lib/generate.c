/* generate: greedy decoding over the KV cache. */
#include "generate.h"

#include <stdlib.h>

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
