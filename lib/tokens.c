/* tokens: tokens.h5 writing and reading. */
#include "tokens.h"

#include <stdlib.h>
#include <string.h>

#include "h5io.h"
#include "textio.h"
#include "util.h"

void tokens_fingerprint(const uint32_t *ids, int64_t n, char fp[17])
{
	uint64_t h = hash_u64(HASH_INIT, (uint64_t)n);
	for (int64_t i = 0; i < n; i++)
		h = hash_u64(h, ids[i]);
	fingerprint_hex(h, fp);
}

void tokens_write(const char *path, const uint32_t *ids, int64_t n, const uint64_t *doc_offsets,
                  int64_t ndocs, const TokensMeta *meta)
{
	ASSERT(doc_offsets[0] == 0 && doc_offsets[ndocs] == (uint64_t)n);
	char fp[17];
	tokens_fingerprint(ids, n, fp);
	H5File *f = h5_create(path);
	h5_stamp(f, TOKENS_FORMAT, TOKENS_VERSION);
	int64_t d = n, dd = ndocs + 1;
	h5_write(f, "/tokens", DT_U32, 1, &d, ids);
	h5_write(f, "/doc_offsets", DT_U64, 1, &dd, doc_offsets);
	h5_attr_set_str(f, "/", "fingerprint", fp);
	h5_attr_set_i64(f, "/", "num_tokens", n);
	h5_attr_set_i64(f, "/", "num_docs", ndocs);
	h5_attr_set_i64(f, "/", "eos_id", meta->eos_id);
	h5_attr_set_str(f, "/", "sources", meta->sources);
	h5_set_input(f, "tokenizer", meta->tokenizer, meta->tokenizer_fingerprint);
	h5_close(f);
}

/* both readers' range check: every id below limit (when limit > 0) */
static void check_range(const int32_t *ids, int64_t n, int64_t limit, const char *path)
{
	for (int64_t i = 0; limit > 0 && i < n; i++)
		if (ids[i] < 0 || ids[i] >= limit)
			die("token id %lld at position %lld is out of range (vocab %lld): '%s'", (long long)ids[i],
			    (long long)i, (long long)limit, path);
}

int32_t *tokens_read(const char *path, int64_t max, int64_t limit, int64_t *n, char fp[17])
{
	H5File *f = h5_open(path);
	h5_expect_format(f, TOKENS_FORMAT, TOKENS_VERSION, "rebuild it with tokenize");
	int64_t dims[TENSOR_MAX_DIMS];
	DType t;
	if (h5_info(f, "/tokens", dims, &t) != 1 || (t != DT_U32 && t != DT_I32))
		die("'%s:/tokens' is not a vector of 32-bit token ids", path);
	int64_t count = max >= 0 && max < dims[0] ? max : dims[0];
	int32_t *ids = mallocCheck((size_t)count * sizeof *ids);
	h5_read_rows(f, "/tokens", DT_I32, 0, count, ids);
	char *s = h5_attr_get_str(f, "/", "fingerprint");
	snprintf(fp, 17, "%s", s);
	free(s);
	h5_close(f);
	check_range(ids, count, limit, path);
	*n = count;
	return ids;
}

int32_t *tokens_read_text(const char *path, int64_t limit, int64_t *n)
{
	size_t len;
	char *text = read_maybe_zst(path, &len), *p = text, *end;
	int64_t cap = 1024, k = 0;
	int32_t *ids = mallocCheck((size_t)cap * sizeof *ids);
	for (;;) {
		p += strspn(p, " \t\r\n\v\f");
		if (!*p)
			break;
		long long v = strtoll(p, &end, 10);
		if (end == p || (*end && !strchr(" \t\r\n\v\f", *end)) || v < 0 || v > INT32_MAX)
			die("not a token id: '%.*s' in '%s'", (int)strcspn(p, " \t\r\n\v\f"), p, path);
		if (k == cap)
			ids = reallocCheck(ids, (size_t)(cap *= 2) * sizeof *ids);
		ids[k++] = (int32_t)v;
		p = end;
	}
	free(text);
	check_range(ids, k, limit, path);
	*n = k;
	return ids;
}

void tokens_gather(int32_t *batch, const int32_t *seqs, int64_t nseq, int64_t first, int B, int T)
{
	for (int b = 0; b < B; b++)
		memcpy(batch + (size_t)b * T, seqs + ((first + b) % nseq) * T, (size_t)T * sizeof(int32_t));
}
