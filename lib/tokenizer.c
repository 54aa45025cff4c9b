/*
 * tokenizer: byte-level BPE (see tokenizer.h for the algorithm and its
 * contract). Loading builds three tables: vocabulary text -> id, merge pair
 * -> (rank, merged id), id -> bytes. Encoding runs per thread in a
 * TokEncoder with its own regex match data and a direct-mapped word cache.
 */
#include "tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cJSON.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "gguf.h"
#include "util.h"

#define MAX_PRE 8      /* pre-tokenisers in a sequence */
#define MAX_TEMPLATE 8 /* special ids the post-processor adds on each side */

typedef enum { PRE_SPLIT, PRE_DIGITS, PRE_BYTELEVEL } PreType;

typedef struct {
	PreType type;
	pcre2_code *re;   /* SPLIT, and BYTELEVEL with use_regex */
	int individual;   /* DIGITS */
	int prefix_space; /* BYTELEVEL add_prefix_space */
} PreTok;

typedef struct {
	char *text;
	size_t len;
	int32_t id;
	int special, lstrip, rstrip;
} Added;

/* open addressing: byte string -> id */
typedef struct {
	uint32_t *slot; /* index + 1 into keys, 0 empty */
	uint32_t mask;
	const char **keys;
	uint32_t *klen;
	int32_t *vals;
	uint32_t n, cap;
} StrMap;

/* open addressing: (left id, right id) -> (rank, merged id) */
typedef struct {
	uint64_t *key; /* (a << 32 | b) + 1, 0 empty */
	uint32_t *rank;
	int32_t *merged;
	uint64_t mask;
} MergeMap;

struct Tokenizer {
	char *path;
	char fingerprint[17];
	int size;           /* highest id + 1 */
	char **text;        /* [size] each id's text as written (byte-level for vocab), or NULL */
	uint8_t **bytes;    /* [size] each id's decoded bytes */
	uint32_t *nbytes;   /* [size] */
	StrMap vocab;       /* byte-level text of model vocabulary -> id */
	MergeMap merges;
	int32_t byte_id[256];    /* -1: a byte with no token (dropped, or unk_id) */
	int32_t unk_id;          /* -1: none */
	uint16_t byte_char[256]; /* the byte-level code point of each byte */
	Added *added;       /* sorted longest first */
	int nadded;
	uint8_t added_first[256]; /* bytes that start some added token */
	int norm;           /* utf8proc options; 0: no normaliser */
	PreTok pre[MAX_PRE];
	int npre;
	int ignore_merges;
	int32_t prefix[MAX_TEMPLATE], suffix[MAX_TEMPLATE];
	int nprefix, nsuffix;
	int splittable;
};

// ----------------------------------------------------------------------------
// small containers

void idvec_push(IdVec *a, int32_t id)
{
	if (a->n == a->cap)
		a->v = reallocCheck(a->v, (a->cap = a->cap ? 2 * a->cap : 256) * sizeof *a->v);
	a->v[a->n++] = id;
}

void idvec_free(IdVec *a)
{
	free(a->v);
	memset(a, 0, sizeof *a);
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

static uint32_t hash32(const void *p, size_t n)
{
	return (uint32_t)mix64(hash_bytes(HASH_INIT, p, n));
}

static void strmap_init(StrMap *m, uint32_t n)
{
	uint32_t cap = 16;
	while (cap < 2 * n)
		cap *= 2;
	m->slot = callocCheck(cap, sizeof *m->slot);
	m->mask = cap - 1;
	m->keys = mallocCheck((size_t)n * sizeof *m->keys);
	m->klen = mallocCheck((size_t)n * sizeof *m->klen);
	m->vals = mallocCheck((size_t)n * sizeof *m->vals);
	m->n = 0;
	m->cap = n;
}

static int32_t strmap_get(const StrMap *m, const char *k, size_t len)
{
	for (uint32_t h = hash32(k, len) & m->mask;; h = (h + 1) & m->mask) {
		uint32_t s = m->slot[h];
		if (!s)
			return -1;
		if (m->klen[s - 1] == len && memcmp(m->keys[s - 1], k, len) == 0)
			return m->vals[s - 1];
	}
}

/* returns 0 when the key was already there (its value is replaced) */
static int strmap_put(StrMap *m, const char *k, size_t len, int32_t v)
{
	uint32_t h = hash32(k, len) & m->mask;
	for (;; h = (h + 1) & m->mask) {
		uint32_t s = m->slot[h];
		if (!s)
			break;
		if (m->klen[s - 1] == len && memcmp(m->keys[s - 1], k, len) == 0) {
			m->vals[s - 1] = v;
			return 0;
		}
	}
	ASSERT(m->n < m->cap);
	m->keys[m->n] = k, m->klen[m->n] = (uint32_t)len, m->vals[m->n] = v;
	m->slot[h] = ++m->n;
	return 1;
}

static void strmap_free(StrMap *m)
{
	free(m->slot), free(m->keys), free(m->klen), free(m->vals);
}

static void merges_init(MergeMap *m, size_t n)
{
	uint64_t cap = 16;
	while (cap < 2 * n)
		cap *= 2;
	m->key = callocCheck(cap, sizeof *m->key);
	m->rank = mallocCheck(cap * sizeof *m->rank);
	m->merged = mallocCheck(cap * sizeof *m->merged);
	m->mask = cap - 1;
}

static void merges_put(MergeMap *m, int32_t a, int32_t b, uint32_t rank, int32_t merged)
{
	uint64_t k = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
	uint64_t h = mix64(k) & m->mask;
	while (m->key[h] && m->key[h] != k)
		h = (h + 1) & m->mask;
	m->key[h] = k, m->rank[h] = rank, m->merged[h] = merged; /* a later duplicate wins, as in tokenizers */
}

/* returns the slot of (a, b), or -1 */
static int64_t merges_get(const MergeMap *m, int32_t a, int32_t b)
{
	uint64_t k = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
	for (uint64_t h = mix64(k) & m->mask;; h = (h + 1) & m->mask) {
		if (m->key[h] == k)
			return (int64_t)h;
		if (!m->key[h])
			return -1;
	}
}

// ----------------------------------------------------------------------------
// UTF-8

static int utf8_encode(uint32_t c, char *o)
{
	if (c < 0x80) { o[0] = (char)c; return 1; }
	if (c < 0x800) { o[0] = (char)(0xc0 | c >> 6); o[1] = (char)(0x80 | (c & 0x3f)); return 2; }
	if (c < 0x10000) {
		o[0] = (char)(0xe0 | c >> 12); o[1] = (char)(0x80 | ((c >> 6) & 0x3f));
		o[2] = (char)(0x80 | (c & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | c >> 18); o[1] = (char)(0x80 | ((c >> 12) & 0x3f));
	o[2] = (char)(0x80 | ((c >> 6) & 0x3f)); o[3] = (char)(0x80 | (c & 0x3f));
	return 4;
}

/* length of the valid UTF-8 sequence at s (Unicode table 3-7), or the
 * negated length of its maximal invalid subpart (at least 1) */
static int utf8_valid(const uint8_t *s, size_t n)
{
	uint8_t c = s[0];
	if (c < 0x80)
		return 1;
	int need;
	uint8_t lo = 0x80, hi = 0xbf;
	if (c >= 0xc2 && c <= 0xdf) need = 1;
	else if (c == 0xe0) need = 2, lo = 0xa0;
	else if (c >= 0xe1 && c <= 0xec) need = 2;
	else if (c == 0xed) need = 2, hi = 0x9f;
	else if (c >= 0xee && c <= 0xef) need = 2;
	else if (c == 0xf0) need = 3, lo = 0x90;
	else if (c >= 0xf1 && c <= 0xf3) need = 3;
	else if (c == 0xf4) need = 3, hi = 0x8f;
	else return -1;
	for (int i = 1; i <= need; i++) {
		if ((size_t)i >= n || s[i] < lo || s[i] > hi)
			return -i;
		lo = 0x80, hi = 0xbf;
	}
	return need + 1;
}

char *utf8_sanitize(const char *s, size_t n, size_t *out_n)
{
	const uint8_t *u = (const uint8_t *)s;
	size_t i = 0;
	while (i < n) {
		int k = utf8_valid(u + i, n - i);
		if (k < 0)
			break;
		i += (size_t)k;
	}
	if (i == n)
		return NULL;
	char *o = mallocCheck(n * 3 + 1); /* each bad byte may become 3 */
	memcpy(o, s, i);
	size_t j = i;
	while (i < n) {
		int k = utf8_valid(u + i, n - i);
		if (k > 0) {
			memcpy(o + j, s + i, (size_t)k);
			j += (size_t)k, i += (size_t)k;
		} else {
			memcpy(o + j, "\xef\xbf\xbd", 3);
			j += 3, i += (size_t)-k;
		}
	}
	o[j] = '\0';
	*out_n = j;
	return o;
}

// ----------------------------------------------------------------------------
// loading

static void bytelevel_table(Tokenizer *t)
{
	/* GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest
	 * to 256, 257, ... in byte order */
	int n = 0;
	for (int b = 0; b < 256; b++) {
		int printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
		t->byte_char[b] = (uint16_t)(printable ? b : 256 + n++);
	}
}

/* the bytes that a byte-level string stands for (inv maps code points below
 * 512 back to bytes); -1 if it is not one */
static long bytelevel_decode(const int16_t *inv, const char *s, uint8_t *out)
{
	long n = 0;
	const uint8_t *p = (const uint8_t *)s;
	while (*p) {
		utf8proc_int32_t c;
		utf8proc_ssize_t k = utf8proc_iterate(p, -1, &c);
		if (k <= 0 || c >= 512 || inv[c] < 0)
			return -1;
		out[n++] = (uint8_t)inv[c];
		p += k;
	}
	return n;
}

/* Oniguruma's \s (what tokenizers' regexes mean) is tab..CR, NEL and the
 * Unicode separators; PCRE2's also takes U+180E. Spell it out. */
static char *translate_regex(const char *re, const char *path)
{
	size_t n = strlen(re);
	char *o = mallocCheck(n * 24 + 1), *q = o;
	int in_class = 0;
	for (size_t i = 0; i < n; i++) {
		if (re[i] == '\\' && i + 1 < n) {
			char c = re[i + 1];
			if (c == 's' || c == 'S') {
				const char *set = "\\t\\n\\x0B\\f\\r\\x{85}\\p{Z}";
				if (in_class && c == 'S')
					die("regex in '%s': \\S inside a character class is not supported", path);
				q += sprintf(q, in_class ? "%s" : c == 's' ? "[%s]" : "[^%s]", set);
			} else {
				*q++ = '\\', *q++ = c;
			}
			i++;
			continue;
		}
		if (re[i] == '[' && !in_class)
			in_class = 1;
		else if (re[i] == ']' && in_class)
			in_class = 0;
		*q++ = re[i];
	}
	*q = '\0';
	return o;
}

static pcre2_code *compile_regex(const char *re, const char *path)
{
	char *tr = translate_regex(re, path);
	int err;
	PCRE2_SIZE off;
	pcre2_code *code = pcre2_compile((PCRE2_SPTR)tr, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
	if (!code) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(err, msg, sizeof msg);
		die("regex in '%s' does not compile at offset %zu: %s", path, (size_t)off, (char *)msg);
	}
	pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
	free(tr);
	return code;
}

static const char *GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static const char *jstr(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jtrue(const cJSON *o, const char *k)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k));
}

static void add_pretok(Tokenizer *t, const cJSON *p)
{
	const char *type = jstr(p, "type");
	if (!type)
		die("pre_tokenizer without a type in '%s'", t->path);
	if (strcmp(type, "Sequence") == 0) {
		const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers"), *e;
		cJSON_ArrayForEach(e, s)
			add_pretok(t, e);
		return;
	}
	if (t->npre == MAX_PRE)
		die("more than %d pre_tokenizers in '%s'", MAX_PRE, t->path);
	PreTok *q = &t->pre[t->npre++];
	memset(q, 0, sizeof *q);
	if (strcmp(type, "Split") == 0) {
		const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
		const char *re = jstr(pat, "Regex"), *str = jstr(pat, "String");
		const char *beh = jstr(p, "behavior");
		if (!re && !str)
			die("Split pre_tokenizer without a pattern in '%s'", t->path);
		if (!beh || strcmp(beh, "Isolated") != 0 || jtrue(p, "invert"))
			die("Split pre_tokenizer in '%s': only behavior Isolated without invert is supported", t->path);
		if (str) { /* a literal: quote it */
			char *lit = mallocCheck(strlen(str) + 5);
			sprintf(lit, "\\Q%s\\E", str);
			q->re = compile_regex(lit, t->path);
			free(lit);
		} else {
			q->re = compile_regex(re, t->path);
		}
		q->type = PRE_SPLIT;
	} else if (strcmp(type, "Digits") == 0) {
		q->type = PRE_DIGITS;
		q->individual = jtrue(p, "individual_digits");
	} else if (strcmp(type, "ByteLevel") == 0) {
		q->type = PRE_BYTELEVEL;
		q->prefix_space = jtrue(p, "add_prefix_space");
		const cJSON *ur = cJSON_GetObjectItemCaseSensitive(p, "use_regex");
		if (!ur || cJSON_IsTrue(ur))
			q->re = compile_regex(GPT2_REGEX, t->path);
	} else {
		die("unsupported pre_tokenizer '%s' in '%s' (supported: Split, Digits, ByteLevel, Sequence)", type,
		    t->path);
	}
}

static void set_normalizer(Tokenizer *t, const cJSON *n)
{
	if (!n || cJSON_IsNull(n))
		return;
	const char *type = jstr(n, "type");
	if (type && strcmp(type, "Sequence") == 0) {
		const cJSON *e;
		cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(n, "normalizers"))
			set_normalizer(t, e);
		return;
	}
	int opt = UTF8PROC_STABLE;
	if (type && strcmp(type, "NFC") == 0) opt |= UTF8PROC_COMPOSE;
	else if (type && strcmp(type, "NFD") == 0) opt |= UTF8PROC_DECOMPOSE;
	else if (type && strcmp(type, "NFKC") == 0) opt |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
	else if (type && strcmp(type, "NFKD") == 0) opt |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
	else die("unsupported normalizer '%s' in '%s' (supported: NFC, NFD, NFKC, NFKD, Sequence)",
	         type ? type : "?", t->path);
	if (t->norm)
		die("more than one normalizer in '%s'", t->path);
	t->norm = opt;
}

static void set_post(Tokenizer *t, const cJSON *p)
{
	if (!p || cJSON_IsNull(p))
		return;
	const char *type = jstr(p, "type");
	if (type && strcmp(type, "Sequence") == 0) {
		const cJSON *e;
		cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(p, "processors"))
			set_post(t, e);
		return;
	}
	if (type && strcmp(type, "ByteLevel") == 0)
		return; /* offsets only */
	if (!type || strcmp(type, "TemplateProcessing") != 0)
		die("unsupported post_processor '%s' in '%s' (supported: ByteLevel, TemplateProcessing)",
		    type ? type : "?", t->path);
	const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single");
	const cJSON *specials = cJSON_GetObjectItemCaseSensitive(p, "special_tokens"), *e;
	int seen_seq = 0;
	cJSON_ArrayForEach(e, single) {
		const cJSON *st = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
		if (cJSON_GetObjectItemCaseSensitive(e, "Sequence")) {
			seen_seq = 1;
			continue;
		}
		const char *name = jstr(st, "id");
		const cJSON *ids = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(specials, name ? name : ""), "ids"), *id;
		if (!name || !cJSON_IsArray(ids))
			die("TemplateProcessing in '%s': special token without ids", t->path);
		cJSON_ArrayForEach(id, ids) {
			int32_t *v = seen_seq ? t->suffix : t->prefix;
			int *nv = seen_seq ? &t->nsuffix : &t->nprefix;
			if (*nv == MAX_TEMPLATE || !cJSON_IsNumber(id))
				die("TemplateProcessing in '%s': bad special token ids", t->path);
			v[(*nv)++] = (int32_t)id->valuedouble;
		}
	}
}

static int cmp_added(const void *a, const void *b)
{
	const Added *x = a, *y = b;
	return x->len != y->len ? (x->len < y->len ? 1 : -1) : memcmp(x->text, y->text, x->len);
}

// ----------------------------------------------------------------------------
// building: the JSON and GGUF loaders both go through these

static Tokenizer *tok_new(const char *path, uint64_t fingerprint)
{
	Tokenizer *t = callocCheck(1, sizeof *t);
	t->path = strdupCheck(path);
	t->unk_id = -1;
	fingerprint_hex(fingerprint, t->fingerprint);
	bytelevel_table(t);
	return t;
}

/* tok_ids sizes the id tables for ids 0 .. size-1 and nv vocabulary entries */
static void tok_ids(Tokenizer *t, int size, int nv)
{
	t->size = size;
	t->text = callocCheck((size_t)size, sizeof *t->text);
	t->bytes = callocCheck((size_t)size, sizeof *t->bytes);
	t->nbytes = callocCheck((size_t)size, sizeof *t->nbytes);
	strmap_init(&t->vocab, (uint32_t)nv);
}

/* tok_vocab sets a vocabulary entry: its byte-level text and its bytes */
static void tok_vocab(Tokenizer *t, int32_t id, const char *s, size_t len, const int16_t *inv)
{
	if (t->text[id])
		return;
	t->text[id] = mallocCheck(len + 1);
	memcpy(t->text[id], s, len);
	t->text[id][len] = '\0';
	strmap_put(&t->vocab, t->text[id], len, id);
	uint8_t *b = mallocCheck(len + 1);
	long nb = bytelevel_decode(inv, t->text[id], b);
	if (nb < 0) /* not byte-level text: keep it as it is */
		nb = (long)len, memcpy(b, s, len);
	t->bytes[id] = b;
	t->nbytes[id] = (uint32_t)nb;
}

static void inv_table(const Tokenizer *t, int16_t inv[512])
{
	for (int i = 0; i < 512; i++)
		inv[i] = -1;
	for (int b = 0; b < 256; b++)
		inv[t->byte_char[b]] = (int16_t)b;
}

/* tok_added registers an added token (matched in raw text) */
static void tok_added(Tokenizer *t, int32_t id, const char *s, size_t len, int special, int lstrip, int rstrip)
{
	if (len == 0)
		die("empty added token %d in '%s'", id, t->path);
	t->added = reallocCheck(t->added, (size_t)(t->nadded + 1) * sizeof *t->added);
	Added *a = &t->added[t->nadded++];
	a->id = id;
	a->text = mallocCheck(len + 1);
	memcpy(a->text, s, len);
	a->text[len] = '\0';
	a->len = len;
	a->special = special, a->lstrip = lstrip, a->rstrip = rstrip;
	free(t->text[id]), free(t->bytes[id]);
	t->text[id] = strdupCheck(a->text);
	t->bytes[id] = (uint8_t *)strdupCheck(a->text);
	t->nbytes[id] = (uint32_t)len;
	t->added_first[(uint8_t)a->text[0]] = 1;
}

/* tok_merge adds merge number rank: a + b -> ab */
static void tok_merge(Tokenizer *t, const char *a, size_t la, const char *b, size_t lb, uint32_t rank,
                      char **cat, size_t *catcap)
{
	if (la + lb + 1 > *catcap)
		*cat = reallocCheck(*cat, *catcap = 2 * (la + lb + 1));
	memcpy(*cat, a, la), memcpy(*cat + la, b, lb);
	int32_t ia = strmap_get(&t->vocab, a, la), ib = strmap_get(&t->vocab, b, lb);
	int32_t im = strmap_get(&t->vocab, *cat, la + lb);
	if (ia < 0 || ib < 0 || im < 0)
		die("merge %u in '%s' uses a token that is not in the vocabulary", rank, t->path);
	merges_put(&t->merges, ia, ib, rank, im);
}

/* tok_finish checks the whole and derives what encoding needs */
static void tok_finish(Tokenizer *t)
{
	int missing = 0;
	for (int b = 0; b < 256; b++) {
		char s[4];
		int k = utf8_encode(t->byte_char[b], s);
		t->byte_id[b] = strmap_get(&t->vocab, s, (size_t)k);
		if (t->byte_id[b] < 0)
			t->byte_id[b] = t->unk_id;
		missing += t->byte_id[b] < 0;
	}
	/* a few bytes without a token is what GPT-2-family vocabularies do
	 * (tokenizers drops them); none at all is not byte-level BPE */
	if (missing > 64)
		die("tokenizer '%s' is not byte-level: %d bytes have no token", t->path, missing);
	qsort(t->added, (size_t)t->nadded, sizeof *t->added, cmp_added);
	for (int i = 0; i < t->nprefix; i++)
		if (t->prefix[i] < 0 || t->prefix[i] >= t->size)
			die("post_processor of '%s' adds an unknown id %d", t->path, t->prefix[i]);
	for (int i = 0; i < t->nsuffix; i++)
		if (t->suffix[i] < 0 || t->suffix[i] >= t->size)
			die("post_processor of '%s' adds an unknown id %d", t->path, t->suffix[i]);
	/* cutting a text at "\n" + letter is safe unless a prefix space would
	 * be added to each piece or an added token spans a line break */
	t->splittable = 1;
	for (int i = 0; i < t->npre; i++)
		if (t->pre[i].type == PRE_BYTELEVEL && t->pre[i].prefix_space)
			t->splittable = 0;
	for (int i = 0; i < t->nadded; i++)
		if (strchr(t->added[i].text, '\n'))
			t->splittable = 0;
}

// ----------------------------------------------------------------------------
// tokenizer.json

static Tokenizer *tokenizer_load_json(const char *path)
{
	size_t flen;
	char *json = read_file(path, &flen);
	Tokenizer *t = tok_new(path, hash_bytes(HASH_INIT, json, flen));
	cJSON *root = cJSON_ParseWithLength(json, flen);
	if (!root || !cJSON_IsObject(root))
		die("malformed JSON in tokenizer file '%s'", path);
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
	const char *mtype = jstr(model, "type");
	if (!model || (mtype && strcmp(mtype, "BPE") != 0))
		die("tokenizer '%s' is not a BPE model (model.type '%s')", path, mtype ? mtype : "missing");
	const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
	const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
	if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
		die("tokenizer '%s' lacks model.vocab or model.merges", path);
	if (jtrue(model, "byte_fallback"))
		die("tokenizer '%s' uses byte_fallback (SentencePiece-style BPE), which is not supported", path);
	const char *pre = jstr(model, "continuing_subword_prefix"), *suf = jstr(model, "end_of_word_suffix");
	if ((pre && *pre) || (suf && *suf))
		die("tokenizer '%s' uses a subword prefix or suffix, which is not supported", path);
	t->ignore_merges = jtrue(model, "ignore_merges");

	/* ids: the vocabulary and the added tokens */
	const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), *e;
	int maxid = -1;
	cJSON_ArrayForEach(e, vocab) {
		if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 1e8)
			die("vocab entry '%s' in '%s' has no valid id", e->string, path);
		maxid = (int)e->valuedouble > maxid ? (int)e->valuedouble : maxid;
	}
	cJSON_ArrayForEach(e, added) {
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
		if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 1e8 || !jstr(e, "content"))
			die("added token without id or content in '%s'", path);
		maxid = (int)id->valuedouble > maxid ? (int)id->valuedouble : maxid;
	}
	tok_ids(t, maxid + 1, cJSON_GetArraySize(vocab));
	int16_t inv[512];
	inv_table(t, inv);
	cJSON_ArrayForEach(e, vocab)
		tok_vocab(t, (int32_t)e->valuedouble, e->string, strlen(e->string), inv);
	cJSON_ArrayForEach(e, added) {
		const char *c = jstr(e, "content");
		tok_added(t, (int32_t)cJSON_GetObjectItemCaseSensitive(e, "id")->valuedouble, c, strlen(c),
		          jtrue(e, "special"), jtrue(e, "lstrip"), jtrue(e, "rstrip"));
	}

	/* merges: "a b" strings or ["a", "b"] pairs */
	merges_init(&t->merges, (size_t)cJSON_GetArraySize(merges));
	uint32_t rank = 0;
	char *cat = NULL;
	size_t catcap = 0;
	cJSON_ArrayForEach(e, merges) {
		const char *a, *b, *sp;
		size_t la, lb;
		if (cJSON_IsString(e)) {
			a = e->valuestring;
			sp = strchr(a, ' ');
			if (!sp || strchr(sp + 1, ' '))
				die("merge %u in '%s' is not two tokens: '%s'", rank, path, a);
			la = (size_t)(sp - a), b = sp + 1, lb = strlen(b);
		} else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
		           cJSON_IsString(e->child->next)) {
			a = e->child->valuestring, b = e->child->next->valuestring;
			la = strlen(a), lb = strlen(b);
		} else {
			die("merge %u in '%s' is neither \"a b\" nor [\"a\", \"b\"]", rank, path);
		}
		tok_merge(t, a, la, b, lb, rank++, &cat, &catcap);
	}
	free(cat);

	const char *unk = jstr(model, "unk_token");
	if (unk && (t->unk_id = tokenizer_token_id(t, unk)) < 0)
		die("unk_token '%s' of '%s' is not in the vocabulary", unk, path);
	set_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"));
	const cJSON *pt = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
	if (pt && !cJSON_IsNull(pt))
		add_pretok(t, pt);
	set_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"));
	tok_finish(t);
	cJSON_Delete(root);
	free(json);
	return t;
}

// ----------------------------------------------------------------------------
// GGUF metadata (tokenizer.ggml.*): model "gpt2" is byte-level BPE; "pre"
// names the family's pre-tokenisation, which we set up as that family's
// tokenizer.json does

static const char *QWEN2_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *LLAMA3_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static Tokenizer *tokenizer_load_gguf(const char *path)
{
	Gguf g;
	gguf_open(&g, path);
	char *model = gguf_str(&g, "tokenizer.ggml.model"), *pre = gguf_str(&g, "tokenizer.ggml.pre");
	const GgufKV *toks = gguf_find(&g, "tokenizer.ggml.tokens");
	const GgufKV *types = gguf_find(&g, "tokenizer.ggml.token_type");
	const GgufKV *merges = gguf_find(&g, "tokenizer.ggml.merges");
	if (!model)
		die("GGUF file '%s' has no tokenizer (tokenizer.ggml.model)", path);
	if (strcmp(model, "gpt2") != 0)
		die("GGUF file '%s': tokenizer model '%s' is not supported (supported: gpt2, byte-level BPE)", path, model);
	if (!toks || toks->type != GGUF_ARRAY || toks->atype != GGUF_STRING || !merges ||
	    merges->type != GGUF_ARRAY || merges->atype != GGUF_STRING)
		die("GGUF file '%s' lacks tokenizer.ggml.tokens or tokenizer.ggml.merges", path);
	if (types && (types->type != GGUF_ARRAY || types->n != toks->n ||
	              (types->atype != GGUF_I32 && types->atype != GGUF_U32)))
		die("GGUF file '%s': tokenizer.ggml.token_type does not match the tokens", path);

	/* the fingerprint: every token and merge, in order */
	uint64_t h = hash_str(HASH_INIT, pre ? pre : "");
	for (uint64_t i = 0; i < toks->n; i++)
		h = hash_bytes(h, toks->strs[i].s, toks->strs[i].len), h = hash_u64(h, i);
	for (uint64_t i = 0; i < merges->n; i++)
		h = hash_bytes(h, merges->strs[i].s, merges->strs[i].len), h = hash_u64(h, i);
	Tokenizer *t = tok_new(path, h);
	tok_ids(t, (int)toks->n, (int)toks->n);
	int16_t inv[512];
	inv_table(t, inv);
	for (uint64_t i = 0; i < toks->n; i++) {
		int32_t type = 1;
		if (types)
			memcpy(&type, types->data + 4 * i, 4);
		/* 3 control and 4 user-defined are matched in raw text, as the
		 * added tokens of tokenizer.json; 5 (unused padding) only decodes */
		if (type == 3 || type == 4)
			tok_added(t, (int32_t)i, toks->strs[i].s, toks->strs[i].len, type == 3, 0, 0);
		else
			tok_vocab(t, (int32_t)i, toks->strs[i].s, toks->strs[i].len, inv);
	}
	merges_init(&t->merges, merges->n);
	char *cat = NULL;
	size_t catcap = 0;
	for (uint64_t i = 0; i < merges->n; i++) {
		const char *a = merges->strs[i].s, *sp = memchr(a, ' ', merges->strs[i].len);
		if (!sp)
			die("merge %llu in '%s' is not two tokens", (unsigned long long)i, path);
		size_t la = (size_t)(sp - a), lb = merges->strs[i].len - la - 1;
		tok_merge(t, a, la, sp + 1, lb, (uint32_t)i, &cat, &catcap);
	}
	free(cat);

	const char *p = pre ? pre : "default";
	PreTok *q = &t->pre[0];
	if (strcmp(p, "qwen2") == 0) {
		t->norm = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
		*q = (PreTok){PRE_SPLIT, compile_regex(QWEN2_REGEX, path), 0, 0};
		t->pre[1] = (PreTok){PRE_BYTELEVEL, NULL, 0, 0};
		t->npre = 2;
	} else if (strcmp(p, "llama-bpe") == 0 || strcmp(p, "llama3") == 0) {
		*q = (PreTok){PRE_SPLIT, compile_regex(LLAMA3_REGEX, path), 0, 0};
		t->pre[1] = (PreTok){PRE_BYTELEVEL, NULL, 0, 0};
		t->npre = 2;
		t->ignore_merges = 1;
	} else if (strcmp(p, "smollm") == 0) {
		*q = (PreTok){PRE_DIGITS, NULL, 1, 0};
		t->pre[1] = (PreTok){PRE_BYTELEVEL, compile_regex(GPT2_REGEX, path), 0, 0};
		t->npre = 2;
	} else if (strcmp(p, "gpt2") == 0 || strcmp(p, "default") == 0) {
		*q = (PreTok){PRE_BYTELEVEL, compile_regex(GPT2_REGEX, path), 0, 0};
		t->npre = 1;
	} else {
		die("GGUF file '%s': pre-tokenizer '%s' is not supported (supported: qwen2, llama-bpe, smollm, gpt2)",
		    path, p);
	}
	t->unk_id = (int32_t)gguf_int(&g, "tokenizer.ggml.unknown_token_id", -1, 0);
	if (t->unk_id >= t->size)
		die("GGUF file '%s': unknown_token_id %d is out of range", path, t->unk_id);
	if (gguf_bool(&g, "tokenizer.ggml.add_bos_token", 0)) {
		int64_t bos = gguf_int(&g, "tokenizer.ggml.bos_token_id", -1, 1);
		t->prefix[t->nprefix++] = (int32_t)bos;
	}
	tok_finish(t);
	free(model), free(pre);
	gguf_close(&g);
	return t;
}

Tokenizer *tokenizer_load(const char *path)
{
	if (gguf_is_gguf(path))
		return tokenizer_load_gguf(path);
	return tokenizer_load_json(path);
}

void tokenizer_free(Tokenizer *t)
{
	if (!t)
		return;
	for (int i = 0; i < t->size; i++)
		free(t->text[i]), free(t->bytes[i]);
	for (int i = 0; i < t->nadded; i++)
		free(t->added[i].text);
	for (int i = 0; i < t->npre; i++)
		if (t->pre[i].re)
			pcre2_code_free(t->pre[i].re);
	free(t->text), free(t->bytes), free(t->nbytes), free(t->added);
	strmap_free(&t->vocab);
	free(t->merges.key), free(t->merges.rank), free(t->merges.merged);
	free(t->path);
	free(t);
}

const char *tokenizer_path(const Tokenizer *t) { return t->path; }
const char *tokenizer_fingerprint(const Tokenizer *t) { return t->fingerprint; }
int tokenizer_size(const Tokenizer *t) { return t->size; }

int tokenizer_token_id(const Tokenizer *t, const char *text)
{
	for (int i = 0; i < t->nadded; i++)
		if (strcmp(t->added[i].text, text) == 0)
			return t->added[i].id;
	return strmap_get(&t->vocab, text, strlen(text));
}

int tokenizer_default_eos(const Tokenizer *t)
{
	static const char *names[] = {"<|endoftext|>", "<|end_of_text|>", "</s>"};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		int id = tokenizer_token_id(t, names[i]);
		if (id >= 0)
			return id;
	}
	return -1;
}

// ----------------------------------------------------------------------------
// encoding

#define CACHE_SLOTS 32768
#define CACHE_BYTES 38
#define CACHE_IDS 12

typedef struct {
	uint32_t hash; /* 0: empty */
	uint8_t len, nids;
	uint8_t bytes[CACHE_BYTES];
	int32_t ids[CACHE_IDS];
} CacheEntry;

typedef struct {
	int32_t id;
	int32_t prev, next;
	int32_t len; /* 0 once merged into its left neighbour */
} Symbol;

typedef struct {
	uint32_t rank;
	int32_t pos, merged;
} Cand;

typedef struct {
	char *b;
	size_t n, cap;
} Buf;

typedef struct {
	size_t off, len; /* into a Buf */
} Piece;

struct TokEncoder {
	const Tokenizer *t;
	pcre2_match_data *md;
	CacheEntry *cache;
	Symbol *sym;
	Cand *heap;
	size_t symcap, heapcap;
	Buf norm, arena[2];
	Piece *pieces[2];
	size_t npieces[2], piececap[2];
};

TokEncoder *tok_encoder_new(const Tokenizer *t)
{
	TokEncoder *e = callocCheck(1, sizeof *e);
	e->t = t;
	e->md = pcre2_match_data_create(4, NULL);
	e->cache = callocCheck(CACHE_SLOTS, sizeof *e->cache);
	return e;
}

void tok_encoder_free(TokEncoder *e)
{
	if (!e)
		return;
	pcre2_match_data_free(e->md);
	free(e->cache), free(e->sym), free(e->heap), free(e->norm.b);
	for (int i = 0; i < 2; i++)
		free(e->arena[i].b), free(e->pieces[i]);
	free(e);
}

static void buf_add(Buf *b, const char *s, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = 2 * (b->n + n) + 256;
		b->b = reallocCheck(b->b, b->cap);
	}
	memcpy(b->b + b->n, s, n);
	b->n += n;
}

static void piece_add(TokEncoder *e, int w, const char *s, size_t n)
{
	if (n == 0)
		return;
	if (e->npieces[w] == e->piececap[w])
		e->pieces[w] = reallocCheck(e->pieces[w], (e->piececap[w] = 2 * e->piececap[w] + 64) * sizeof(Piece));
	e->pieces[w][e->npieces[w]++] = (Piece){e->arena[w].n, n};
	buf_add(&e->arena[w], s, n);
}

static int heap_less(const Cand *a, const Cand *b)
{
	return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(TokEncoder *e, size_t *n, Cand c)
{
	if (*n == e->heapcap)
		e->heap = reallocCheck(e->heap, (e->heapcap = 2 * e->heapcap + 64) * sizeof *e->heap);
	size_t i = (*n)++;
	while (i > 0 && heap_less(&c, &e->heap[(i - 1) / 2])) {
		e->heap[i] = e->heap[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	e->heap[i] = c;
}

static Cand heap_pop(TokEncoder *e, size_t *n)
{
	Cand top = e->heap[0], last = e->heap[--*n];
	size_t i = 0;
	for (;;) {
		size_t l = 2 * i + 1, m = i;
		const Cand *best = &last;
		if (l < *n && heap_less(&e->heap[l], best))
			m = l, best = &e->heap[l];
		if (l + 1 < *n && heap_less(&e->heap[l + 1], best))
			m = l + 1;
		if (m == i)
			break;
		e->heap[i] = e->heap[m];
		i = m;
	}
	if (*n)
		e->heap[i] = last;
	return top;
}

static void push_pair(TokEncoder *e, size_t *nh, int32_t pos)
{
	int32_t nx = e->sym[pos].next;
	if (nx < 0)
		return;
	int64_t s = merges_get(&e->t->merges, e->sym[pos].id, e->sym[nx].id);
	if (s >= 0)
		heap_push(e, nh, (Cand){e->t->merges.rank[s], pos, e->t->merges.merged[s]});
}

/* bpe appends the ids of one pre-tokenised piece */
static void bpe(TokEncoder *e, const uint8_t *p, size_t n, IdVec *out)
{
	const Tokenizer *t = e->t;
	if (n == 1) {
		if (t->byte_id[p[0]] >= 0)
			idvec_push(out, t->byte_id[p[0]]);
		return;
	}
	uint32_t h = hash32(p, n) | 1;
	CacheEntry *ce = &e->cache[h & (CACHE_SLOTS - 1)];
	if (ce->hash == h && ce->len == n && memcmp(ce->bytes, p, n) == 0) {
		for (int i = 0; i < ce->nids; i++)
			idvec_push(out, ce->ids[i]);
		return;
	}
	size_t start = out->n;
	if (t->ignore_merges) {
		char s[4 * 256];
		if (n <= 256) {
			size_t k = 0;
			for (size_t i = 0; i < n; i++)
				k += (size_t)utf8_encode(t->byte_char[p[i]], s + k);
			int32_t id = strmap_get(&t->vocab, s, k);
			if (id >= 0) {
				idvec_push(out, id);
				goto store;
			}
		}
	}
	if (n > e->symcap)
		e->sym = reallocCheck(e->sym, (e->symcap = 2 * n) * sizeof *e->sym);
	size_t ns = 0;
	for (size_t i = 0; i < n; i++) /* bytes without a token are dropped */
		if (t->byte_id[p[i]] >= 0) {
			e->sym[ns] = (Symbol){t->byte_id[p[i]], (int32_t)ns - 1, (int32_t)ns + 1, 1};
			ns++;
		}
	if (ns == 0)
		goto store;
	e->sym[ns - 1].next = -1;
	size_t nh = 0;
	for (size_t i = 0; i + 1 < ns; i++)
		push_pair(e, &nh, (int32_t)i);
	while (nh) {
		Cand c = heap_pop(e, &nh);
		Symbol *s = &e->sym[c.pos];
		if (s->len == 0 || s->next < 0)
			continue;
		int64_t slot = merges_get(&t->merges, s->id, e->sym[s->next].id);
		if (slot < 0 || t->merges.merged[slot] != c.merged)
			continue; /* a stale candidate: one of the two has changed */
		Symbol *r = &e->sym[s->next];
		s->id = c.merged;
		s->len += r->len;
		r->len = 0;
		s->next = r->next;
		if (s->next >= 0)
			e->sym[s->next].prev = c.pos;
		if (s->prev >= 0)
			push_pair(e, &nh, s->prev);
		push_pair(e, &nh, c.pos);
	}
	for (int32_t i = 0; i >= 0; i = e->sym[i].next)
		idvec_push(out, e->sym[i].id);
store:
	if (n <= CACHE_BYTES && out->n - start <= CACHE_IDS) {
		ce->hash = h;
		ce->len = (uint8_t)n;
		ce->nids = (uint8_t)(out->n - start);
		memcpy(ce->bytes, p, n);
		memcpy(ce->ids, out->v + start, (out->n - start) * sizeof(int32_t));
	}
}

static int is_digit_at(const char *s, size_t n, size_t i, int *len)
{
	utf8proc_int32_t c;
	utf8proc_ssize_t k = utf8proc_iterate((const uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
	*len = k > 0 ? (int)k : 1;
	if (k <= 0)
		return 0;
	if (c < 0x80)
		return c >= '0' && c <= '9';
	utf8proc_category_t cat = utf8proc_category(c);
	return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
}

/* split piece s[0, n) by re into pieces of list w (Isolated: matches and
 * the gaps between them both become pieces) */
static void split_regex(TokEncoder *e, const pcre2_code *re, const char *s, size_t n, int w)
{
	size_t pos = 0;
	while (pos < n) {
		int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, e->md, NULL);
		if (rc < 0)
			break;
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
		if (ov[1] == ov[0]) { /* an empty match: step over one character */
			size_t k = ov[0] + 1;
			while (k < n && ((uint8_t)s[k] & 0xc0) == 0x80)
				k++;
			piece_add(e, w, s + pos, k - pos);
			pos = k;
			continue;
		}
		piece_add(e, w, s + pos, ov[0] - pos);
		piece_add(e, w, s + ov[0], ov[1] - ov[0]);
		pos = ov[1];
	}
	piece_add(e, w, s + pos, n - pos);
}

static void pretokenize(TokEncoder *e, const PreTok *p, int r, int w)
{
	const char *src = e->arena[r].b;
	for (size_t i = 0; i < e->npieces[r]; i++) {
		const char *s = src + e->pieces[r][i].off;
		size_t n = e->pieces[r][i].len;
		switch (p->type) {
		case PRE_SPLIT:
			split_regex(e, p->re, s, n, w);
			break;
		case PRE_DIGITS: {
			size_t a = 0, j = 0;
			int prev = -1;
			while (j < n) {
				int len, d = is_digit_at(s, n, j, &len);
				if (j > a && (d != prev || (d && p->individual))) {
					piece_add(e, w, s + a, j - a);
					a = j;
				}
				prev = d;
				j += (size_t)len;
			}
			piece_add(e, w, s + a, n - a);
			break;
		}
		case PRE_BYTELEVEL:
			if (p->prefix_space && s[0] != ' ') {
				/* the piece with a space in front: build it at the end of the
				 * read arena, which stays valid while we read from it */
				Buf tmp = {0};
				buf_add(&tmp, " ", 1);
				buf_add(&tmp, s, n);
				if (p->re)
					split_regex(e, p->re, tmp.b, tmp.n, w);
				else
					piece_add(e, w, tmp.b, tmp.n);
				free(tmp.b);
			} else if (p->re) {
				split_regex(e, p->re, s, n, w);
			} else {
				piece_add(e, w, s, n);
			}
			break;
		}
	}
}

/* encode a stretch of text that holds no added token */
static void encode_plain(TokEncoder *e, const char *s, size_t n, IdVec *out)
{
	const Tokenizer *t = e->t;
	if (n == 0)
		return;
	uint8_t *normed = NULL;
	if (t->norm) {
		int ascii = 1;
		for (size_t i = 0; i < n && ascii; i++)
			ascii = (uint8_t)s[i] < 0x80;
		if (!ascii) {
			utf8proc_ssize_t k = utf8proc_map((const uint8_t *)s, (utf8proc_ssize_t)n, &normed,
			                                  (utf8proc_option_t)t->norm);
			if (k < 0)
				BUG("utf8proc_map on sanitized text: %s", utf8proc_errmsg(k));
			s = (const char *)normed, n = (size_t)k;
		}
	}
	int r = 0;
	e->arena[0].n = e->npieces[0] = 0;
	piece_add(e, 0, s, n);
	for (int i = 0; i < t->npre; i++) {
		int w = 1 - r;
		e->arena[w].n = e->npieces[w] = 0;
		pretokenize(e, &t->pre[i], r, w);
		r = w;
	}
	for (size_t i = 0; i < e->npieces[r]; i++)
		bpe(e, (const uint8_t *)e->arena[r].b + e->pieces[r][i].off, e->pieces[r][i].len, out);
	free(normed);
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

void tokenizer_encode(TokEncoder *e, const char *text, size_t n, int add_special, IdVec *out)
{
	const Tokenizer *t = e->t;
	size_t clean_n;
	char *clean = utf8_sanitize(text, n, &clean_n);
	if (clean)
		text = clean, n = clean_n;
	if (add_special)
		for (int i = 0; i < t->nprefix; i++)
			idvec_push(out, t->prefix[i]);
	/* added tokens first, leftmost and then longest; the text between them
	 * is encoded plainly */
	size_t a = 0, i = 0;
	while (i < n) {
		if (!t->added_first[(uint8_t)text[i]]) {
			i++;
			continue;
		}
		const Added *hit = NULL;
		for (int k = 0; k < t->nadded && !hit; k++)
			if (t->added[k].len <= n - i && memcmp(text + i, t->added[k].text, t->added[k].len) == 0)
				hit = &t->added[k];
		if (!hit) {
			i++;
			continue;
		}
		size_t s0 = i, s1 = i + hit->len;
		if (hit->lstrip)
			while (s0 > a && is_space(text[s0 - 1]))
				s0--;
		if (hit->rstrip)
			while (s1 < n && is_space(text[s1]))
				s1++;
		encode_plain(e, text + a, s0 - a, out);
		idvec_push(out, hit->id);
		a = i = s1;
	}
	encode_plain(e, text + a, n - a, out);
	if (add_special)
		for (int i2 = 0; i2 < t->nsuffix; i2++)
			idvec_push(out, t->suffix[i2]);
	free(clean);
}

void tokenizer_template(const Tokenizer *t, const int32_t **prefix, int *np, const int32_t **suffix,
                        int *ns)
{
	*prefix = t->prefix, *np = t->nprefix, *suffix = t->suffix, *ns = t->nsuffix;
}

size_t tokenizer_split_points(const Tokenizer *t, const char *text, size_t n, size_t every,
                              size_t *cuts, size_t max)
{
	size_t k = 0, next = every;
	if (!t->splittable)
		return 0;
	for (size_t i = next; i < n && k < max; i++) {
		char c = text[i];
		if (i >= 2 && text[i - 1] == '\n' && !is_space(text[i - 2]) &&
		    ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
			cuts[k++] = i;
			i += every - 1;
		}
	}
	return k;
}

long tokenizer_decode(const Tokenizer *t, const int32_t *ids, size_t n, char **buf, size_t *len, size_t *cap)
{
	for (size_t i = 0; i < n; i++) {
		if (ids[i] < 0 || ids[i] >= t->size || !t->bytes[ids[i]])
			return (long)i;
		uint32_t nb = t->nbytes[ids[i]];
		if (*len + nb + 1 > *cap)
			*buf = reallocCheck(*buf, *cap = 2 * (*len + nb + 1) + 256);
		memcpy(*buf + *len, t->bytes[ids[i]], nb);
		*len += nb;
	}
	return -1;
}

// ----------------------------------------------------------------------------
// chat

char *chat_prompt(ChatStyle style, const char *system, const char *user)
{
	if (!system)
		system = style == CHAT_QWEN2 ? "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
		                             : "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
	size_t n = strlen(system) + strlen(user) + 128;
	char *s = mallocCheck(n);
	if (*system)
		snprintf(s, n, "<|im_start|>system\n%s<|im_end|>\n<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n",
		         system, user);
	else
		snprintf(s, n, "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n", user);
	return s;
}
