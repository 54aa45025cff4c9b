/*
 * generate: greedy decoding with a model and its tokenizer, for quick checks
 * of a teacher (eval-lm --generate) and, later, the answers RULER scores.
 */
#ifndef DASH_GENERATE_H
#define DASH_GENERATE_H

#include "model.h"
#include "tokenizer.h"

/* generate_greedy prefills the prompt ids into a fresh decoder (decode.h,
 * one sequence, its default bf16 KV cache), then appends up to max_new
 * argmax tokens to out, stopping after any id in stop (which is not
 * appended). on_token, if not NULL, sees each new id as it comes. */
void generate_greedy(const Model *m, const int32_t *prompt, int n, int max_new, const int32_t *stop,
                     int nstop, IdVec *out, void (*on_token)(void *ctx, int32_t id), void *ctx);

/* generate_answer wraps prompt in the model's chat template (unless raw),
 * decodes greedily and writes the answer to out as it comes, with a
 * newline; talk (the prompt's size, the rate) goes to stderr. The tokenizer
 * is tok_path, or the model's own when NULL. The model's weights are
 * unpacked to float32 first. */
void generate_answer(Model *m, const char *tok_path, const char *prompt, int max_new, int raw, FILE *out);

/* generate_stop_ids: the ids that end an answer, into stop: the model's
 * end of sequence, and ChatML's end of turn and of text where the
 * tokenizer has them, each once; returns how many */
#define GENERATE_MAX_STOP 3
int generate_stop_ids(const Model *m, const Tokenizer *t, int32_t stop[GENERATE_MAX_STOP]);

/* tokenizer_for_model loads the tokenizer that belongs to a model: the
 * GGUF file itself, or tokenizer.json in a Hugging Face folder. */
Tokenizer *tokenizer_for_model(const char *model_path);

/* chat_style_for picks the chat template of a model family: Qwen2's ChatML
 * for qwen2, SmolLM2's for a llama with <|im_start|>; -1 when the tokenizer
 * has no ChatML tokens (use the prompt as it is). */
int chat_style_for(const Model *m, const Tokenizer *t);

#endif
