# dimtorch: the commands the README and docs/ document.
SHELL := /bin/bash
GO ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
APT_PACKAGES := libtorch-dev libgloo-dev cmake dataset-fashion-mnist python3-torch python3-sklearn python3-onnx chromium libfaiss-dev libturbojpeg0-dev python3-torchvision
ORT_VERSION := 1.24.3

.PHONY: proto setup build demo test test-go test-shim test-isa mutants fuzz lint fmt-check bench-ops bench-train bench-epoch bench-data quality table1 shim gpu-bundle gpu-check gpu-check-cpu clean

## setup: install what building and testing need (Debian packages, Go modules, the onnxruntime library); idempotent
setup:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi
	$(GO) mod download
	@if [ ! -f third_party/onnxruntime/libonnxruntime.so.1 ]; then \
	  echo "fetching the onnxruntime library (npm package onnxruntime-node@$(ORT_VERSION))"; \
	  tmp=$$(mktemp -d) && (cd $$tmp && npm pack --silent onnxruntime-node@$(ORT_VERSION) >/dev/null) && \
	  tar -xzf $$tmp/onnxruntime-node-$(ORT_VERSION).tgz -C $$tmp package/bin/napi-v6/linux/x64/libonnxruntime.so.1 && \
	  mkdir -p third_party/onnxruntime && mv $$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1 third_party/onnxruntime/ && \
	  rm -rf $$tmp; \
	fi
	@# A copy in the user's cache directory, where a dimtorch binary built anywhere (go build, go install) looks.
	@cache=$${XDG_CACHE_HOME:-$$HOME/.cache}/dimtorch/onnxruntime; \
	if ! cmp -s third_party/onnxruntime/libonnxruntime.so.1 $$cache/libonnxruntime.so.1; then \
	  mkdir -p $$cache && cp third_party/onnxruntime/libonnxruntime.so.1 $$cache/.libonnxruntime.so.1.tmp && \
	  mv $$cache/.libonnxruntime.so.1.tmp $$cache/libonnxruntime.so.1 && echo "onnxruntime library copied to $$cache"; \
	fi

## build: the dimtorch command in bin/
build:
	$(GO) build -o bin/dimtorch ./cmd/dimtorch

## demo: the main job. Set-up, then DIM(L) with JSD on Fashion-MNIST (offline, Debian's copy), one epoch
## of the 60,000 training images on the CPU (about 4 minutes on 2 cores), then the offline linear probe
## of the trained encoder and of the same encoder untrained (about 2 minutes each)
DEMO_OUT ?= runs/demo
demo: setup build
	rm -rf $(DEMO_OUT)
	bin/dimtorch train --data fashion-mnist --encoder basic28 --mode local --estimator jsd --mi-units 256 \
	  --batch-size 64 --epochs 1 --lr 1e-3 --seed 1 --threads 2 --out $(DEMO_OUT)
	bin/dimtorch eval --checkpoint $(DEMO_OUT) --probe linear --features conv,fc,y --limit-train 10000 --plots
	bin/dimtorch eval --random-init --encoder basic28 --seed 1 --probe linear --features conv,fc,y --limit-train 10000

## test: formatting, vet, staticcheck, every Go test, the shared-library build of the shim, the
## numerics-sensitive tests under other CPUs' instruction sets, and the GPU check's CPU part
test: setup fmt-check lint test-go test-shim test-isa gpu-check-cpu

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

## test-go: every Go test under the race detector (libtorch's C++ is not instrumented; the Go side is)
test-go:
	$(GO) test -race ./...

## test-isa: the tests whose outcome depends on the CPU's kernels (every torch operator and layer against
## PyTorch, the fused Adam, the estimators and methods, the training step against PyTorch in float32 and
## bfloat16, --bf16 refused where oneDNN has no bfloat16 kernels) again with oneDNN and ATen capped to the
## instruction sets of other x86-64 CPUs: AVX2 only; AVX-512 without bfloat16 (Skylake-X); AVX-512 with
## AVX512-BF16 and no AMX (AMD EPYC, as seen from an Intel Xeon with AMX); ATen's plain C++ kernels.
## A cap above what this CPU has changes nothing: the level then runs as the CPU's own.
ISA_LEVELS := AVX2:avx2 AVX512_CORE:avx512 AVX512_CORE_BF16:avx512 ALL:default
ISA_CMD_TESTS := ^(TestBenchTrainMatchesPyTorch|TestBenchTrainBF16MatchesPyTorch|TestBF16RefusedWithoutKernels)$$
test-isa:
	@set -e; for l in $(ISA_LEVELS); do onednn=$${l%%:*}; aten=$${l##*:}; \
	  echo "== ONEDNN_MAX_CPU_ISA=$$onednn ATEN_CPU_CAPABILITY=$$aten"; \
	  ONEDNN_MAX_CPU_ISA=$$onednn ATEN_CPU_CAPABILITY=$$aten $(GO) test -count=1 ./torch/... ./objectives; \
	  ONEDNN_MAX_CPU_ISA=$$onednn ATEN_CPU_CAPABILITY=$$aten $(GO) test -count=1 -run '$(ISA_CMD_TESTS)' ./cmd/dimtorch; \
	done

## mutants: break the maths on purpose, one edit at a time, and check that a test catches each (bench/mutants.sh;
## a mutant that does not compile is an error of the script); CI runs it after make test
mutants:
	bench/mutants.sh

## proto: regenerate serve/inferencepb from the Open Inference Protocol's .proto (the generated code is committed;
## needs Debian's protobuf-compiler, and takes protoc-gen-go and protoc-gen-go-grpc from the Go module proxy)
proto:
	@command -v protoc >/dev/null || { echo "make proto needs protoc: apt-get install protobuf-compiler"; exit 1; }
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
	cd serve/inferencepb && PATH=$(CURDIR)/bin:$$PATH $(GO) generate .

## fuzz: Go's coverage-guided fuzzing of every reader of outside bytes, FUZZTIME each (bench/fuzz.sh); the seed
## corpora in testdata/fuzz run with every go test
FUZZTIME ?= 60s
fuzz:
	FUZZTIME=$(FUZZTIME) bench/fuzz.sh

## shim: libdimtorch_shim.so against the libtorch found by CMake (CMAKE_PREFIX_PATH picks another)
shim:
	cmake -S torch -B build/shim -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build/shim -j 2

## test-shim: the torch tests again, linked against libdimtorch_shim.so instead of the embedded shim
test-shim: shim
	CGO_LDFLAGS="-L$(CURDIR)/build/shim -Wl,-rpath,$(CURDIR)/build/shim" \
	  $(GO) test -tags dimtorch_shim -count=1 ./torch/...

## gpu-bundle: build/gpu-check, what the GPU check needs on a machine with PyTorch but no Go (bench/gpu_bundle.sh)
gpu-bundle:
	bench/gpu_bundle.sh build/gpu-check

## gpu-check: the CUDA check (bench/gpu_check.py), under 8 minutes on one GPU; writes build/gpu-check/work/summary.json.
## Where Go is installed it first builds the bundle; on a GPU machine without Go, copy build/gpu-check there and run
##   python3 build/gpu-check/gpu_check.py --device cuda
GPU_PYTHON ?= python3
gpu-check:
	@if command -v $(GO) >/dev/null; then bench/gpu_bundle.sh build/gpu-check; fi
	$(GPU_PYTHON) build/gpu-check/gpu_check.py --device cuda

## gpu-check-cpu: the GPU check's own logic on the CPU with tiny sizes (CI runs it)
gpu-check-cpu:
	bench/gpu_bundle.sh build/gpu-check-cpu
	/usr/bin/python3 build/gpu-check-cpu/gpu_check.py --device cpu --quick --threads 2 \
	  --onnxruntime-lib $(CURDIR)/third_party/onnxruntime/libonnxruntime.so.1

## bench-ops: the binding's per-op overhead and a conv forward+backward against PyTorch eager
bench-ops: build
	/usr/bin/python3 bench/compare_ops.py --threads 2 --repeats 5

## bench-train: training steps against PyTorch eager (default layout), taken turn by turn (5 steps each) in 8 blocks
## of 20 steps, the median and range of the blocks' ratios: DIM(L)-JSD with dcgan32 on 3x32x32, batch 64, 512 MI units; the step of
## `dimtorch train`'s default configuration (basic28, 256 MI units, batch 64, prior matching on); and multi-scale DIM on
## amdim28 (two views of 64 images, 256 MI units); float32 and bf16
bench-train: build
	/usr/bin/python3 bench/compare_train.py --encoder dcgan32 --batch-size 64 --mi-units 512 --steps 20 --threads 2 --repeats 8 --per-turn 5
	/usr/bin/python3 bench/compare_train.py --encoder dcgan32 --batch-size 64 --mi-units 512 --steps 20 --threads 2 --repeats 8 --per-turn 5 --bf16
	/usr/bin/python3 bench/compare_train.py --encoder basic28 --channels 1 --batch-size 64 --mi-units 256 --gamma 0.1 --steps 20 --threads 2 --repeats 8 --per-turn 5
	/usr/bin/python3 bench/compare_train.py --encoder basic28 --channels 1 --batch-size 64 --mi-units 256 --gamma 0.1 --steps 20 --threads 2 --repeats 8 --per-turn 5 --bf16
	/usr/bin/python3 bench/compare_train.py --method amdim --encoder amdim28 --channels 1 --views 2 --score-clip 10 --batch-size 64 --mi-units 256 --steps 20 --threads 2 --repeats 8 --per-turn 5
	/usr/bin/python3 bench/compare_train.py --method amdim --encoder amdim28 --channels 1 --views 2 --score-clip 10 --batch-size 64 --mi-units 256 --steps 20 --threads 2 --repeats 8 --per-turn 5 --bf16

## bench-epoch: one epoch of `dimtorch train` (defaults: loader, metrics, online probe, checkpoint) against
## bench/train_epoch.py, a plain PyTorch script with a DataLoader training the same networks, in turns, wall and CPU time
bench-epoch: build
	cd bench && /usr/bin/python3 compare_epoch.py --repeats 2 --threads 2 --workers 2

## bench-data: the shard loader against the PyTorch DataLoader a user would write (bench/loader_torch.py), side by side
## on the same shards of generated JPEGs of 256x256 and of 500x375 (made once in runs/loader by bench/make_jpegs.py)
bench-data: build
	@for s in 256x256 500x375; do d=runs/loader/$$s; \
	  [ -f $$d/shards/manifest.json ] || { /usr/bin/python3 bench/make_jpegs.py $$d/images 3000 --sizes $$s && \
	    bin/dimtorch data shard --from $$d/images --out $$d/shards --shard-size 20MB; } || exit 1; \
	  echo "JPEGs of $$s:"; /usr/bin/python3 bench/compare_loader.py $$d/shards --rounds 2 || exit 1; done

## quality: the best representation recipe from scratch (bench/recipes.sh; docs/evaluation.md, "Representation
## quality"), once per seed (SEEDS, default 1 2 3): trains it on Fashion-MNIST, probes conv, fc and Y on all 60,000
## labels; prints a JSON line per seed, then last one with the mean and standard deviation of the accuracies and of
## the training's CPU minutes, the CPU's name and the command. The goal: Y >= 88, conv >= 91 within 30 CPU-minutes.
quality: setup build
	bench/quality.sh

## table1: dimtorch's Table 1 at equal compute (bench/table1.sh): every baseline, DIM(G), DIM(L) with JSD, infoNCE
## and DV, DIM's best recipe and multi-scale DIM, each trained for BUDGET (default 20) CPU-minutes on this machine,
## the VAE and the two DIM recipes over 3 seeds; linear and MLP probes on conv, fc and Y (10,000 labels) and the
## linear probe on 100 labels a class (runs/table1-budget/table1.md). Hours on 2 cores; an interrupted run continues
## where it stopped, and ROWS="vae amdim" runs a part.
table1: setup build
	bench/table1.sh

clean:
	rm -rf bin build
