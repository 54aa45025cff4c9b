/*
 * textio: documents from text corpora. A .txt file is one document; a
 * .jsonl file holds one JSON object per line and its field (default "text")
 * is a document; either may be zstd-compressed (.zst). "-" is stdin, read as
 * .txt unless jsonl is forced. Every failure (unreadable file, corrupt or
 * truncated zstd, a line that is not JSON or lacks the field) dies with one
 * line naming the file and, for .jsonl, the line number.
 */
#ifndef DASH_TEXTIO_H
#define DASH_TEXTIO_H

#include <stddef.h>

typedef struct {
	char **text;  /* [n] document bytes, not NUL-terminated */
	size_t *len;  /* [n] */
	size_t n, cap;
	size_t bytes; /* total */
} Docs;

/* docs_read appends the documents of path to d. */
void docs_read(Docs *d, const char *path, const char *field, int force_jsonl);
void docs_free(Docs *d);

/* read_maybe_zst returns the whole file, decompressed when its name ends
 * in .zst, NUL-terminated. */
char *read_maybe_zst(const char *path, size_t *len);

#endif
