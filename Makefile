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
	$(PY) scripts/make_ocr_data.py synth --count 30000 --seed 1 --out runs/ocr_data/synth.npz
	$(PY) scripts/make_ocr_data.py real --manifest $(DATASETS)/detect/manifest.jsonl \
		--teacher-cct $(TEACHERS)/cct_xs_v1_global.onnx --alone-mean 0.97 --out runs/ocr_data/real.npz

# Two stages, as the shipped model was made (models/README.md): 20 epochs, then 10 with dense size targets.
train-detector: install-train
	$(PY) scripts/train_detector.py --manifest $(DATASETS)/detect/manifest.jsonl --out runs/detector \
		--epochs 20 --threads 1 --onnx runs/detector/stage1.onnx
	$(PY) scripts/train_detector.py --manifest $(DATASETS)/detect/manifest.jsonl --out runs/detector \
		--epochs 30 --threads 1 --resume --dense-size 0.3 --onnx models/plate_detector.onnx

# Fine-tunes the previous reader (commit 0373392), then ships the average of the weights of the
# best checkpoint (step 2,750) and the last one (step 3,000), as the shipped model was made (models/README.md).
OCR_INIT_COMMIT ?= 0373392
define OCR_AVERAGE
import sys, torch
from pathlib import Path
sys.path.insert(0, ".")
from edge.recognition.formats import ALPHABET, SLOTS
from scripts.train_ocr import export_onnx
from scripts.trainlib.nets import PlateOcrNet
best, last = (torch.load(f"runs/ocr/{n}.pt", map_location="cpu")["model"] for n in ("best", "last"))
model = PlateOcrNet(slots=SLOTS, classes=len(ALPHABET))
model.load_state_dict({k: (best[k] + last[k]) / 2 if best[k].is_floating_point() else last[k] for k in best})
export_onnx(model, Path("models/plate_ocr.onnx"))
endef
export OCR_AVERAGE
train-ocr: install-train
	mkdir -p runs
	git show $(OCR_INIT_COMMIT):models/plate_ocr.onnx > runs/plate_ocr_$(OCR_INIT_COMMIT).onnx
	$(PY) scripts/train_ocr.py --synth runs/ocr_data/synth.npz --real runs/ocr_data/real.npz --out runs/ocr \
		--init-onnx runs/plate_ocr_$(OCR_INIT_COMMIT).onnx --lr 3e-4 --real-fraction 0.6 --real-rules given,strict,agree \
		--steps 3000 --batch 64 --eval-every 250 --threads 1 --workers 0 --onnx runs/ocr/best_checkpoint.onnx
	$(PY) -c "$$OCR_AVERAGE"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
