/* textio: .txt and .jsonl corpora, optionally zstd-compressed. */
#include "textio.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "util.h"

static int ends_with(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && strcmp(s + a - b, suf) == 0;
}

char *read_maybe_zst(const char *path, size_t *len)
{
	size_t n;
	char *raw = read_file(path, &n);
	if (!ends_with(path, ".zst")) {
		*len = n;
		return raw;
	}
	ZSTD_DStream *ds = ZSTD_createDStream();
	size_t cap = n * 4 + 1024, r = 1;
	char *out = mallocCheck(cap);
	ZSTD_inBuffer in = {raw, n, 0};
	ZSTD_outBuffer ob = {out, cap - 1, 0};
	while (in.pos < in.size) {
		r = ZSTD_decompressStream(ds, &ob, &in);
		if (ZSTD_isError(r))
			die("corrupt zstd data in '%s': %s", path, ZSTD_getErrorName(r));
		if (ob.pos == ob.size) {
			out = reallocCheck(out, cap *= 2);
			ob.dst = out, ob.size = cap - 1;
		}
	}
	/* flush what the decoder still holds */
	while (r != 0) {
		if (ob.pos == ob.size) {
			out = reallocCheck(out, cap *= 2);
			ob.dst = out, ob.size = cap - 1;
		}
		size_t before = ob.pos;
		r = ZSTD_decompressStream(ds, &ob, &in);
		if (ZSTD_isError(r))
			die("corrupt zstd data in '%s': %s", path, ZSTD_getErrorName(r));
		if (r != 0 && ob.pos == before && ob.pos < ob.size)
			die("truncated zstd data in '%s'", path);
	}
	ZSTD_freeDStream(ds);
	free(raw);
	out[ob.pos] = '\0';
	*len = ob.pos;
	return out;
}

static void docs_add(Docs *d, char *text, size_t len)
{
	if (d->n == d->cap) {
		d->cap = d->cap ? 2 * d->cap : 64;
		d->text = reallocCheck(d->text, d->cap * sizeof *d->text);
		d->len = reallocCheck(d->len, d->cap * sizeof *d->len);
	}
	d->text[d->n] = text;
	d->len[d->n++] = len;
	d->bytes += len;
}

void docs_read(Docs *d, const char *path, const char *field, int force_jsonl)
{
	size_t n;
	char *buf = read_maybe_zst(path, &n);
	int jsonl = force_jsonl || ends_with(path, ".jsonl") || ends_with(path, ".jsonl.zst");
	if (!jsonl) {
		docs_add(d, buf, n);
		return;
	}
	size_t line = 0;
	for (char *p = buf, *end = buf + n; p < end;) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		line++;
		size_t k = 0;
		while (k < len && (p[k] == ' ' || p[k] == '\t' || p[k] == '\r'))
			k++;
		if (k < len) {
			cJSON *j = cJSON_ParseWithLength(p, len);
			const cJSON *v = j ? cJSON_GetObjectItemCaseSensitive(j, field) : NULL;
			if (!j)
				die("line %zu of '%s' is not JSON", line, path);
			if (!cJSON_IsString(v))
				die("line %zu of '%s' has no string field '%s'", line, path, field);
			char *s = strdupCheck(v->valuestring);
			docs_add(d, s, strlen(s));
			cJSON_Delete(j);
		}
		p += len + 1;
	}
	free(buf);
}

void docs_free(Docs *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->text[i]);
	free(d->text);
	free(d->len);
	memset(d, 0, sizeof *d);
}
