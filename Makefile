# Two entry points (README): `make reproduce` and `make test`.
# Both create or reuse .venv and install the package with its extras from pyproject.toml.
# `make reproduce` writes results/<PROFILE>/ and verifies it against the committed results;
# `make publish` copies a reproduction into figures/, paper/ and notebooks/ (a deliberate change).
PROFILE ?= cpu
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# glibc: keep freed large buffers in the heap instead of unmapping and faulting them in again
# (~7 % of CPU time on the cpu profile; vstlib/reproduce.py MALLOC_TUNING says more)
export MALLOC_MMAP_THRESHOLD_ ?= 4294967296
export MALLOC_TRIM_THRESHOLD_ ?= 4294967296
# the extras `make install` installs (CI adds scale: Ray, for `--executor ray` and its tests); one stamp per
# set of extras, so that asking for other extras installs them
EXTRAS ?= notebooks,test
STAMP := $(VENV)/.vstlib-installed-$(EXTRAS)
# CPU kernels capped to AVX2 on x86-64 so that x86-64 machines agree bit for bit (the same values as
# vstlib/reproduce.py KERNEL_CAPS; docs/reproducibility.md). KERNEL_CAPS=off: the fastest kernels,
# numbers then agree within vstlib/verify.py's tolerance.
KERNEL_CAPS ?= on
export VSTLIB_KERNEL_CAPS := $(KERNEL_CAPS)
ifeq ($(KERNEL_CAPS)-$(shell uname -m),on-x86_64)
export ATEN_CPU_CAPABILITY ?= avx2
export ONEDNN_MAX_CPU_ISA ?= AVX2
export DNNL_MAX_CPU_ISA ?= AVX2
export MKL_CBWR ?= AVX2
endif

.PHONY: install reproduce verify publish test unit nbval clean-results lab paper rehearse

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -c "import torch, torchvision; from torchvision.ops import nms; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

install: $(STAMP)

## the main job: regenerate every table and figure (PROFILE=cpu|cpu-full|smoke|paper)
reproduce: $(STAMP)
	$(PY) -m vstlib.cli reproduce --profile $(PROFILE) $(foreach s,$(SET),--set $(s))

## compare the last reproduction with the committed results (tolerance: docs/reproducibility.md)
verify: $(STAMP)
	$(PY) -m vstlib.cli verify --profile $(PROFILE)

## copy the last reproduction into figures/, paper/tables, paper/results and the notebooks' outputs
publish: $(STAMP)
	$(PY) -m vstlib.cli publish --profile $(PROFILE)

## the paper profile end to end on stand-in weights (random, real layouts; not results): .rehearse/
rehearse: $(STAMP)
	PYTHON=$(PY) scripts/rehearse.sh

## unit tests + strict notebook regression tests (nbval), one pytest run
test: $(STAMP)
	VSTLIB_PROGRESS=0 $(PY) -m pytest tests notebooks --nbval --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider --durations=15

unit: $(STAMP)
	$(PY) -m pytest tests

## the paper from the committed tables and figures -> paper/build/main.pdf (git-ignored);
## PAPER_FROM=results/paper builds it from a reproduction's tables and figures instead
PAPER_OUT ?= build
PAPER_FROM ?=
PAPER_INPUTS := $(if $(PAPER_FROM),$(abspath $(PAPER_FROM)):$(abspath $(PAPER_FROM))/figures:,$(CURDIR)/figures:)
paper:
	cd paper && TEXINPUTS=$(PAPER_INPUTS) latexmk -pdf -interaction=nonstopmode -halt-on-error -quiet \
		-outdir=$(PAPER_OUT) main.tex

## JupyterLab on notebooks/ with .venv's kernel, on 127.0.0.1 only and behind its token (the URL it
## prints); --allow-root only when run as root, where Jupyter refuses to start without it
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=notebooks \
		$(if $(filter 0,$(shell id -u)),--allow-root,)

clean-results:
	rm -rf data results .cache
