/* gguf: header, key-value and tensor-info parsing with bounds checks. */
#include "gguf.h"

#include <stdlib.h>
#include <string.h>

/* ggml types we read, by their number in the file */
static const struct { int ggml; const char *name; int dtype; } types[] = {
	{0, "F32", DT_F32}, {1, "F16", DT_F16}, {2, "Q4_0", DT_Q4_0}, {3, "Q4_1", DT_Q4_1},
	{6, "Q5_0", DT_Q5_0}, {7, "Q5_1", DT_Q5_1}, {8, "Q8_0", DT_Q8_0}, {9, "Q8_1", -1},
	{10, "Q2_K", -1}, {11, "Q3_K", -1}, {12, "Q4_K", DT_Q4_K}, {13, "Q5_K", DT_Q5_K},
	{14, "Q6_K", DT_Q6_K}, {15, "Q8_K", -1}, {16, "IQ2_XXS", -1}, {17, "IQ2_XS", -1},
	{18, "IQ3_XXS", -1}, {19, "IQ1_S", -1}, {20, "IQ4_NL", -1}, {21, "IQ3_S", -1},
	{22, "IQ2_S", -1}, {23, "IQ4_XS", -1}, {24, "I8", -1}, {25, "I16", -1}, {26, "I32", -1},
	{27, "I64", -1}, {28, "F64", DT_F64}, {29, "IQ1_M", -1}, {30, "BF16", DT_BF16},
	{34, "TQ1_0", -1}, {35, "TQ2_0", -1},
};

const char *gguf_type_name(int ggml_type)
{
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
		if (types[i].ggml == ggml_type)
			return types[i].name;
	return "unknown";
}

typedef struct {
	const uint8_t *p, *end, *base;
	const char *path;
} Reader;

static const uint8_t *need(Reader *r, uint64_t n)
{
	if ((uint64_t)(r->end - r->p) < n)
		die("truncated GGUF file: '%s' (needs %llu more bytes at offset %lld)", r->path,
		    (unsigned long long)n, (long long)(r->p - r->base));
	const uint8_t *q = r->p;
	r->p += n;
	return q;
}

static uint64_t rd_u(Reader *r, int bytes)
{
	const uint8_t *q = need(r, (uint64_t)bytes);
	uint64_t v = 0;
	for (int i = 0; i < bytes; i++)
		v |= (uint64_t)q[i] << (8 * i);
	return v;
}

static GgufStr rd_str(Reader *r)
{
	uint64_t n = rd_u(r, 8);
	if (n > (uint64_t)(r->end - r->p))
		die("truncated GGUF file: '%s' (a string of %llu bytes runs past the end)", r->path,
		    (unsigned long long)n);
	return (GgufStr){(const char *)need(r, n), n};
}

static int scalar_size(int t)
{
	static const int sz[GGUF_NTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
	return t >= 0 && t < GGUF_NTYPES ? sz[t] : 0;
}

static void rd_value(Reader *r, GgufKV *kv, int type)
{
	kv->type = type;
	if (type == GGUF_STRING) {
		kv->v.str = rd_str(r);
	} else if (type == GGUF_ARRAY) {
		kv->atype = (int)rd_u(r, 4);
		kv->n = rd_u(r, 8);
		if (kv->atype == GGUF_STRING) {
			if (kv->n > (uint64_t)(r->end - r->p) / 8)
				die("truncated GGUF file: '%s' (array '%s')", r->path, kv->key);
			kv->strs = mallocCheck(kv->n * sizeof *kv->strs);
			for (uint64_t i = 0; i < kv->n; i++)
				kv->strs[i] = rd_str(r);
		} else {
			int sz = scalar_size(kv->atype);
			if (!sz)
				die("GGUF file '%s': array '%s' has element type %d", r->path, kv->key, kv->atype);
			if (kv->n > (uint64_t)(r->end - r->p) / (uint64_t)sz)
				die("truncated GGUF file: '%s' (array '%s')", r->path, kv->key);
			kv->data = need(r, kv->n * (uint64_t)sz);
		}
	} else {
		int sz = scalar_size(type);
		if (!sz)
			die("GGUF file '%s': key '%s' has unknown type %d", r->path, kv->key, type);
		uint64_t u = rd_u(r, sz);
		switch (type) {
		case GGUF_F32: { uint32_t b = (uint32_t)u; float f; memcpy(&f, &b, 4); kv->v.f = f; break; }
		case GGUF_F64: memcpy(&kv->v.f, &u, 8); break;
		case GGUF_I8: kv->v.i = (int8_t)u; break;
		case GGUF_I16: kv->v.i = (int16_t)u; break;
		case GGUF_I32: kv->v.i = (int32_t)u; break;
		case GGUF_I64: kv->v.i = (int64_t)u; break;
		default: kv->v.u = u;
		}
	}
}

int gguf_is_gguf(const char *path)
{
	FILE *f = fopen(path, "rb");
	char m[4] = {0};
	int ok = f && fread(m, 1, 4, f) == 4 && memcmp(m, "GGUF", 4) == 0;
	if (f)
		fclose(f);
	return ok;
}

void gguf_open(Gguf *g, const char *path)
{
	memset(g, 0, sizeof *g);
	map_file(&g->map, path);
	Reader r = {g->map.data, g->map.data + g->map.size, g->map.data, path};
	if (g->map.size < 4 || memcmp(g->map.data, "GGUF", 4) != 0)
		die("not a GGUF file: '%s'", path);
	need(&r, 4);
	g->version = (int)rd_u(&r, 4);
	if (g->version != 2 && g->version != 3)
		die("GGUF file '%s' is version %d; versions 2 and 3 are read", path, g->version);
	g->nt = rd_u(&r, 8);
	g->nkv = rd_u(&r, 8);
	if (g->nt > g->map.size / 24 || g->nkv > g->map.size / 12)
		die("truncated GGUF file: '%s' (%llu tensors, %llu keys claimed)", path,
		    (unsigned long long)g->nt, (unsigned long long)g->nkv);
	g->kv = callocCheck(g->nkv + 1, sizeof *g->kv);
	for (uint64_t i = 0; i < g->nkv; i++) {
		GgufStr k = rd_str(&r);
		g->kv[i].key = mallocCheck(k.len + 1);
		memcpy(g->kv[i].key, k.s, k.len);
		g->kv[i].key[k.len] = '\0';
		rd_value(&r, &g->kv[i], (int)rd_u(&r, 4));
	}
	g->t = callocCheck(g->nt + 1, sizeof *g->t);
	uint64_t *offs = mallocCheck((g->nt + 1) * sizeof *offs);
	for (uint64_t i = 0; i < g->nt; i++) {
		GgufTensor *t = &g->t[i];
		GgufStr n = rd_str(&r);
		t->name = mallocCheck(n.len + 1);
		memcpy(t->name, n.s, n.len);
		t->name[n.len] = '\0';
		t->ndim = (int)rd_u(&r, 4);
		if (t->ndim < 1 || t->ndim > 4)
			die("GGUF file '%s': tensor '%s' has %d dimensions", path, t->name, t->ndim);
		double numel = 1;
		for (int d = 0; d < t->ndim; d++) {
			uint64_t ne = rd_u(&r, 8);
			if (ne > (1ULL << 40))
				die("GGUF file '%s': tensor '%s' has dimension %llu", path, t->name, (unsigned long long)ne);
			t->ne[d] = (int64_t)ne;
			numel *= (double)ne;
		}
		t->ggml_type = (int)rd_u(&r, 4);
		offs[i] = rd_u(&r, 8);
		t->dtype = -1;
		for (size_t k = 0; k < sizeof types / sizeof types[0]; k++)
			if (types[k].ggml == t->ggml_type)
				t->dtype = types[k].dtype;
		if (t->dtype >= 0) {
			int bk = dtype_block((DType)t->dtype);
			if (t->ne[0] % bk != 0)
				die("GGUF file '%s': tensor '%s' has rows of %lld values, not a multiple of %s's block of %d",
				    path, t->name, (long long)t->ne[0], gguf_type_name(t->ggml_type), bk);
			t->nbytes = (size_t)(numel / bk) * dtype_block_bytes((DType)t->dtype);
		}
	}
	uint64_t align = (uint64_t)gguf_int(g, "general.alignment", 32, 0);
	if (align == 0 || (align & (align - 1)))
		die("GGUF file '%s': general.alignment %llu is not a power of two", path, (unsigned long long)align);
	uint64_t start = ((uint64_t)(r.p - g->map.data) + align - 1) / align * align;
	for (uint64_t i = 0; i < g->nt; i++) {
		GgufTensor *t = &g->t[i];
		if (offs[i] % align)
			die("GGUF file '%s': tensor '%s' is not aligned", path, t->name);
		uint64_t end = start + offs[i] + t->nbytes;
		if (start + offs[i] > g->map.size || end > g->map.size)
			die("truncated GGUF file: '%s' (tensor '%s' ends at byte %llu of %zu)", path, t->name,
			    (unsigned long long)end, g->map.size);
		t->data = g->map.data + start + offs[i];
	}
	free(offs);
}

void gguf_close(Gguf *g)
{
	for (uint64_t i = 0; i < g->nkv; i++) {
		free(g->kv[i].key);
		free(g->kv[i].strs);
	}
	for (uint64_t i = 0; i < g->nt; i++)
		free(g->t[i].name);
	free(g->kv);
	free(g->t);
	unmap_file(&g->map);
	memset(g, 0, sizeof *g);
}

const GgufKV *gguf_find(const Gguf *g, const char *key)
{
	for (uint64_t i = 0; i < g->nkv; i++)
		if (strcmp(g->kv[i].key, key) == 0)
			return &g->kv[i];
	return NULL;
}

int64_t gguf_int(const Gguf *g, const char *key, int64_t dflt, int required)
{
	const GgufKV *kv = gguf_find(g, key);
	if (!kv) {
		if (required)
			die("missing key '%s' in '%s'", key, g->map.path);
		return dflt;
	}
	switch (kv->type) {
	case GGUF_U8: case GGUF_U16: case GGUF_U32: case GGUF_U64: return (int64_t)kv->v.u;
	case GGUF_I8: case GGUF_I16: case GGUF_I32: case GGUF_I64: return kv->v.i;
	}
	die("key '%s' in '%s' is not an integer", key, g->map.path);
}

double gguf_float(const Gguf *g, const char *key, double dflt)
{
	const GgufKV *kv = gguf_find(g, key);
	if (!kv)
		return dflt;
	if (kv->type == GGUF_F32 || kv->type == GGUF_F64)
		return kv->v.f;
	return (double)gguf_int(g, key, 0, 1);
}

int gguf_bool(const Gguf *g, const char *key, int dflt)
{
	const GgufKV *kv = gguf_find(g, key);
	if (!kv)
		return dflt;
	if (kv->type != GGUF_BOOL)
		die("key '%s' in '%s' is not a boolean", key, g->map.path);
	return kv->v.u != 0;
}

char *gguf_str(const Gguf *g, const char *key)
{
	const GgufKV *kv = gguf_find(g, key);
	if (!kv)
		return NULL;
	if (kv->type != GGUF_STRING)
		die("key '%s' in '%s' is not a string", key, g->map.path);
	char *s = mallocCheck(kv->v.str.len + 1);
	memcpy(s, kv->v.str.s, kv->v.str.len);
	s[kv->v.str.len] = '\0';
	return s;
}

const GgufTensor *gguf_tensor(const Gguf *g, const char *name)
{
	for (uint64_t i = 0; i < g->nt; i++)
		if (strcmp(g->t[i].name, name) == 0)
			return &g->t[i];
	return NULL;
}
