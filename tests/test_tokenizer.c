/* test_tokenizer: ids against Hugging Face tokenizers (fixtures made by
 * tests/make_tok_ref.py): random hard strings, the Llama 3 and GPT-2/SmolLM2
 * variants of the pre-tokenizer and post-processor, the chat prompt; decode
 * inverts encode on real text; cutting at split points changes nothing. */
#include <cJSON.h>
#include <string.h>

#include "test.h"
#include "textio.h"
#include "tokenizer.h"
#include "util.h"

#define TOK "data/qwen2.5/tokenizer.json"

static int same_ids(const IdVec *got, const cJSON *want)
{
	if ((size_t)cJSON_GetArraySize(want) != got->n)
		return 0;
	size_t i = 0;
	const cJSON *e;
	cJSON_ArrayForEach(e, want)
		if ((int32_t)e->valuedouble != got->v[i++])
			return 0;
	return 1;
}

static void show_mismatch(const char *text, const IdVec *got, const cJSON *want)
{
	char *w = cJSON_PrintUnformatted(want);
	printf("  text: %.200s\n  want: %.300s\n  got: ", text, w);
	for (size_t i = 0; i < got->n && i < 60; i++)
		printf("%d%s", got->v[i], i + 1 < got->n ? "," : "\n");
	free(w);
}

/* check every {"text", "ids"} case of an array against tokenizer t */
static int check_cases(const Tokenizer *t, const cJSON *cases, int *n)
{
	TokEncoder *e = tok_encoder_new(t);
	int bad = 0;
	const cJSON *c;
	*n = 0;
	cJSON_ArrayForEach(c, cases) {
		const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
		IdVec got = {0};
		tokenizer_encode(e, text, strlen(text), 1, &got);
		if (!same_ids(&got, cJSON_GetObjectItem(c, "ids")) && bad++ < 3)
			show_mismatch(text, &got, cJSON_GetObjectItem(c, "ids"));
		idvec_free(&got);
		(*n)++;
	}
	tok_encoder_free(e);
	return bad;
}

static void test_fuzz(const Tokenizer *t)
{
	size_t len;
	char *text = read_file("tests/data/tok/fuzz.jsonl", &len);
	cJSON *arr = cJSON_CreateArray();
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
		cJSON_AddItemToArray(arr, cJSON_Parse(line));
	int n, bad = check_cases(t, arr, &n);
	char msg[128];
	snprintf(msg, sizeof msg, "%d random hard strings encode as tokenizers does (%d differ)", n, bad);
	test_cond(msg, n == 1500 && bad == 0);
	cJSON_Delete(arr);
	free(text);
}

/* apply a variant's patch to the Qwen tokenizer.json, write it, load it */
static void test_variants(void)
{
	size_t len;
	char *vtext = read_file("tests/data/tok/variants.json", &len);
	char *base = read_file(TOK, &len);
	cJSON *variants = cJSON_Parse(vtext), *v;
	cJSON_ArrayForEach(v, variants) {
		const char *name = cJSON_GetObjectItem(v, "name")->valuestring;
		cJSON *tj = cJSON_Parse(base), *p;
		cJSON_ArrayForEach(p, cJSON_GetObjectItem(v, "patch")) {
			if (strcmp(p->string, "merges_as_strings") == 0) {
				cJSON *merges = cJSON_GetObjectItem(cJSON_GetObjectItem(tj, "model"), "merges");
				cJSON *strs = cJSON_CreateArray(), *m;
				cJSON_ArrayForEach(m, merges) {
					char s[512];
					snprintf(s, sizeof s, "%s %s", m->child->valuestring, m->child->next->valuestring);
					cJSON_AddItemToArray(strs, cJSON_CreateString(s));
				}
				cJSON_ReplaceItemInObject(cJSON_GetObjectItem(tj, "model"), "merges", strs);
			} else if (strncmp(p->string, "model.", 6) == 0) {
				cJSON_ReplaceItemInObject(cJSON_GetObjectItem(tj, "model"), p->string + 6, cJSON_Duplicate(p, 1));
			} else {
				cJSON_ReplaceItemInObject(tj, p->string, cJSON_Duplicate(p, 1));
			}
		}
		char path[128];
		snprintf(path, sizeof path, "tests/tmp/tok-%s.json", name);
		char *out = cJSON_PrintUnformatted(tj);
		FILE *f = fopenCheck(path, "w");
		fputs(out, f);
		fshut(f, path);
		Tokenizer *t = tokenizer_load(path);
		int n, bad = check_cases(t, cJSON_GetObjectItem(v, "cases"), &n);
		char msg[160];
		snprintf(msg, sizeof msg, "%s variant: %d cases encode as tokenizers does (%d differ)", name, n, bad);
		test_cond(msg, n > 200 && bad == 0);
		tokenizer_free(t);
		free(out);
		cJSON_Delete(tj);
	}
	cJSON_Delete(variants);
	free(vtext), free(base);
}

static void test_chat(const Tokenizer *t)
{
	char *p = chat_prompt(CHAT_QWEN2, NULL, "Hello");
	size_t len;
	char *ref = read_file("tests/data/tok/chat.ids", &len);
	TokEncoder *e = tok_encoder_new(t);
	IdVec got = {0};
	tokenizer_encode(e, p, strlen(p), 1, &got);
	char *s = mallocCheck(got.n * 12 + 1), *q = s;
	for (size_t i = 0; i < got.n; i++)
		q += sprintf(q, "%d\n", got.v[i]);
	test_cond("the Qwen2.5 chat prompt encodes as tokenizers encodes the ChatML text", strcmp(s, ref) == 0);
	char *sm = chat_prompt(CHAT_SMOLLM2, "", "Hi");
	test_cond("a chat prompt without a system turn",
	          strcmp(sm, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n") == 0);
	free(p), free(ref), free(s), free(sm);
	idvec_free(&got);
	tok_encoder_free(e);
}

/* decode(encode(doc)) == doc on real text, and encoding at the split points
 * piece by piece gives what the whole document gives */
static void test_corpus(const Tokenizer *t, const char *path)
{
	Docs d = {0};
	docs_read(&d, path, "text", 0);
	TokEncoder *e = tok_encoder_new(t);
	int roundtrip = 1, split = 1;
	size_t ncuts = 0, *cuts = mallocCheck((d.bytes / 4096 + 2) * sizeof *cuts);
	char *buf = NULL;
	size_t cap = 0;
	for (size_t i = 0; i < d.n; i++) {
		IdVec whole = {0}, parts = {0};
		tokenizer_encode(e, d.text[i], d.len[i], 1, &whole);
		size_t len = 0;
		tokenizer_decode(t, whole.v, whole.n, &buf, &len, &cap);
		if (len != d.len[i] || memcmp(buf, d.text[i], len) != 0)
			roundtrip = 0;
		size_t nc = tokenizer_split_points(t, d.text[i], d.len[i], 4096, cuts, d.len[i] / 4096 + 1);
		ncuts += nc;
		for (size_t k = 0, a = 0; k <= nc; k++) {
			size_t b = k < nc ? cuts[k] : d.len[i];
			tokenizer_encode(e, d.text[i] + a, b - a, 0, &parts);
			a = b;
		}
		if (parts.n != whole.n || memcmp(parts.v, whole.v, whole.n * 4) != 0)
			split = 0;
		idvec_free(&whole), idvec_free(&parts);
	}
	char msg[200];
	snprintf(msg, sizeof msg, "%s: decode(encode(doc)) == doc for all %zu documents", path, d.n);
	test_cond(msg, roundtrip);
	snprintf(msg, sizeof msg, "%s: encoding cut at %zu split points equals encoding whole", path, ncuts);
	test_cond(msg, split && ncuts > 100);
	free(cuts), free(buf);
	tok_encoder_free(e);
	docs_free(&d);
}

static void test_sanitize(void)
{
	size_t n;
	char *s = utf8_sanitize("a\xe2\x82" "b\xf0\x80\x80" "c\xed\xa0\x80", 11, &n);
	test_cond("invalid UTF-8: maximal subparts become one U+FFFD each",
	          s && strcmp(s, "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
	                         "c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd") == 0);
	free(s);
	test_cond("valid UTF-8 is left alone", utf8_sanitize("h\xc3\xa9llo \xf0\x9f\x98\x80", 11, &n) == NULL);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	Tokenizer *t = tokenizer_load(TOK);
	test_cond("the Qwen2.5 tokenizer: 151665 ids, <|endoftext|> 151643 ends documents",
	          tokenizer_size(t) == 151665 && tokenizer_default_eos(t) == 151643 &&
	          tokenizer_token_id(t, "<|im_end|>") == 151645);
	test_sanitize();
	test_fuzz(t);
	test_chat(t);
	test_variants();
	test_corpus(t, "data/text/moby-dick.jsonl.zst");
	tokenizer_free(t);
	return test_report();
}
