# cnnc — one plain Makefile. `make` builds build/cnnc; `make check` runs
# every test CI runs; `make demo` runs the main job. `make deps` installs
# what the build and the tests need from Debian, skipping what is present.

PREFIX  ?= /usr/local
CC      ?= cc
BUILD   ?= build
PYTHON  ?= /usr/bin/python3

# A curated warning list: these catch real bugs in this code base.
WARN    = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
          -Wno-unused-parameter -Wformat=2 -Wvla
CFLAGS  ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_XOPEN_SOURCE=700 $(WARN) $(CFLAGS) \
             -Icompiler -I$(BUILD)
# Generated scanner/parser code is not ours to lint.
GEN_CFLAGS = -std=c11 -D_XOPEN_SOURCE=700 -Wall -Wno-unused-function \
             -Wno-unused-parameter $(CFLAGS) -Icompiler -I$(BUILD)

SAN_FLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer \
            -fno-sanitize-recover=all

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)

# LLVM, for the JIT (cnnc run --jit): LLVM=1 builds it in, LLVM=0 leaves it
# out (--jit then says so). The default is 1 when llvm-config-14 is found.
LLVM_CONFIG ?= llvm-config-14
LLVM ?= $(if $(shell command -v $(LLVM_CONFIG) 2>/dev/null),1,0)
ifeq ($(LLVM),1)
LLVM_CFLAGS := -isystem $(shell $(LLVM_CONFIG) --includedir)
LLVM_LIBS := $(shell $(LLVM_CONFIG) --ldflags --libs core orcjit native passes)
endif

# The compiler, in pipeline order (docs/architecture.md follows this list).
LIB_SRC = compiler/mem.c compiler/diag.c compiler/ast.c compiler/load.c \
          compiler/ops.c compiler/graph.c compiler/elaborate.c \
          compiler/shape.c compiler/check.c compiler/dot.c compiler/loop.c \
          compiler/lower.c compiler/lower_layout.c compiler/lower_grad.c \
          compiler/lower_conv.c compiler/lower_dense.c compiler/schedule.c \
          compiler/autodiff.c \
          compiler/fuse.c compiler/contract.c compiler/threads.c \
          compiler/plan.c compiler/emit_c.c compiler/run.c \
          compiler/emit_llvm.c compiler/jit.c compiler/jit_train.c
GEN_SRC = $(BUILD)/parser.c $(BUILD)/lexer.c $(BUILD)/gen/st_template.c
MAIN_SRC = compiler/main.c

LIB_OBJ = $(LIB_SRC:compiler/%.c=$(BUILD)/obj/%.o) \
          $(BUILD)/obj/parser.o $(BUILD)/obj/lexer.o $(BUILD)/obj/st_template.o
SAN_OBJ = $(LIB_SRC:compiler/%.c=$(BUILD)/san/%.o) \
          $(BUILD)/san/parser.o $(BUILD)/san/lexer.o $(BUILD)/san/st_template.o
# The runtime, which the JIT uses as the generated drivers do: files, and
# the training loop (idx.c reads gzip through zlib).
RT_LIB_SRC = runtime/json.c runtime/safetensors.c runtime/tensors.c \
             runtime/idx.c runtime/train.c
RT_LIBS = -lz
LIB_OBJ += $(RT_LIB_SRC:runtime/%.c=$(BUILD)/obj/rt_%.o)
SAN_OBJ += $(RT_LIB_SRC:runtime/%.c=$(BUILD)/san/rt_%.o)

UNIT_TESTS = $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))

.PHONY: all deps check check-unit check-diagnostics check-oracle demo \
        check-generated check-sanitize bench-jit fuzz check-fuzz check-hostile \
        check-san \
        install clean format-check
.SUFFIXES:

# The C of the examples a reader opens first, kept in the tree.
GENERATED = generated/lenet5.c generated/resnet18.c generated/unet.c

all: $(BUILD)/cnnc $(GENERATED)

# Inference code for one sample at a time, as a product would embed it.
generated/%.c: dsl-examples/%.cnn $(BUILD)/cnnc
	$(BUILD)/cnnc $< -o $@ --batch 1

# Fails when generated/ is not what this cnnc prints.
check-generated: $(BUILD)/cnnc
	@mkdir -p $(BUILD)/generated
	@set -e; for f in $(GENERATED); do b=$$(basename $$f .c); \
	  $(BUILD)/cnnc dsl-examples/$$b.cnn -o $(BUILD)/generated/$$b.c --batch 1; \
	  cmp -s $(BUILD)/generated/$$b.c $$f && cmp -s $(BUILD)/generated/$$b.h generated/$$b.h \
	    || { echo "generated/$$b.c is stale: run make"; exit 1; }; \
	  $(CC) -std=c99 -pedantic -Wall -Wextra -Werror -c $$f -o $(BUILD)/generated/$$b.o; \
	done; echo "generated: up to date, and compiles with -std=c99 -pedantic -Wall -Wextra -Werror"

# --- dependencies -----------------------------------------------------
# Build: flex, bison, cmocka. Test oracle: Debian's python3 with torch and
# torchvision. Training demo data: dataset-fashion-mnist.
# Fuzzing: clang-14 and its libFuzzer and sanitizer runtimes.
DEB_PKGS = gcc make flex bison libcmocka-dev zlib1g-dev clang-format gnuplot-nox \
           clang-14 libclang-rt-14-dev \
           llvm-14-dev \
           python3 python3-torch \
           python3-torchvision dataset-fashion-mnist

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	else echo "deps: all present"; fi

# --- the compiler -----------------------------------------------------
$(BUILD)/parser.c $(BUILD)/parser.h: compiler/parser.y
	@mkdir -p $(BUILD)
	bison -Wall -Werror --defines=$(BUILD)/parser.h -o $(BUILD)/parser.c $<

$(BUILD)/lexer.c: compiler/lexer.l
	@mkdir -p $(BUILD)
	flex -o $@ $<

$(BUILD)/obj/%.o: compiler/%.c $(BUILD)/parser.h $(wildcard compiler/*.h compiler/*.def)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -DCNNC_VERSION='"$(VERSION)"' -c -o $@ $<

$(BUILD)/obj/%.o: $(BUILD)/%.c $(BUILD)/parser.h $(wildcard compiler/*.h)
	@mkdir -p $(@D)
	$(CC) $(GEN_CFLAGS) -c -o $@ $<

$(BUILD)/obj/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(@D)
	$(CC) $(GEN_CFLAGS) -c -o $@ $<

$(BUILD)/san/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(@D)
	$(CC) $(GEN_CFLAGS) $(SAN_FLAGS) -c -o $@ $<

# The safetensors code every model.c carries, as a string in cnnc.
$(BUILD)/gen/st_template.c: compiler/emit_c_safetensors.c.in
	@mkdir -p $(@D)
	{ echo 'const char emit_c_safetensors_template[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/  "/' -e 's/$$/\\n"/' $<; \
	  echo '  "";'; } > $@

# The JIT's files see LLVM's headers (with LLVM=1) and the runtime's; jit.c
# includes the generated code's weights loader. Objects built for the
# other setting of LLVM are stale.
JIT_OBJ = $(BUILD)/obj/jit.o $(BUILD)/obj/emit_llvm.o $(BUILD)/obj/jit_train.o \
          $(BUILD)/san/jit.o $(BUILD)/san/emit_llvm.o $(BUILD)/san/jit_train.o
$(JIT_OBJ): ALL_CFLAGS += -DCNNC_LLVM=$(LLVM) $(LLVM_CFLAGS) -Iruntime
$(JIT_OBJ): $(BUILD)/llvm-$(LLVM).stamp $(wildcard runtime/*.h)
$(BUILD)/obj/jit.o $(BUILD)/san/jit.o: compiler/emit_c_safetensors.c.in
$(BUILD)/llvm-$(LLVM).stamp:
	@mkdir -p $(@D)
	@rm -f $(BUILD)/llvm-*.stamp && touch $@

$(BUILD)/obj/rt_%.o: runtime/%.c $(wildcard runtime/*.h)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Iruntime -c -o $@ $<

$(BUILD)/san/rt_%.o: runtime/%.c $(wildcard runtime/*.h)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) -Iruntime -c -o $@ $<

$(BUILD)/libcnnc.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

# Linked under another name and renamed: a cnnc running during a rebuild
# (a benchmark, a test) keeps its file.
$(BUILD)/cnnc: $(BUILD)/obj/main.o $(BUILD)/libcnnc.a
	$(CC) $(CFLAGS) -o $@.tmp $^ -lm $(RT_LIBS) $(LLVM_LIBS) && mv -f $@.tmp $@

# The same compiler under AddressSanitizer and UndefinedBehaviorSanitizer.
$(BUILD)/san/%.o: compiler/%.c $(BUILD)/parser.h $(wildcard compiler/*.h compiler/*.def)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) -DCNNC_VERSION='"$(VERSION)"' -c -o $@ $<

$(BUILD)/san/%.o: $(BUILD)/%.c $(BUILD)/parser.h $(wildcard compiler/*.h)
	@mkdir -p $(@D)
	$(CC) $(GEN_CFLAGS) $(SAN_FLAGS) -c -o $@ $<

$(BUILD)/cnnc-san: $(BUILD)/san/main.o $(SAN_OBJ)
	$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $^ -lm $(RT_LIBS) $(LLVM_LIBS)

# The safetensors reader/writer printed into generated code, instantiated
# with the prefix "t" for its unit test.
$(BUILD)/gen/safetensors_t.c: compiler/emit_c_safetensors.c.in
	@mkdir -p $(@D)
	sed 's/PREFIX/t/g' $< > $@

# --- tests --------------------------------------------------------------
# The runtime: host-side files for drivers and tests (IDX needs zlib).
RT_SRC = $(wildcard runtime/*.c)
$(BUILD)/tests/test_runtime: tests/unit/test_runtime.c $(RT_SRC) $(wildcard runtime/*.h)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) -Iruntime -o $@ $< $(RT_SRC) -lcmocka -lz -lm

# The generated-code safetensors reader, tested through its instance "t".
$(BUILD)/tests/test_safetensors_gen: tests/unit/test_safetensors_gen.c $(BUILD)/gen/safetensors_t.c
	@mkdir -p $(@D)
	$(CC) -std=c99 -Wall -Wextra -Werror $(CFLAGS) $(SAN_FLAGS) -I$(BUILD)/gen -o $@ $< -lcmocka

# Unit tests run against the sanitizer build of the compiler's objects.
$(BUILD)/tests/%: tests/unit/%.c $(SAN_OBJ) tests/unit/testutil.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) -Itests/unit -Iruntime -o $@ $< $(SAN_OBJ) \
	  -lcmocka -lm $(RT_LIBS) $(LLVM_LIBS)

check: deps all $(BUILD)/cnnc-san $(UNIT_TESTS)
	@$(MAKE) --no-print-directory format-check check-unit check-diagnostics \
	  check-generated check-oracle check-hostile check-san check-fuzz

check-unit: $(UNIT_TESTS)
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $$t; done

check-diagnostics: $(BUILD)/cnnc $(BUILD)/cnnc-san
	@echo "== diagnostics catalogue (build/cnnc)"
	@tests/diagnostics/run.sh $(BUILD)/cnnc
	@echo "== diagnostics catalogue under ASan+UBSan (build/cnnc-san)"
	@tests/diagnostics/run.sh $(BUILD)/cnnc-san
	@echo "== examples under ASan+UBSan"
	@set -e; for f in dsl-examples/*.cnn; do \
	  $(BUILD)/cnnc-san check $$f >/dev/null || { echo "FAIL: $$f"; exit 1; }; \
	done; echo "examples: all checked clean"

# The cases that run through every tiled nest (convolutions at every
# stride, padding, dilation and grouping; dense layers), for -fno-tile.
NO_TILE_CASES = conv_same conv_stride_pad dense lenet5 fusion conv_packed
# The cases whose chains the fusion pass fuses (conv, dense or batch norm
# with batch norm, residual add and activation), for -fno-fuse; test_fusion
# compares ResNet-18 with and without fusion to the bit.
NO_FUSE_CASES = fusion bn add lenet5
# The cases whose sums contraction fuses into multiply-adds (every tiled
# nest, the tanh polynomial, batch norm, the optimizer), for -fno-fma.
NO_FMA_CASES = conv_same conv_packed dense fusion lenet5
# The tiled nests whose schedules differ by vector target: the runs above
# use AVX2's tiles (the default), these --target avx512, whatever this
# processor has.
TARGET_CASES = $(NO_TILE_CASES) conv_dilation_groups conv_dw_samples \
  conv_phases conv_windows resnet18 googlenet

check-oracle: $(BUILD)/cnnc
	@echo "== parameter totals"
	@CNNC=$(BUILD)/cnnc bash tests/oracle/param_counts.sh
	@echo "== state_dict names against torchvision"
	@$(PYTHON) tests/oracle/state_dict.py $(BUILD)/cnnc
	@echo "== cnnc run with bad files"
	@$(PYTHON) tests/oracle/run_errors.py $(BUILD)/cnnc
	@echo "== forward pass of every operator and example against PyTorch"
	@$(PYTHON) tests/oracle/forward.py $(BUILD)/cnnc
	@echo "== loss and gradients of every operator and example against PyTorch"
	@$(PYTHON) tests/oracle/grad.py $(BUILD)/cnnc
	@echo "== the same with -fno-tile (plain loop nests): the tiled operators"
	@CNNC_FLAGS=-fno-tile $(PYTHON) tests/oracle/forward.py $(BUILD)/cnnc \
	  $(NO_TILE_CASES:%=--only %) --only conv_dilation --only conv_groups \
	  --only alexnet --only resnet18
	@CNNC_FLAGS=-fno-tile $(PYTHON) tests/oracle/grad.py $(BUILD)/cnnc \
	  $(NO_TILE_CASES:%=--only %) --only conv_dilation_groups
	@echo "== the same with -fno-fuse (a kernel per layer): the fused chains"
	@CNNC_FLAGS=-fno-fuse $(PYTHON) tests/oracle/forward.py $(BUILD)/cnnc \
	  $(NO_FUSE_CASES:%=--only %)
	@CNNC_FLAGS=-fno-fuse $(PYTHON) tests/oracle/grad.py $(BUILD)/cnnc \
	  $(NO_FUSE_CASES:%=--only %)
	@echo "== the same with -fno-fma (multiplies and adds apart)"
	@CNNC_FLAGS=-fno-fma $(PYTHON) tests/oracle/forward.py $(BUILD)/cnnc \
	  $(NO_FMA_CASES:%=--only %)
	@CNNC_FLAGS=-fno-fma $(PYTHON) tests/oracle/grad.py $(BUILD)/cnnc \
	  $(NO_FMA_CASES:%=--only %)
	@echo "== the same with --target avx512 (tiles for AVX-512's registers)"
	@CNNC_FLAGS="--target avx512" $(PYTHON) tests/oracle/forward.py $(BUILD)/cnnc
	@CNNC_FLAGS="--target avx512" $(PYTHON) tests/oracle/grad.py $(BUILD)/cnnc \
	  $(TARGET_CASES:%=--only %)
	@echo "== gradients against finite differences of cnnc's own loss"
	@$(PYTHON) tests/oracle/fd.py $(BUILD)/cnnc
	@echo "== SGD and Adam steps of the generated code against torch.optim"
	@$(PYTHON) tests/oracle/optim.py $(BUILD)/cnnc
	@echo "== generated C under ASan and UBSan, and against the JIT ($(SANITIZE_EXAMPLES))"
	@$(PYTHON) tests/oracle/sanitize.py $(BUILD)/cnnc $(SANITIZE_EXAMPLES)
	@echo "== cnnc train through the JIT against the C path"
	@$(PYTHON) tests/jit/train.py $(BUILD)/cnnc

# Hostile files and absurd models (tests/hostile/): each refused with a
# clear error, status 1, no crash or hang. Cases in tests/hostile/open.txt
# are known failures, listed and skipped.
check-hostile: $(BUILD)/cnnc
	@echo "== hostile files and absurd models (build/cnnc)"
	@tests/hostile/run.sh $(BUILD)/cnnc

# The tests that feed cnnc bad files, under ASan and UBSan: cnnc-san (the
# compiler and the runtime code it links) and the code cnnc run and train
# compile for them (--cc with the same sanitizers). The unit tests and the
# diagnostics catalogue run under them in check-unit and check-diagnostics,
# the examples' generated code in check-oracle (and check-sanitize).
check-san: $(BUILD)/cnnc-san
	@echo "== hostile files and absurd models under ASan+UBSan (build/cnnc-san)"
	@tests/hostile/run.sh $(BUILD)/cnnc-san
	@echo "== cnnc run with bad files under ASan+UBSan"
	@$(PYTHON) tests/oracle/run_errors.py $(BUILD)/cnnc-san

# The examples whose generated C check-oracle runs under the sanitizers:
# together they use every operator any example uses. `make check-sanitize`
# runs all fourteen (too long for every CI run).
SANITIZE_EXAMPLES ?= lenet5 alexnet alexnet_tv resnet18 googlenet unet

check-sanitize: $(BUILD)/cnnc
	@$(PYTHON) tests/oracle/sanitize.py $(BUILD)/cnnc

# --- fuzzing ----------------------------------------------------------------
# libFuzzer harnesses (tests/fuzz/) under ASan and UBSan: the .cnn front end
# through lowering and planning, the runtime's safetensors reader, the
# loader printed into model.c, the IDX reader. `make fuzz` runs each for
# FUZZ_SECONDS on seeds made from dsl-examples/, tests/diagnostics/, the
# hostile catalogue and real files; docs/reliability.md says more.
FUZZ_CC ?= clang-14
FUZZ_SECONDS ?= 60
FUZZ_FLAGS = -std=c11 -D_XOPEN_SOURCE=700 -g -O1 -fno-omit-frame-pointer \
             -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ = $(BUILD)/fuzz
FUZZERS = $(FUZZ)/fuzz_cnn $(FUZZ)/fuzz_safetensors $(FUZZ)/fuzz_st_loader \
          $(FUZZ)/fuzz_idx
# The front end and code generation, without the backends that run code.
FUZZ_CNN_SRC = $(filter-out compiler/run.c compiler/jit.c compiler/jit_train.c \
                 compiler/emit_llvm.c,$(LIB_SRC)) $(GEN_SRC)
FUZZ_RT_SRC = runtime/json.c runtime/safetensors.c runtime/tensors.c runtime/idx.c

$(FUZZ)/fuzz_cnn: tests/fuzz/fuzz_cnn.c $(FUZZ_CNN_SRC) $(wildcard compiler/*.h compiler/*.def)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -Icompiler -I$(BUILD) -o $@ $< $(FUZZ_CNN_SRC) -lm

$(FUZZ)/fuzz_st_loader: tests/fuzz/fuzz_st_loader.c $(BUILD)/gen/safetensors_t.c $(FUZZ_RT_SRC) $(wildcard runtime/*.h)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -Iruntime -I$(BUILD)/gen -o $@ $< $(FUZZ_RT_SRC) -lz

$(FUZZ)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_RT_SRC) $(wildcard runtime/*.h)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -Iruntime -o $@ $< $(FUZZ_RT_SRC) -lz

$(FUZZ)/seeds.stamp: tests/fuzz/make_seeds.py tests/hostile/make_files.py $(BUILD)/cnnc
	$(PYTHON) tests/fuzz/make_seeds.py $(BUILD)/cnnc $(FUZZ)/seeds
	@touch $@

fuzz: deps $(FUZZERS) $(FUZZ)/seeds.stamp
	tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ)

# What CI runs: each fuzzer for FUZZ_SECONDS (60), two at a time, from the
# seeds alone (the corpora `make fuzz` grows would delay the start).
check-fuzz: $(FUZZERS) $(FUZZ)/seeds.stamp
	@echo "== each fuzzer for $(FUZZ_SECONDS) s"
	@rm -rf $(FUZZ)/check-corpus
	@FUZZ_CORPUS=$(FUZZ)/check-corpus tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ)

# --- the main job ---------------------------------------------------------
# Trains LeNet-5 on Fashion-MNIST with the generated training code, then
# classifies test images with a standalone program built on the generated
# lenet5.c (demo/classify.c, walked through in docs/tutorial.md).
DEMO_EPOCHS ?= 10
FMNIST ?= /usr/share/datasets/fashion-mnist
DEMO = $(BUILD)/demo

demo: deps all
	@echo "== build/cnnc check dsl-examples/lenet5.cnn"
	@$(BUILD)/cnnc check dsl-examples/lenet5.cnn
	@mkdir -p $(DEMO)
	@echo "== build/cnnc train dsl-examples/lenet5.cnn --epochs $(DEMO_EPOCHS)"
	@$(BUILD)/cnnc train dsl-examples/lenet5.cnn --epochs $(DEMO_EPOCHS) \
	  --data $(FMNIST) --save $(DEMO)/lenet5.safetensors --log $(DEMO)/lenet5.csv
	@echo "== a standalone program on the generated lenet5.c"
	$(BUILD)/cnnc dsl-examples/lenet5.cnn -o $(DEMO)/lenet5.c --infer-only --batch 1
	$(CC) -std=c99 -O2 -Wall -Wextra -I$(DEMO) -o $(DEMO)/classify demo/classify.c $(DEMO)/lenet5.c -lm
	@gzip -dc $(FMNIST)/t10k-images-idx3-ubyte.gz > $(DEMO)/t10k-images-idx3-ubyte
	@gzip -dc $(FMNIST)/t10k-labels-idx1-ubyte.gz > $(DEMO)/t10k-labels-idx1-ubyte
	$(DEMO)/classify $(DEMO)/lenet5.safetensors $(DEMO)/t10k-images-idx3-ubyte \
	  $(DEMO)/t10k-labels-idx1-ubyte 10

# The JIT against cc -O2: start-up and steady-state speed (docs/jit.md).
bench-jit: $(BUILD)/cnnc
	$(PYTHON) bench/jit.py --cnnc $(BUILD)/cnnc

# cnnc's generated code against PyTorch on one thread (docs/performance.md):
# `make bench`, LeNet-5's training throughput at batch 64 and latency at
# batch 1 (bench/speed.py, a minute or two); `make bench-accuracy`, the test
# accuracy each reaches after BENCH_EPOCHS epochs of the model's train
# section (bench/accuracy.py; slow). PyTorch gets OpenBLAS for its dense
# layers: Debian's package unpacked under $(BUILD)/openblas, not installed.
BENCH_EPOCHS ?= 10
OPENBLAS = $(BUILD)/openblas/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3
.PHONY: bench bench-accuracy

bench: deps $(BUILD)/cnnc $(OPENBLAS)
	$(PYTHON) bench/speed.py --cnnc $(BUILD)/cnnc --out $(BUILD)/bench

bench-accuracy: deps $(BUILD)/cnnc $(OPENBLAS)
	$(PYTHON) bench/accuracy.py --cnnc $(BUILD)/cnnc --epochs $(BENCH_EPOCHS) \
	  --data $(FMNIST) --out $(BUILD)/bench

$(OPENBLAS):
	@[ -e /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3 ] || { \
	  mkdir -p $(BUILD)/openblas && cd $(BUILD)/openblas && \
	  apt-get download -qq libopenblas0-openmp && dpkg -x libopenblas0-openmp_*.deb . ; } \
	  || echo "bench: no OpenBLAS; PyTorch keeps the reference BLAS"

install: $(BUILD)/cnnc
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/cnnc/runtime
	install -m 755 $(BUILD)/cnnc $(DESTDIR)$(PREFIX)/bin/cnnc
	install -m 644 runtime/*.c runtime/*.h $(DESTDIR)$(PREFIX)/share/cnnc/runtime

format-check:
	@clang-format --dry-run -Werror compiler/*.c compiler/*.h tests/unit/*.c \
	  tests/unit/*.h runtime/*.c runtime/*.h tests/fuzz/*.c tests/hostile/*.c \
	  && echo "format: clean"

clean:
	rm -rf $(BUILD)
