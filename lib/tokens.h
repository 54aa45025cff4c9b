/*
 * tokens: the tokens.h5 file that tokenize writes and every later stage reads.
 *
 *   /tokens       uint32 (N)      token ids, documents back to back, each
 *                                 followed by the EOS id
 *   /doc_offsets  uint64 (D+1)    document d is tokens[doc_offsets[d], doc_offsets[d+1])
 *   attributes    format "dash-tokens", version 1, fingerprint (of the ids),
 *                 tokenizer, tokenizer_fingerprint, and the usual provenance
 */
#ifndef DASH_TOKENS_H
#define DASH_TOKENS_H

#include <stdint.h>

#define TOKENS_FORMAT "dash-tokens"
#define TOKENS_VERSION 1

/* what a tokens.h5 records about how it was made */
typedef struct {
	const char *tokenizer;             /* path */
	const char *tokenizer_fingerprint;
	int eos_id;                        /* the id after each document */
	const char *sources;               /* the input files, space separated */
} TokensMeta;

/* tokens_write writes a complete tokens.h5 (through NAME.tmp).
 * doc_offsets has ndocs + 1 entries, the last equal to n. */
void tokens_write(const char *path, const uint32_t *ids, int64_t n, const uint64_t *doc_offsets,
                  int64_t ndocs, const TokensMeta *meta);

/* tokens_read returns the first min(max, N) ids (all when max < 0) as int32,
 * malloc'd, with their count in *n and the file's fingerprint in fp; it dies
 * naming the file at an id >= limit (when limit > 0). */
int32_t *tokens_read(const char *path, int64_t max, int64_t limit, int64_t *n, char fp[17]);

/* tokens_read_text parses whitespace-separated decimal ids from a file
 * ("-" is stdin; .zst is decompressed) and dies naming the file at anything
 * that is not one, or at an id >= limit (when limit > 0). malloc'd; the
 * count in *n. */
int32_t *tokens_read_text(const char *path, int64_t limit, int64_t *n);

/* tokens_gather copies sequences first .. first + B - 1 of seqs (nseq
 * sequences of T ids back to back, wrapping around) into batch (B*T) */
void tokens_gather(int32_t *batch, const int32_t *seqs, int64_t nseq, int64_t first, int B, int T);
/* tokens_fingerprint hashes a run of ids. */
void tokens_fingerprint(const uint32_t *ids, int64_t n, char fp[17]);

#endif
