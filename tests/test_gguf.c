/* test_gguf: GGUF models and quantisations. Our dequantisers against the gguf
 * Python package's on random blocks of every type; tiny random qwen2 and llama
 * GGUF models (every supported tensor type, llama.cpp's q/k permutation)
 * against transformers reading the same files; the tokenizer built from GGUF
 * metadata against transformers' (fixtures from tests/make_gguf_ref.py). */
#include <cJSON.h>
#include <string.h>

#include "h5io.h"
#include "model.h"
#include "test.h"
#include "tokenizer.h"
#include "util.h"

#define DIR "tests/data/gguf"

static void test_dequant(void)
{
	static const struct { const char *name; DType t; } types[] = {
		{"q4_0", DT_Q4_0}, {"q4_1", DT_Q4_1}, {"q5_0", DT_Q5_0}, {"q5_1", DT_Q5_1},
		{"q8_0", DT_Q8_0}, {"q4_k", DT_Q4_K}, {"q5_k", DT_Q5_K}, {"q6_k", DT_Q6_K},
	};
	H5File *f = h5_open(DIR "/quant_ref.h5");
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
		char name[64], msg[128];
		int64_t bd[4], vd[4];
		snprintf(name, sizeof name, "/%s/blocks", types[i].name);
		uint8_t *blocks = h5_read(f, name, DT_U8, NULL, bd);
		snprintf(name, sizeof name, "/%s/values", types[i].name);
		double *want = h5_read(f, name, DT_F64, NULL, vd);
		float *got = mallocCheck((size_t)vd[0] * sizeof(float));
		ASSERT(bd[1] == (int64_t)dtype_block_bytes(types[i].t) && vd[0] == bd[0] * dtype_block(types[i].t));
		convert_to_f32(got, blocks, types[i].t, (size_t)vd[0]);
		snprintf(msg, sizeof msg, "%s: %lld random blocks dequantise as gguf-py does", types[i].name,
		         (long long)bd[0]);
		test_cond(msg, check_tensor(types[i].name, got, want, (size_t)vd[0], 1e-6, 1e-6));
		free(blocks), free(want), free(got);
	}
	h5_close(f);
}

static void test_model(const char *arch)
{
	char path[128], ref[160], msg[160];
	snprintf(path, sizeof path, DIR "/tiny-%s.gguf", arch);
	snprintf(ref, sizeof ref, "%s.ref.h5", path);
	Model m;
	model_load(&m, path);
	H5File *f = h5_open(ref);
	int64_t d[4];
	int32_t *ids = h5_read(f, "/ids", DT_I32, NULL, d);
	double *want = h5_read(f, "/logits", DT_F64, NULL, NULL);
	h5_close(f);
	int T = (int)d[0];
	float *hidden = mallocCheck((size_t)T * m.cfg.C * sizeof(float));
	float *logits = mallocCheck((size_t)T * m.cfg.V * sizeof(float));
	model_forward(&m, ids, 1, T, hidden, NULL, NULL);
	model_logits(&m, hidden, T, logits);
	snprintf(msg, sizeof msg, "tiny-%s.gguf: logits equal transformers' (float64) within 1e-4 of max|logit|", arch);
	test_cond(msg, check_tensor("logits", logits, want, (size_t)T * m.cfg.V,
	                            1e-4 * max_abs(want, (size_t)T * m.cfg.V), 0));
	/* unpacked to float32, the model computes exactly the same */
	float *again = mallocCheck((size_t)T * m.cfg.V * sizeof(float));
	model_unpack(&m);
	model_forward(&m, ids, 1, T, hidden, NULL, NULL);
	model_logits(&m, hidden, T, again);
	snprintf(msg, sizeof msg, "tiny-%s.gguf: model_unpack changes no logit", arch);
	test_cond(msg, memcmp(again, logits, (size_t)T * m.cfg.V * sizeof(float)) == 0 && m.layers[0].wq.dtype == DT_F32);
	free(again);
	free(ids), free(want), free(hidden), free(logits);
	model_free(&m);

	/* the tokenizer in the same file */
	Tokenizer *t = tokenizer_load(path);
	TokEncoder *e = tok_encoder_new(t);
	snprintf(ref, sizeof ref, "%s.tok.txt", path);
	char *text = read_file(ref, NULL), *save;
	int n = 0, bad = 0;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), n++) {
		cJSON *j = cJSON_Parse(line), *id;
		const char *s = cJSON_GetObjectItem(j, "text")->valuestring;
		IdVec got = {0};
		tokenizer_encode(e, s, strlen(s), 1, &got);
		size_t k = 0;
		int same = (size_t)cJSON_GetArraySize(cJSON_GetObjectItem(j, "ids")) == got.n;
		cJSON_ArrayForEach(id, cJSON_GetObjectItem(j, "ids"))
			same = same && k < got.n && got.v[k++] == (int32_t)id->valuedouble;
		if (!same && bad++ < 3)
			printf("  differs: '%s'\n", s);
		cJSON_Delete(j);
		idvec_free(&got);
	}
	snprintf(msg, sizeof msg, "tiny-%s.gguf: its tokenizer encodes %d texts as transformers' does", arch, n);
	test_cond(msg, n >= 7 && bad == 0);
	free(text);
	tok_encoder_free(e);
	tokenizer_free(t);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	test_dequant();
	test_model("qwen2");
	test_model("llama");
	return test_report();
}
