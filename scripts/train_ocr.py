"""Train the plate OCR model on synthetic plates and teacher-labelled real crops, export ONNX.

    python scripts/make_ocr_data.py synth ...   # and `real ...`, see that script
    python scripts/train_ocr.py --synth runs/ocr_data/synth.npz --real runs/ocr_data/real.npz \
        --out runs/ocr --steps 12000
    python scripts/train_ocr.py ... --resume
    python scripts/train_ocr.py ... --export-only --onnx models/plate_ocr.onnx
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.recognition.formats import ALPHABET, PAD, PAD_INDEX, SLOTS  # noqa: E402
from scripts.make_ocr_data import CROP_MARGIN, OCR_H, OCR_W, STORE_H, STORE_W  # noqa: E402
from scripts.trainlib.augment import real_world  # noqa: E402
from scripts.trainlib.nets import PlateOcrNet, attention_overlap, count_parameters  # noqa: E402
from scripts.trainlib.onnx_init import (  # noqa: E402
    calibrate_pass_through,
    conv_nodes,
    load_folded_convs,
    read_onnx_weights,
)
from scripts.trainlib.runlog import log_to  # noqa: E402
from scripts.trainlib.schedule import warmup_cosine  # noqa: E402

logger = logging.getLogger("train_ocr")


def encode(label: str) -> np.ndarray:
    padded = label[:SLOTS].ljust(SLOTS, PAD)
    return np.array([ALPHABET.index(c) for c in padded], np.int64)


def jitter_real(stored: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Crop the labelled box out of its margin the way a detector would miss it, then degrade."""
    box_w = STORE_W / (1 + 2 * CROP_MARGIN)
    box_h = STORE_H / (1 + 2 * CROP_MARGIN)
    mx, my = box_w * CROP_MARGIN, box_h * CROP_MARGIN
    dx1, dx2 = rng.uniform(-0.04, 0.1, 2) * box_w
    dy1, dy2 = rng.uniform(-0.08, 0.15, 2) * box_h
    angle = rng.uniform(-5, 5)
    src = np.array(
        [[mx - dx1, my - dy1], [STORE_W - mx + dx2, my - dy1], [STORE_W - mx + dx2, STORE_H - my + dy2]], np.float32
    )
    dst = np.array([[0, 0], [OCR_W, 0], [OCR_W, OCR_H]], np.float32)
    matrix = cv2.getAffineTransform(src, dst)
    rot = cv2.getRotationMatrix2D((OCR_W / 2, OCR_H / 2), angle, 1.0)
    matrix = rot @ np.vstack([matrix, [0, 0, 1]])
    crop = cv2.warpAffine(stored, matrix, (OCR_W, OCR_H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    bgr = real_world(cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR), rng, strength=0.5)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


def jitter_synth(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Synthetic plates are degraded when made; add only a small shift and scale here."""
    sx, sy = rng.uniform(0.95, 1.05), rng.uniform(0.93, 1.07)
    tx, ty = rng.uniform(-3, 3), rng.uniform(-2, 2)
    matrix = np.array([[sx, 0, (1 - sx) * OCR_W / 2 + tx], [0, sy, (1 - sy) * OCR_H / 2 + ty]], np.float32)
    out = cv2.warpAffine(img, matrix, (OCR_W, OCR_H), borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.1:
        out = 255 - out  # light-on-dark plates and IR polarity
    return out


class PlateTexts(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(
        self,
        synth: tuple[np.ndarray, np.ndarray],
        real: tuple[np.ndarray, np.ndarray],
        real_fraction: float,
        length: int,
        seed: int,
    ) -> None:
        self.synth_images, self.synth_labels = synth
        self.real_images, self.real_labels = real
        self.real_fraction = real_fraction if len(self.real_images) else 0.0
        self.length = length
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        if rng.random() < self.real_fraction:
            k = int(rng.integers(len(self.real_images)))
            img, label = jitter_real(self.real_images[k], rng), str(self.real_labels[k])
        else:
            k = int(rng.integers(len(self.synth_images)))
            img, label = jitter_synth(self.synth_images[k], rng), str(self.synth_labels[k])
        x = torch.from_numpy(img.astype(np.float32)[None] / 255.0)
        return x, torch.from_numpy(encode(label))


def center_crop(stored: np.ndarray) -> np.ndarray:
    """The labelled box of a stored real crop, resized to the model input (for validation)."""
    box_w = STORE_W / (1 + 2 * CROP_MARGIN)
    box_h = STORE_H / (1 + 2 * CROP_MARGIN)
    x1, y1 = (STORE_W - box_w) / 2, (STORE_H - box_h) / 2
    crop = stored[int(y1) : int(y1 + box_h), int(x1) : int(x1 + box_w)]
    return cv2.resize(crop, (OCR_W, OCR_H), interpolation=cv2.INTER_AREA)


def slot_texts(probs: np.ndarray) -> list[str]:
    """The best class of every slot, pads dropped: N x slots x classes to N texts (no format rules)."""
    return ["".join(ALPHABET[k] for k in row).replace(PAD, "") for row in probs.argmax(axis=-1)]


@torch.no_grad()
def exact_rate(model: PlateOcrNet, images: np.ndarray, labels: np.ndarray) -> float:
    if len(images) == 0:
        return float("nan")
    model.eval()
    x = torch.from_numpy(images.astype(np.float32)[:, None] / 255.0)
    texts = slot_texts(model(x).numpy())
    model.train()
    return float(np.mean([t == str(label) for t, label in zip(texts, labels, strict=True)]))


def load_onnx_weights(model: PlateOcrNet, path: Path, calibration: np.ndarray) -> None:
    """Start from an exported model (``scripts/trainlib/onnx_init.py``: folded BatchNorms pass their
    input through); ``calibration`` is a batch of training crops for the BatchNorm statistics."""
    graph, weights = read_onnx_weights(path)
    x = torch.from_numpy(calibration.astype(np.float32)[:, None] / 255.0)
    load_folded_convs(model, conv_nodes(graph), weights, x)
    with torch.no_grad():
        model.position.copy_(weights["position"])
        matmuls = [n for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights]
        hidden, output = (layer for layer in model.classifier if isinstance(layer, torch.nn.Linear))
        hidden.weight.copy_(weights[matmuls[0].input[1]].T)
        hidden.bias.copy_(weights["classifier.0.bias"])
        output.weight.copy_(weights[matmuls[1].input[1]].T)
        output.bias.copy_(weights["classifier.3.bias"])
    calibrate_pass_through(model, x)
    logger.info("initialised from %s", path)


def export_onnx(model: torch.nn.Module, path: Path, output: str = "probs") -> None:
    """Export a reader (left in eval mode) with input ``image`` and output ``output``, any batch size."""
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, OCR_H, OCR_W),),
        str(path),
        input_names=["image"],
        output_names=[output],
        dynamic_axes={"image": {0: "n"}, output: {0: "n"}},
        opset_version=17,
        dynamo=False,
    )
    logger.info("exported %s (%.2f MB)", path, path.stat().st_size / 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synth", type=Path, required=True)
    parser.add_argument("--real", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("runs/ocr"))
    parser.add_argument("--steps", type=int, default=12000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--real-fraction", type=float, default=0.5)
    parser.add_argument(
        "--real-rules",
        default="given,strict,agree,ppocr",
        help="which labels of real.npz to train on (its `rules`: given, strict, agree, ppocr, self+cct, self+ppocr)",
    )
    parser.add_argument("--init-onnx", type=Path, help="start from the weights of an exported model")
    parser.add_argument(
        "--attention-overlap",
        type=float,
        default=0.0,
        help="weight of the penalty on two character slots attending to the same place (0: none)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--export-only", action="store_true")
    parser.add_argument("--onnx", type=Path, default=Path("models/plate_ocr.onnx"))
    args = parser.parse_args()
    log_to(args.out)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model = PlateOcrNet(slots=SLOTS, classes=len(ALPHABET))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    step = 0
    last, best_path = args.out / "last.pt", args.out / "best.pt"
    if args.resume or args.export_only:
        state = torch.load(best_path if args.export_only and best_path.exists() else last, map_location="cpu")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        logger.info("resumed at step %d", step)
    if args.export_only:
        export_onnx(model, args.onnx)
        return

    synth = np.load(args.synth)
    real = np.load(args.real)
    rules = real["rules"] if "rules" in real else np.full(len(real["labels"]), "strict")
    kinds = real["kinds"] if "kinds" in real else np.full(len(real["labels"]), "box")
    is_train = (real["splits"] == "train") & np.isin(rules, args.real_rules.split(","))
    is_val = real["splits"] != "train"
    n_val_synth = 1000
    synth_train = (synth["images"][n_val_synth:], synth["labels"][n_val_synth:])
    real_train = (real["images"][is_train], real["labels"][is_train])
    val_real_images = (
        np.stack([center_crop(i) for i in real["images"][is_val]])
        if is_val.any()
        else np.zeros((0, OCR_H, OCR_W), np.uint8)
    )
    val_real_labels = real["labels"][is_val]
    # The strictly labelled val crops (both teachers on the tight box) are the set earlier models were
    # measured on; all val crops, also those labelled by the looser rules, pick the best checkpoint.
    val_strict = np.isin(rules[is_val], ["given", "strict"]) & (kinds[is_val] == "box")
    logger.info(
        "params=%d synth=%d real_train=%d (det boxes %d) real_val=%d (strict %d)",
        count_parameters(model),
        len(synth_train[0]),
        len(real_train[0]),
        int((kinds[is_train] == "det").sum()),
        len(val_real_labels),
        int(val_strict.sum()),
    )
    best = -1.0
    if args.resume and best_path.exists():
        best = float(torch.load(best_path, map_location="cpu").get("val", -1.0))
    elif args.init_onnx:
        load_onnx_weights(model, args.init_onnx, real_train[0][:256, 16:-16, 32:-32])
        logger.info(
            "initial real_val=%.3f real_val_strict=%.3f",
            exact_rate(model, val_real_images, val_real_labels),
            exact_rate(model, val_real_images[val_strict], val_real_labels[val_strict]),
        )
    dataset = PlateTexts(synth_train, real_train, args.real_fraction, args.batch * args.eval_every, args.seed)
    warmup = min(500, int(args.steps) // 10)

    model.train()
    while step < args.steps:
        dataset.epoch = step
        loader = DataLoader(dataset, batch_size=args.batch, shuffle=False, num_workers=args.workers, drop_last=True)
        t0, loss_sum, overlap_sum, n = time.time(), 0.0, 0.0, 0
        for x, y in loader:
            if step >= args.steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine(step, int(args.steps), warmup, float(args.lr))
            probs, attn = model.forward_with_attention(x)
            log_probs = torch.log(probs.clamp_min(1e-7))
            loss = torch.nn.functional.nll_loss(log_probs.reshape(-1, len(ALPHABET)), y.reshape(-1))
            if args.attention_overlap > 0:
                overlap = attention_overlap(attn, y, PAD_INDEX)
                loss = loss + args.attention_overlap * overlap
                overlap_sum += overlap.item()
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            loss_sum, n, step = loss_sum + loss.item(), n + 1, step + 1
        val = exact_rate(model, val_real_images, val_real_labels)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "val": val}
        torch.save(state, last)
        if val > best:
            best = val
            torch.save(state, best_path)
            export_onnx(model, args.out / "best.onnx")
        logger.info(
            "step %d loss=%.4f overlap=%.4f %.0fs synth_val=%.3f real_val=%.3f real_val_strict=%.3f best=%.3f",
            step,
            loss_sum / max(n, 1),
            overlap_sum / max(n, 1),
            time.time() - t0,
            exact_rate(model, synth["images"][:n_val_synth], synth["labels"][:n_val_synth]),
            val,
            exact_rate(model, val_real_images[val_strict], val_real_labels[val_strict]),
            best,
        )
    # The checkpoint with the best real validation read rate is the one shipped.
    model.load_state_dict(torch.load(best_path, map_location="cpu")["model"])
    export_onnx(model, args.onnx)


if __name__ == "__main__":
    main()
