/*
 * tokenizer: byte-level BPE exactly as Hugging Face `tokenizers` does it, for
 * the tokenizer.json files of Qwen2/Qwen2.5, Llama 3 and the GPT-2 family
 * (SmolLM2), and for tokenizers built from other sources (GGUF metadata).
 *
 * Encoding a text:
 *   1. invalid UTF-8 becomes U+FFFD, maximal subparts (as Python's
 *      errors="replace" and Rust's from_utf8_lossy do before tokenizers sees
 *      the text);
 *   2. added tokens are matched in the raw text, leftmost-longest; the text
 *      between them goes through steps 3-5;
 *   3. the normaliser (NFC, NFKC, NFD, NFKD or none; utf8proc);
 *   4. the pre-tokenisers in order: Split by a regex (PCRE2, Unicode
 *      properties; behaviour Isolated), Digits, ByteLevel;
 *   5. each piece's bytes become byte-level symbols, merged by BPE rank
 *      (lowest rank first, leftmost first among equals), through a cache;
 *   6. the post-processor's template (e.g. Llama 3's BOS) when add_special.
 * Decoding maps ids back to bytes; it inverts encoding for valid UTF-8.
 *
 * A Tokenizer is read-only after loading and may be shared by threads; each
 * thread encodes through its own TokEncoder.
 */
#ifndef DASH_TOKENIZER_H
#define DASH_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct Tokenizer Tokenizer;
typedef struct TokEncoder TokEncoder;

/* a growable array of token ids */
typedef struct {
	int32_t *v;
	size_t n, cap;
} IdVec;
void idvec_push(IdVec *a, int32_t id);
void idvec_free(IdVec *a);

/* tokenizer_load reads a tokenizer.json; it dies naming the file when the
 * file is missing, not JSON, or describes a tokenizer this library does not
 * implement (it names the part). */
Tokenizer *tokenizer_load(const char *path);
void tokenizer_free(Tokenizer *t);

const char *tokenizer_path(const Tokenizer *t);
const char *tokenizer_fingerprint(const Tokenizer *t); /* 16 hex digits */
int tokenizer_size(const Tokenizer *t);                /* highest id + 1 */
/* tokenizer_token_id returns the id of an added token or vocabulary entry
 * given its text ("<|im_end|>"), or -1. */
int tokenizer_token_id(const Tokenizer *t, const char *text);
/* the id that ends a document in tokens.h5: <|endoftext|>, <|end_of_text|>
 * or </s>, whichever the tokenizer has first; -1 if none */
int tokenizer_default_eos(const Tokenizer *t);

TokEncoder *tok_encoder_new(const Tokenizer *t);
void tok_encoder_free(TokEncoder *e);
/* tokenizer_encode appends the ids of text[0, n) to out. add_special applies
 * the post-processor's template, as tokenizers' encode() does by default. */
void tokenizer_encode(TokEncoder *e, const char *text, size_t n, int add_special, IdVec *out);

/* tokenizer_template gives the ids the post-processor puts before and
 * after a text's own when add_special is set (Llama 3: BOS before). */
void tokenizer_template(const Tokenizer *t, const int32_t **prefix, int *np, const int32_t **suffix,
                        int *ns);

/* tokenizer_split_points finds places where text[0, n) can be cut into
 * pieces that encode independently to the same ids as the whole (a newline
 * after a non-space, before an ASCII letter), about every `every` bytes. It
 * writes at most max cut offsets to cuts and returns their number; 0 when
 * the tokenizer's rules make cutting unsafe. */
size_t tokenizer_split_points(const Tokenizer *t, const char *text, size_t n, size_t every,
                              size_t *cuts, size_t max);

/* tokenizer_decode appends the bytes of ids to *buf (realloc'd, *len
 * updated). It returns -1, or the index of the first id out of range. */
long tokenizer_decode(const Tokenizer *t, const int32_t *ids, size_t n, char **buf, size_t *len,
                      size_t *cap);

/* ---------------------------------------------------------------------------
 * chat prompts (ChatML, as Qwen2.5 and SmolLM2 instruct models use):
 *   <|im_start|>system\nSYSTEM<|im_end|>\n<|im_start|>user\nUSER<|im_end|>\n
 *   <|im_start|>assistant\n
 * system NULL gives the model family's default system prompt, "" none. */
typedef enum { CHAT_QWEN2, CHAT_SMOLLM2 } ChatStyle;
char *chat_prompt(ChatStyle style, const char *system, const char *user); /* malloc'd */

/* utf8_sanitize replaces invalid UTF-8 in s[0, n) by U+FFFD (maximal
 * subparts); returns a new string and its length in *out_n, or NULL when s
 * was valid (nothing to do). */
char *utf8_sanitize(const char *s, size_t n, size_t *out_n);

#endif
