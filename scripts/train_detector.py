"""Train the plate detector and export it to ONNX.

    python scripts/train_detector.py --manifest ../shared/datasets/detect/manifest.jsonl \
        --out runs/detector --epochs 30
    python scripts/train_detector.py ... --resume          # continue from runs/detector/last.pt
    python scripts/train_detector.py ... --init-onnx models/plate_detector.onnx   # fine-tune an export
    python scripts/train_detector.py ... --export-only --onnx models/plate_detector.onnx

Only the manifest's ``train`` split is trained on; ``val`` picks nothing but is reported.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.recognition.detector import to_blob  # noqa: E402
from edge.recognition.geometry import decode_centers, letterbox, match_boxes, nms  # noqa: E402
from scripts.trainlib.augment import real_world  # noqa: E402
from scripts.trainlib.manifest import ManifestImage, read_manifest  # noqa: E402
from scripts.trainlib.nets import PlateDetectorNet, count_parameters  # noqa: E402
from scripts.trainlib.onnx_init import load_onnx_convs  # noqa: E402
from scripts.trainlib.runlog import log_to  # noqa: E402
from scripts.trainlib.schedule import warmup_cosine  # noqa: E402

logger = logging.getLogger("train_detector")

STRIDE = PlateDetectorNet.stride
MIN_BOX_SIDE = 3.0


def _warp_matrix(rng: np.random.Generator, scale: float, tile: int, focus: tuple[float, float]) -> np.ndarray:
    """Scale about the focus point, rotate and shear slightly, add mild perspective, place in the tile."""
    fx, fy = focus
    angle = math.radians(rng.uniform(-10, 10))
    shear = math.radians(rng.uniform(-8, 8))
    aspect = rng.uniform(0.8, 1.25)
    to_origin = np.array([[1, 0, -fx], [0, 1, -fy], [0, 0, 1]], np.float64)
    scale_m = np.diag([scale * aspect, scale / aspect, 1.0])
    rot = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    shear_m = np.array([[1, math.tan(shear), 0], [0, 1, 0], [0, 0, 1]])
    persp = np.array([[1, 0, 0], [0, 1, 0], [rng.uniform(-4e-4, 4e-4), rng.uniform(-4e-4, 4e-4), 1]])
    tx, ty = rng.uniform(0.15, 0.85) * tile, rng.uniform(0.15, 0.85) * tile
    place = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]], np.float64)
    matrix: np.ndarray = place @ persp @ shear_m @ rot @ scale_m @ to_origin
    return matrix


def _warp_boxes(boxes: np.ndarray, matrix: np.ndarray, tile: int) -> np.ndarray:
    if len(boxes) == 0:
        return boxes.reshape(0, 4)
    corners = np.stack([boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [2, 3]], boxes[:, [0, 3]]], axis=1).reshape(-1, 2)
    warped = cv2.perspectiveTransform(corners[None].astype(np.float64), matrix)[0].reshape(-1, 4, 2)
    out = np.concatenate([warped.min(axis=1), warped.max(axis=1)], axis=1)
    full_area = (out[:, 2] - out[:, 0]) * (out[:, 3] - out[:, 1])
    clipped = np.clip(out, 0, tile)
    vis_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (
        (vis_area > 0.5 * np.maximum(full_area, 1e-6))
        & (clipped[:, 2] - clipped[:, 0] >= MIN_BOX_SIDE)
        & (clipped[:, 3] - clipped[:, 1] >= MIN_BOX_SIDE / 2)
    )
    kept: np.ndarray = clipped[keep]
    return kept


def _targets(
    boxes: np.ndarray, tile: int, dense_size: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Heatmap, size, offset, centre mask and size weights for one tile.

    Size is supervised wherever a box's Gaussian is at least ``dense_size`` (1.0: the centre only),
    weighted by the Gaussian: a peak found one cell off the centre still gets the right size.
    """
    side = tile // STRIDE
    heat = np.zeros((side, side), np.float32)
    size = np.zeros((2, side, side), np.float32)
    offset = np.zeros((2, side, side), np.float32)
    mask = np.zeros((side, side), np.float32)
    size_weight = np.zeros((side, side), np.float32)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    for x1, y1, x2, y2 in boxes / STRIDE:
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        ix, iy = min(int(cx), side - 1), min(int(cy), side - 1)
        sx, sy = max(w / 6, 0.6), max(h / 6, 0.6)
        g = np.exp(-((xx - ix) ** 2 / (2 * sx**2) + (yy - iy) ** 2 / (2 * sy**2)))
        np.maximum(heat, g, out=heat)
        heat[iy, ix] = 1.0
        g[iy, ix] = 1.0
        region = (g >= min(dense_size, 1.0)) & (g >= size_weight)
        size[0][region], size[1][region] = math.log(max(w, 0.1)), math.log(max(h, 0.1))
        size_weight[region] = g[region]
        offset[:, iy, ix] = (cx - ix, cy - iy)
        mask[iy, ix] = 1.0
    return heat, size, offset, mask, size_weight


class DetectionTiles(Dataset[tuple[torch.Tensor, ...]]):
    """Random augmented square tiles with CenterNet targets, one per image per epoch."""

    def __init__(self, images: list[ManifestImage], tile: int, seed: int, dense_size: float = 1.0) -> None:
        self.images = images
        self.tile = tile
        self.dense_size = dense_size
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        item = self.images[index]
        img = cv2.imread(str(item.path), cv2.IMREAD_COLOR)
        if img is None:
            raise RuntimeError(f"cannot read {item.path}")
        boxes = np.array(item.boxes_for(img.shape[1], img.shape[0]), np.float64).reshape(-1, 4)
        if len(boxes) and rng.random() < 0.85:
            focus_box = boxes[rng.integers(len(boxes))]
            target_w = math.exp(rng.uniform(math.log(10), math.log(self.tile * 0.6)))
            scale = target_w / max(focus_box[2] - focus_box[0], 1.0)
            focus = ((focus_box[0] + focus_box[2]) / 2, (focus_box[1] + focus_box[3]) / 2)
        else:
            scale = rng.uniform(0.3, 1.5) * self.tile / max(img.shape[:2])
            focus = (img.shape[1] / 2, img.shape[0] / 2)
        scale = float(np.clip(scale, 0.08 * self.tile / max(img.shape[:2]), 6.0))
        matrix = _warp_matrix(rng, scale, self.tile, focus)
        tile_img = cv2.warpPerspective(
            img,
            matrix,
            (self.tile, self.tile),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(114, 114, 114),
        )
        tile_boxes = _warp_boxes(boxes, matrix, self.tile)
        if rng.random() < 0.5:
            tile_img = np.ascontiguousarray(tile_img[:, ::-1])
            tile_boxes = tile_boxes.copy()
            tile_boxes[:, [0, 2]] = self.tile - tile_boxes[:, [2, 0]]
        tile_img = real_world(tile_img, rng)
        heat, size, offset, mask, size_weight = _targets(tile_boxes, self.tile, self.dense_size)
        rgb = cv2.cvtColor(tile_img, cv2.COLOR_BGR2RGB).transpose(2, 0, 1).astype(np.float32) / 255.0
        return (
            torch.from_numpy(rgb),
            torch.from_numpy(heat[None]),
            torch.from_numpy(size),
            torch.from_numpy(offset),
            torch.from_numpy(mask[None]),
            torch.from_numpy(size_weight[None]),
        )


def detection_loss(
    pred: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    heat: torch.Tensor,
    size: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    size_weight: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    p_heat, p_size, p_off = pred
    p_heat = p_heat.clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    neg_w = (1 - heat) ** 4
    pos_loss = (torch.log(p_heat) * (1 - p_heat) ** 2 * pos).sum()
    neg_loss = (torch.log(1 - p_heat) * p_heat**2 * neg_w * (1 - pos)).sum()
    n_pos = pos.sum().clamp(min=1.0)
    focal = -(pos_loss + neg_loss) / n_pos
    size_l = (torch.abs(p_size - size) * size_weight).sum() / size_weight.sum().clamp(min=1.0)
    off_l = (torch.abs(p_off - offset) * mask).sum() / n_pos
    total = focal + size_l + off_l
    return total, {"focal": float(focal), "size": float(size_l), "offset": float(off_l)}


@torch.no_grad()
def evaluate(
    model: PlateDetectorNet, images: list[ManifestImage], long_side: int, threshold: float
) -> dict[str, float]:
    """Recall and precision at IoU >= 0.5 with the runtime's own letterbox and decoding."""
    model.eval()
    tp = fp = n_gt = 0
    for item in images:
        img = cv2.imread(str(item.path), cv2.IMREAD_COLOR)
        if img is None:
            continue
        canvas, lb = letterbox(img, long_side)
        x = torch.from_numpy(to_blob(canvas))
        heat, size, off = model(x)
        dets = decode_centers(heat[0, 0].numpy(), size[0].numpy(), off[0].numpy(), STRIDE, threshold, 50)
        dets = nms(dets, 0.5)
        boxes = [lb.to_source(d.box, img.shape[1], img.shape[0]) for d in dets]
        gts = item.boxes_for(img.shape[1], img.shape[0])
        n_gt += len(gts)
        matched = match_boxes(boxes, gts, 0.5)
        tp += len(matched)
        fp += len(boxes) - len(matched)
    model.train()
    return {"recall": tp / max(n_gt, 1), "precision": tp / max(tp + fp, 1)}


def export_onnx(model: PlateDetectorNet, path: Path) -> None:
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, 288, 512)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=["image"],
        output_names=["heatmap", "size", "offset"],
        dynamic_axes={
            "image": {2: "height", 3: "width"},
            "heatmap": {2: "h", 3: "w"},
            "size": {2: "h", 3: "w"},
            "offset": {2: "h", 3: "w"},
        },
        opset_version=17,
        dynamo=False,
    )
    logger.info("exported %s (%.2f MB)", path, path.stat().st_size / 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("runs/detector"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tile", type=int, default=320)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--eval-long-side", type=int, default=512)
    parser.add_argument(
        "--dense-size",
        type=float,
        default=1.0,
        help="supervise size where the target Gaussian >= this (1.0 = centre only)",
    )
    parser.add_argument("--limit", type=int, default=0, help="use only this many images (smoke tests)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--init-onnx", type=Path, help="start from the weights of an exported detector (ignored with --resume)"
    )
    parser.add_argument("--export-only", action="store_true")
    parser.add_argument("--onnx", type=Path, default=Path("models/plate_detector.onnx"))
    args = parser.parse_args()
    log_to(args.out)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model = PlateDetectorNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    start_epoch = 0
    last = args.out / "last.pt"
    if args.resume or args.export_only:
        state = torch.load(last, map_location="cpu")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"] + 1
        logger.info("resumed from %s at epoch %d", last, start_epoch)
    if args.export_only:
        export_onnx(model, args.onnx)
        return

    train = read_manifest(args.manifest, "train")
    val = read_manifest(args.manifest, "val")
    if args.limit:
        train, val = train[: args.limit], val[: args.limit]
    logger.info("params=%d train=%d val=%d", count_parameters(model), len(train), len(val))
    dataset = DetectionTiles(train, args.tile, args.seed, args.dense_size)
    if args.init_onnx and start_epoch == 0:
        calibration = torch.stack([dataset[i][0] for i in range(0, len(train), max(1, len(train) // 32))][:32])
        load_onnx_convs(model, args.init_onnx, calibration)
        logger.info("initial val %s", evaluate(model, val, args.eval_long_side, 0.3))
    steps_per_epoch = math.ceil(len(train) / int(args.batch))
    total_steps = steps_per_epoch * int(args.epochs)
    warmup = min(300, total_steps // 10)

    model.train()
    for epoch in range(start_epoch, args.epochs):
        dataset.epoch = epoch
        loader = DataLoader(
            dataset,
            batch_size=args.batch,
            shuffle=True,
            num_workers=args.workers,
            drop_last=True,
            persistent_workers=False,
            generator=torch.Generator().manual_seed(args.seed + epoch),
        )
        t0 = time.time()
        sums: dict[str, float] = {}
        for i, (x, heat, size, off, mask, size_weight) in enumerate(loader):
            step = epoch * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine(step, total_steps, warmup, float(args.lr))
            loss, parts = detection_loss(model(x), heat, size, off, mask, size_weight)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
        n = max(1, len(loader))
        logger.info(
            "epoch %d/%d %.0fs %s",
            epoch + 1,
            args.epochs,
            time.time() - t0,
            " ".join(f"{k}={v / n:.3f}" for k, v in sums.items()),
        )
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}, last)
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            metrics = evaluate(model, val, args.eval_long_side, 0.3)
            logger.info("val %s", metrics)
    export_onnx(model, args.onnx)


if __name__ == "__main__":
    main()
