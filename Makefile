# The targets a new user needs: `make demo` and `make test`. Everything installs into .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SHARED ?= ../shared
DATASETS ?= $(SHARED)/datasets
TEACHERS ?= $(SHARED)/teachers

.PHONY: install install-eval install-train demo test test-train lint eval bench train-detector train-ocr ocr-data clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[edge,hub,dev]'
	touch $@

# The PP-OCRv4 teacher (evaluation baseline and OCR labelling) ships in rapidocr-onnxruntime;
# --no-deps keeps its opencv-python from clashing with opencv-python-headless.
install-eval: install
	$(PIP) install -q --no-deps rapidocr-onnxruntime==1.4.4

install-train: install-eval
	$(PIP) install -q -e '.[train]'

# A hub on SQLite under var/demo, one edge node on deploy/demo/clip.avi, a hot list, and its hits.
demo: install
	$(PY) scripts/demo.py

test: install
	$(PY) -m pytest -q

# The tests of the training scripts that need torch (kept out of `make test` and CI, which never train).
test-train: install-train
	$(PY) -m pytest -q -m training

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

eval: install-eval
	$(PY) scripts/eval.py --manifest $(DATASETS)/eval-ucsd/manifest.jsonl --out runs/eval-ucsd.json

bench: install
	$(PY) scripts/bench_recognize.py --images $(DATASETS)/detect/images/andrewmvd

# The synthetic renderer needs the Debian font packages listed in models/README.md (.ci/run installs them).
ocr-data: install-train
	$(PY) scripts/make_ocr_data.py synth --count 12000 --seed 1 --out runs/ocr_data/synth12k.npz
	$(PY) scripts/make_ocr_data.py synth --count 24000 --seed 2 --out runs/ocr_data/synth24k_s2.npz
	$(PY) scripts/make_ocr_data.py synth --count 24000 --seed 3 --out runs/ocr_data/synth24k_s3.npz
	$(PY) scripts/make_ocr_data.py synth --rows --count 8000 --seed 4 --out runs/ocr_data/rows8k_s4.npz
	$(PY) scripts/make_ocr_data.py real --manifest $(DATASETS)/detect/manifest.jsonl \
		--teacher-cct $(TEACHERS)/cct_xs_v1_global.onnx --alone-mean 0.97 --out runs/ocr_data/real.npz

# Two stages, as the shipped model was made (models/README.md): 20 epochs, then 10 with dense size targets.
train-detector: install-train
	$(PY) scripts/train_detector.py --manifest $(DATASETS)/detect/manifest.jsonl --out runs/detector \
		--epochs 20 --threads 1 --onnx runs/detector/stage1.onnx
	$(PY) scripts/train_detector.py --manifest $(DATASETS)/detect/manifest.jsonl --out runs/detector \
		--epochs 30 --threads 1 --resume --dense-size 0.3 --onnx models/plate_detector.onnx

# The shipped reader (models/README.md): a CTC head trained from scratch (about an hour on the 2-core
# machine with one thread), then fine-tuned from that export with two more synthetic sets, two-row plates
# cut into rows among them (about 35 minutes with two threads); each stage keeps the checkpoint best on the
# real val crops. Thread counts change the order of sums, so a rebuild may differ slightly in its weights.
train-ocr: install-train
	$(PY) scripts/train_ocr.py --synth runs/ocr_data/synth12k.npz runs/ocr_data/synth24k_s2.npz \
		--real runs/ocr_data/real.npz --steps 5000 --threads 1 --out runs/ocr_ctc --onnx runs/ocr_ctc/stage1.onnx
	$(PY) scripts/train_ocr.py --synth runs/ocr_data/synth12k.npz runs/ocr_data/synth24k_s2.npz \
		runs/ocr_data/synth24k_s3.npz runs/ocr_data/rows8k_s4.npz --real runs/ocr_data/real.npz --steps 5000 \
		--lr 1e-3 --threads 2 --init-onnx runs/ocr_ctc/stage1.onnx --out runs/ocr_ft --onnx models/plate_ocr.onnx

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
