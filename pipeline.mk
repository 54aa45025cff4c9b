# pipeline.mk: the DASH pipeline, one rule per stage; the files are the cache.
#   make -f pipeline.mk                 # everything, on the default teacher
#   make -f pipeline.mk TEACHER=dir     # another Hugging Face checkpoint
# A stage re-runs when its inputs, its tool or its parameters change. Recipes
# write $@.tmp and rename, and .DELETE_ON_ERROR removes a failed target.
#
# Stages so far: tokenize (training and held-out text) and the teacher's loss
# (eval-lm). distill-linear, search-logits, derive and eval-ruler join as
# they land. Until a real default teacher is fetched by `make data`, the
# teacher is the tiny random Qwen2 test fixture, evaluated on its own ids, so
# that number only shows the plumbing.

TOKENIZER ?= data/qwen2.5/tokenizer.json
TRAIN_TEXT ?= data/text/sotu.jsonl.zst
HELDOUT_TEXT ?= data/text/moby-dick.jsonl.zst
TEACHER ?= tests/data/tiny-qwen2
IDS     ?= tests/data/tiny-qwen2.ids.txt
OUT     ?= out

.DELETE_ON_ERROR:
.PHONY: all tools
all: $(OUT)/train.tokens.h5 $(OUT)/heldout.tokens.h5 $(OUT)/teacher-lm.txt
	@cat $(OUT)/teacher-lm.txt

tools:
	@$(MAKE) --no-print-directory all

bin/%: tools
	@:

$(OUT)/train.tokens.h5: bin/tokenize $(TOKENIZER) $(TRAIN_TEXT)
	@mkdir -p $(OUT)
	bin/tokenize -t $(TOKENIZER) -o $@ $(TRAIN_TEXT)

$(OUT)/heldout.tokens.h5: bin/tokenize $(TOKENIZER) $(HELDOUT_TEXT)
	@mkdir -p $(OUT)
	bin/tokenize -t $(TOKENIZER) -o $@ $(HELDOUT_TEXT)

$(OUT)/teacher-lm.txt: bin/eval-lm $(TEACHER)/config.json $(IDS)
	@mkdir -p $(OUT)
	bin/eval-lm -m $(TEACHER) --ids $(IDS) >$@.tmp && mv $@.tmp $@
