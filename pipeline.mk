# pipeline.mk: the DASH pipeline, one rule per stage; the files are the cache.
#   make -f pipeline.mk                 # everything, on the default teacher
#   make -f pipeline.mk TEACHER=dir     # another Hugging Face checkpoint
# A stage re-runs when its inputs, its tool or its parameters change. Recipes
# write $@.tmp and rename, and .DELETE_ON_ERROR removes a failed target.
#
# Stages so far: the teacher's loss on held-out ids (eval-lm). tokenize,
# distill-linear, search-logits, derive and eval-ruler join as they land.
# Until a real default teacher is fetched by `make data`, the default is the
# tiny random Qwen2 test fixture, so the numbers only show the plumbing.

TEACHER ?= tests/data/tiny-qwen2
IDS     ?= tests/data/tiny-qwen2.ids.txt
OUT     ?= out

.DELETE_ON_ERROR:
.PHONY: all tools
all: $(OUT)/teacher-lm.txt
	@cat $(OUT)/teacher-lm.txt

tools:
	@$(MAKE) --no-print-directory all

bin/%: tools
	@:

$(OUT)/teacher-lm.txt: bin/eval-lm $(TEACHER)/config.json $(IDS)
	@mkdir -p $(OUT)
	bin/eval-lm -m $(TEACHER) --ids $(IDS) >$@.tmp && mv $@.tmp $@
