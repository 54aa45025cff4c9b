/*
 * gguf: memory-mapped GGUF files (v2 and v3), the format of llama.cpp.
 *
 * Layout: "GGUF", u32 version, u64 tensor count, u64 key-value count; the
 * key-values (string key, u32 type, value; arrays carry an element type and a
 * u64 count); the tensor infos (name, u32 ndim, u64 ne[ndim] innermost first,
 * u32 ggml type, u64 offset); then, aligned to general.alignment (32), the
 * tensor data. Opening checks every length and offset against the file and
 * dies naming the file, so a truncated or damaged file never reads out of
 * bounds; an unsupported quantisation is refused when its tensor is used.
 */
#ifndef DASH_GGUF_H
#define DASH_GGUF_H

#include <stdint.h>

#include "tensor.h"
#include "util.h"

enum { GGUF_U8, GGUF_I8, GGUF_U16, GGUF_I16, GGUF_U32, GGUF_I32, GGUF_F32, GGUF_BOOL,
       GGUF_STRING, GGUF_ARRAY, GGUF_U64, GGUF_I64, GGUF_F64, GGUF_NTYPES };

typedef struct {
	const char *s; /* into the map, not NUL-terminated */
	uint64_t len;
} GgufStr;

typedef struct {
	char *key;
	int type;
	union {
		uint64_t u;
		int64_t i;
		double f;
		GgufStr str;
	} v;
	/* arrays */
	int atype;
	uint64_t n;
	const uint8_t *data; /* the first element, for numeric arrays */
	GgufStr *strs;       /* [n] for string arrays */
} GgufKV;

typedef struct {
	char *name;
	int ggml_type;   /* as stored */
	int dtype;       /* a DType, or -1 when we cannot dequantise it */
	int ndim;
	int64_t ne[4];   /* innermost first */
	const uint8_t *data;
	size_t nbytes;
} GgufTensor;

typedef struct Gguf {
	Mapped map;
	int version;
	GgufKV *kv;
	uint64_t nkv;
	GgufTensor *t;
	uint64_t nt;
} Gguf;

void gguf_open(Gguf *g, const char *path);
void gguf_close(Gguf *g);
int gguf_is_gguf(const char *path); /* by its magic */

const GgufKV *gguf_find(const Gguf *g, const char *key);
/* typed getters: dflt when absent; die naming the file and key when the
 * value has the wrong type (or when absent and required) */
int64_t gguf_int(const Gguf *g, const char *key, int64_t dflt, int required);
double gguf_float(const Gguf *g, const char *key, double dflt);
int gguf_bool(const Gguf *g, const char *key, int dflt);
char *gguf_str(const Gguf *g, const char *key); /* malloc'd, NULL when absent */
const GgufTensor *gguf_tensor(const Gguf *g, const char *name);
const char *gguf_type_name(int ggml_type);

#endif
