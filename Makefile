# Two commands set everything up on a fresh machine: `make distill` (the main job) and `make test`.
# Both create or reuse the virtual environment .venv and fetch the embedded data set.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning costs up to 50x.
export OMP_WAIT_POLICY ?= PASSIVE
PROFILE ?= quick
STUDENT ?= student-2k

.PHONY: venv data test distill report bench deploy ablation train-bench install-codecs train-full curve clean

$(STAMP): pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

data: venv
	$(PYTHON) -m photos fetch

test: venv data
	$(PYTHON) -m pytest

# The quick profile self-distils the shipped student (FROM=scratch: train from random weights; the full
# profile's default); ends with one screen, also runs/pipeline-PROFILE/summary.md and summary.json.
distill: venv data
	$(PYTHON) -m pipeline --profile $(PROFILE) --student $(STUDENT) $(if $(FROM),--from $(FROM))

report: venv
	$(PYTHON) -m profiling all --out reports

# Our models also with the ONNX INT8 decoder (the recipe of export/int8.py): the student, where it is
# shipped its pruned version (weights/STUDENT-pruned.safetensors, a preset of its own), and the best 2k
# model (BEST, today the wide-latent preset with its context-adaptive scale table, weights/student-2k-wide+ctxscale).
SHIPPED_PRUNED := $(wildcard weights/$(STUDENT)-pruned.safetensors)
BEST ?= student-2k-wide+ctxscale
bench: venv data
	$(PYTHON) -m benchmarks rd --int8 $(STUDENT)-int8=$(STUDENT) \
		$(if $(SHIPPED_PRUNED),--int8 $(STUDENT)-pruned-int8=$(STUDENT)-pruned) \
		$(if $(filter-out $(STUDENT),$(BEST)),--int8 $(BEST)-int8=$(BEST))

# The deployment table (README, docs/deployment.md): teacher, student, pruned student and both INT8 exports.
# The pruned student is the shipped one; without it, `python -m distill.prune` makes one into runs/deploy/
# (3 x 200 fine-tuning steps: a quick look, far from the shipped file's quality).
DEPLOY := runs/deploy
PRUNED := $(or $(SHIPPED_PRUNED),$(DEPLOY)/$(STUDENT)-pruned.safetensors)
$(DEPLOY)/%-pruned.safetensors: weights/%.safetensors
	$(PYTHON) -m distill.prune --student $< --no-kd --target-kmac 1.5 --rounds 3 --finetune-steps 200 \
		--threads 1 --quiet --no-rd -o $@ --run-dir $(DEPLOY)/prune-run --results $(DEPLOY)/prune-results
deploy: venv data $(PRUNED)
	$(PYTHON) -m export.bench -n 5 --row teacher=teacher --row $(STUDENT)=$(STUDENT) \
		--row $(STUDENT)-pruned=$(PRUNED) --row $(STUDENT)-int8=$(STUDENT):int8 \
		--row $(STUDENT)-pruned-int8=$(PRUNED):int8 --anchor $(STUDENT)

# The seed papers' modules on student-2k, each fine-tuned as long as its baseline (~40 min on 2 cores).
ablation: venv data
	$(PYTHON) -m benchmarks ablation

# Classical codec tools for `make bench` (Debian packages; the benchmark skips the missing ones).
install-codecs:
	sh benchmarks/install_codecs.sh

train-bench: venv
	$(PYTHON) -m benchmarks train-speed

# Long runs (hours; checkpoint every 5 minutes; resume from runs/ or from the shipped weights' step).
MODEL ?= teacher
# KD=no trains a student on the RD loss alone (how the shipped students were made while the teacher is the weaker
# codec) in runs/STUDENT-full-nokd; the default distils from weights/teacher.safetensors.
train-full: venv data
	if [ "$(MODEL)" = teacher ]; then $(PYTHON) -m teacher train --profile full --quiet; \
	elif [ "$(KD)" = no ]; then $(PYTHON) -m distill --student $(MODEL) --profile full --quiet --no-kd \
		--run-dir runs/$(MODEL)-full-nokd --out weights/$(MODEL).safetensors; \
	else $(PYTHON) -m distill --student $(MODEL) --profile full --quiet --out weights/$(MODEL).safetensors; fi

# BD-rate vs JPEG against training CPU-hours for every snapshot the long runs kept (results/training_curve.*)
curve: venv data
	$(PYTHON) -m benchmarks.curve --run teacher=runs/teacher-full --run student-2k=runs/student-2k-full-nokd \
		--extra teacher=weights/teacher.safetensors --extra student-2k=weights/student-2k.safetensors

clean:
	rm -rf runs results/tmp .pytest_cache

# A GPU burst (docs/gpu.md). Here: `make gpu-pack` (training tiles as JPEG q97, gpu/crops.npz, <= 18 MiB, and the wheels
# the GPU machine's python3 lacks, gpu/wheels); there: `make gpu PY=python3 OUT=$OUT`: GPU_STUDENT from its shipped
# weights on the RD loss alone for BUDGET minutes, GPU_BATCH crops of GPU_CROP (KD from the teacher did not pay,
# bigger crops did). The old teacher-then-KD burst: `make gpu MINUTES=8 GPU_KD=yes GPU_STUDENT=student-2k
# GPU_CROP=256 GPU_BATCH=32` (teacher MINUTES, then the student distilled from it in what is left of BUDGET).
# GPU_ARGS: more flags of `python -m distill.gpu run`, e.g. --lr 1e-4; back here: `python -m distill.gpu unpack DIR`.
# `make gpu DRY=1 OUT=DIR` rehearses it on the CPU (a few steps of batch 2 at GPU_CROP) and unpacks into
# GPU_DRY_WEIGHTS (about a minute; three with a teacher).
.PHONY: gpu gpu-pack gpu-wheels
GPU_PACK ?= gpu/crops.npz
GPU_WHEELS ?= gpu/wheels
GPU_PYVER ?= 3.12
GPU_WHEEL_PINS ?= compressai==1.2.8 pytorch-msssim==1.0.0 einops==0.8.2 tqdm==4.70.1 safetensors==0.8.0
GPU_WHEEL_EXTRA ?=
MINUTES ?= 0
BUDGET ?= 9.5
GPU_STUDENT ?= student-2k-gmm
GPU_KD ?= no
# 512x512 crops of 576-pixel tiles (distill/gpu_pack.py says why); 16 a step: the CPU runs' batch 2 x 8
GPU_TILE ?= 576
GPU_CROP ?= 512
GPU_BATCH ?= 16
GPU_ARGS ?=
OUT ?= runs/gpu-out
GPU_DRY_WEIGHTS ?= runs/gpu-dry/weights

gpu-wheels: venv
	$(PYTHON) -m pip download -q --only-binary=:all: --no-deps --python-version $(GPU_PYVER) --implementation cp \
		--platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d $(GPU_WHEELS) $(GPU_WHEEL_PINS) $(GPU_WHEEL_EXTRA)

$(GPU_PACK): | venv data
	$(PYTHON) -m distill.gpu pack --out $@ --tile $(GPU_TILE)

gpu-pack: venv data gpu-wheels
	$(PYTHON) -m distill.gpu pack --out $(GPU_PACK) --tile $(GPU_TILE)

# The rehearsal keeps the real crop (a pack of smaller tiles fails here, not there) and the minutes (0: no teacher)
gpu: $(if $(DRY),venv data $(GPU_PACK))
	$(if $(DRY),$(PYTHON),$(PY)) -m distill.gpu run --out $(OUT) --pack $(GPU_PACK) --wheels $(GPU_WHEELS) \
		--student $(GPU_STUDENT) --minutes $(MINUTES) --crop $(GPU_CROP) $(if $(filter no,$(GPU_KD)),--no-kd) \
		$(if $(DRY),--dry,--budget $(BUDGET) --batch $(GPU_BATCH)) $(GPU_ARGS)
	$(if $(DRY),$(PYTHON) -m distill.gpu check $(OUT))
	$(if $(DRY),$(PYTHON) -m distill.gpu unpack $(OUT) --into $(GPU_DRY_WEIGHTS) --verify)

# Where one decode's time goes, phase by phase and op by op, before/after (results/decode_profile.md), and the
# decoders' speed and peak memory next to djpeg, dwebp, avifdec, djxl and opj_decompress (results/speed.md).
.PHONY: decode-profile decode-speed
decode-profile: venv data
	$(PYTHON) -m export.profile $(if $(wildcard results/decode_profile_before.json),--before results/decode_profile_before.json)
decode-speed: venv data
	$(PYTHON) -m benchmarks speed
