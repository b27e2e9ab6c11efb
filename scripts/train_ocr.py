"""Train the plate reader (the shipped CTC reader, or the earlier slot reader) and export it as ONNX.

    python scripts/make_ocr_data.py synth ...   # and `real ...`: the data sets, see that script
    python scripts/train_ocr.py --synth runs/ocr_data/synth12k.npz --real runs/ocr_data/real.npz \
        --steps 2000 --threads 2 --onnx models/plate_ocr.onnx                  # `make train-ocr`
    python scripts/train_ocr.py ... --out runs/ocr_ctc --resume        # go on from runs/ocr_ctc/last.pt
    python scripts/train_ocr.py ... --init-onnx models/plate_ocr.onnx --lr 1e-3   # fine-tune the shipped reader
    python scripts/train_ocr.py --head slot ...                        # the slot reader, for comparison

The data stream (``trainlib.ocr_stream.PlateTexts``) mixes synthetic plates and teacher-labelled real
crops, each jittered as the engine's crops vary. The slot reader (``PlateOcrNet``, ``--head slot``) read
a character twice in most of its val misreads; the CTC head (``PlateCtcNet``, the default) aligns the
characters by sequence over the feature columns instead of by learnt position and, trained from scratch
for the same steps on the same data, reads far more val crops exactly (models/README.md). Both heads
share the backbone, the data stream, the schedule and the val crops; the exact-read rate on synthetic val
plates and on the real val crops is logged every ``--eval-every`` steps, and with ``--onnx`` the CTC
checkpoint best on the real val crops is exported (output ``ctc_probs``, N x 20 columns x classes, which
``edge.recognition.ocr`` reads). The CTC head reads the columns left to right, so a whole two-row plate
(a minority of the synthetic set) is beyond it; the engine reads such a plate row by row
(``edge.recognition.ocr.split_rows``), and ``make_ocr_data.py synth --rows`` makes training rows cut
that way. ``--context N`` puts N residual dilated convolutions along the columns before the classes (0:
the shipped architecture). With ``--out`` every evaluation saves
``last.pt`` (and ``best.pt`` when the real val crops read best so far) and ``--resume`` goes on from
``last.pt`` on the same schedule, so long runs survive an interrupted session. ``--init-onnx`` starts
from an exported reader instead of from scratch (a new warm-up and cosine schedule over ``--steps``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.recognition.formats import ALPHABET, PAD, PAD_INDEX  # noqa: E402
from edge.recognition.ocr import ctc_to_slots  # noqa: E402
from scripts.make_ocr_data import OCR_H, OCR_W  # noqa: E402
from scripts.trainlib.nets import PlateCtcNet, PlateOcrNet, count_parameters  # noqa: E402
from scripts.trainlib.ocr_stream import PlateTexts, center_crop  # noqa: E402
from scripts.trainlib.onnx_init import (  # noqa: E402
    calibrate_pass_through,
    conv_nodes,
    load_folded_convs,
    read_onnx_weights,
)
from scripts.trainlib.runlog import log_to  # noqa: E402
from scripts.trainlib.schedule import warmup_cosine  # noqa: E402

logger = logging.getLogger("train_ocr")

N_VAL_SYNTH = 1000
"""The first plates of the first synthetic set are its val plates, never trained on."""


def slot_texts(probs: np.ndarray) -> list[str]:
    """The best class of every slot, pads dropped: N x slots x classes to N texts (no format rules)."""
    return ["".join(ALPHABET[k] for k in row).replace(PAD, "") for row in probs.argmax(axis=-1)]


class _Probabilities(nn.Module):
    """What the engine runs: the CTC head's per-column probabilities (N x 20 x classes, ``ctc_probs``)."""

    def __init__(self, net: PlateCtcNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.net(x))


def export_ctc_onnx(model: PlateCtcNet, path: Path) -> None:
    """Export the reader as the engine runs it: input ``image``, output ``ctc_probs``, any batch size."""
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        _Probabilities(model),
        (torch.zeros(1, 1, OCR_H, OCR_W),),
        str(path),
        input_names=["image"],
        output_names=["ctc_probs"],
        dynamic_axes={"image": {0: "n"}, "ctc_probs": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )
    logger.info("exported %s (%.2f MB)", path, path.stat().st_size / 1e6)
    model.train()


def load_onnx_reader(model: PlateCtcNet, path: Path, calibration: torch.Tensor) -> None:
    """Start from an exported CTC reader: the convolutions the export folded with their BatchNorms
    (backbone, row fold) as ``trainlib.onnx_init`` loads them, the parameters it kept by name (position
    channels, column head) copied. Column context layers the file lacks start fresh."""
    graph, weights = read_onnx_weights(path)
    named = {name.removeprefix("net."): w for name, w in weights.items() if name.startswith("net.")}
    own = model.state_dict()
    if unknown := sorted(set(named) - set(own)):
        raise ValueError(f"{path}: weights this network does not have: {unknown}")
    folded = [n for n in conv_nodes(graph) if not n.input[1].startswith("net.")]
    load_folded_convs(model, folded, weights, calibration)
    with torch.no_grad():
        for name, weight in named.items():
            own[name].copy_(weight)  # state_dict tensors are the parameters themselves
    calibrate_pass_through(model, calibration)
    logger.info("initialised from %s", path)


def ctc_decode(log_probs: torch.Tensor) -> list[str]:
    """Greedy CTC (the best class per column, repeats merged, blanks dropped), as the engine collapses it."""
    return slot_texts(np.stack([ctc_to_slots(columns) for columns in log_probs.exp().numpy()]))


def ctc_loss(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    lengths = (targets != PAD_INDEX).sum(dim=1)
    flat = torch.cat([row[:n] for row, n in zip(targets, lengths, strict=True)])
    columns = torch.full((len(targets),), log_probs.shape[1], dtype=torch.long)
    return nn.functional.ctc_loss(
        log_probs.transpose(0, 1), flat, columns, lengths, blank=PAD_INDEX, zero_infinity=True
    )


@torch.no_grad()
def exact_rate(model: nn.Module, head: str, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    out = model(torch.from_numpy(images.astype(np.float32)[:, None] / 255.0))
    model.train()
    texts = ctc_decode(out) if head == "ctc" else slot_texts(out.numpy())
    return float(np.mean([t == str(label) for t, label in zip(texts, labels, strict=True)]))


def load_data(
    args: argparse.Namespace,
) -> tuple[PlateTexts, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The training stream (synthetic plates after each file's first ``N_VAL_SYNTH``, real crops of the
    chosen rules), the synthetic val plates (the first file's first ``N_VAL_SYNTH``) and the real val crops."""
    synths = [np.load(path) for path in args.synth]
    real = np.load(args.real)
    is_train = (real["splits"] == "train") & np.isin(real["rules"], args.real_rules.split(","))
    is_val = real["splits"] != "train"
    dataset = PlateTexts(
        (
            np.concatenate([s["images"][N_VAL_SYNTH:] for s in synths]),
            np.concatenate([s["labels"][N_VAL_SYNTH:] for s in synths]),
        ),
        (real["images"][is_train], real["labels"][is_train]),
        args.real_fraction,
        args.batch * args.eval_every,
        args.seed,
    )
    logger.info("synthetic train=%d real train=%d", len(dataset.synth_images), len(dataset.real_images))
    synth_val = (synths[0]["images"][:N_VAL_SYNTH], synths[0]["labels"][:N_VAL_SYNTH])
    real_val = (np.stack([center_crop(i) for i in real["images"][is_val]]), real["labels"][is_val])
    return dataset, synth_val, real_val


def train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: PlateTexts,
    head: str,
    step: int,
    args: argparse.Namespace,
) -> tuple[int, float]:
    """One pass over the stream (``--eval-every`` steps or fewer); the step reached and the mean loss."""
    dataset.epoch = step
    loss_sum, n = 0.0, 0
    for x, y in DataLoader(dataset, batch_size=args.batch, num_workers=0, drop_last=True):
        if step >= args.steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(step, args.steps, min(500, args.steps // 10), args.lr)
        out = model(x)
        if head == "ctc":
            loss = ctc_loss(out, y)
        else:
            loss = nn.functional.nll_loss(torch.log(out.clamp_min(1e-7)).reshape(-1, len(ALPHABET)), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        loss_sum, n, step = loss_sum + loss.item(), n + 1, step + 1
    return step, loss_sum / max(n, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head", choices=["slot", "ctc"], default="ctc", help="ctc: the shipped reader")
    parser.add_argument("--synth", type=Path, nargs="+", required=True, help="one or more synthetic sets")
    parser.add_argument("--real", type=Path, required=True)
    parser.add_argument(
        "--real-rules", default="given,strict,agree", help="the labels of real.npz to train on (its `rules`)"
    )
    parser.add_argument("--context", type=int, default=0, help="ctc: residual dilated convolutions along the columns")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--real-fraction", type=float, default=0.5)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="keep train.log, last.pt and best.pt here")
    parser.add_argument("--resume", action="store_true", help="go on from --out's last.pt")
    parser.add_argument("--onnx", type=Path, help="ctc: export the checkpoint best on the real val crops here")
    parser.add_argument(
        "--init-onnx", type=Path, help="ctc: start from the weights of an exported reader (ignored with --resume)"
    )
    args = parser.parse_args()
    if args.resume and args.out is None:
        parser.error("--resume needs --out, the run folder holding last.pt")
    if args.init_onnx is not None and args.head != "ctc":
        parser.error("--init-onnx starts the CTC reader only")
    log_to(args.out)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    dataset, synth_val, real_val = load_data(args)
    model: nn.Module = PlateCtcNet(context=args.context) if args.head == "ctc" else PlateOcrNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    step, best = 0, -1.0
    if args.resume:
        state = torch.load(args.out / "last.pt", map_location="cpu")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, best = state["step"], state["best"]
        logger.info("resumed at step %d (best real_val %.3f)", step, best)
    elif args.init_onnx is not None:
        assert isinstance(model, PlateCtcNet)
        dataset.epoch = 0
        calibration, _ = next(iter(DataLoader(dataset, batch_size=args.batch)))
        load_onnx_reader(model, args.init_onnx, calibration)
        logger.info("initial real_val=%.3f", exact_rate(model, args.head, *real_val))
    logger.info("head=%s context=%d params=%d", args.head, args.context, count_parameters(model))
    model.train()
    while step < args.steps:
        t0 = time.time()
        step, loss = train_steps(model, optimizer, dataset, args.head, step, args)
        val = exact_rate(model, args.head, *real_val)
        improved = val > best
        best = max(best, val)
        logger.info(
            "head=%s step %d loss=%.4f %.0fs synth_val=%.3f real_val=%.3f best=%.3f",
            args.head,
            step,
            loss,
            time.time() - t0,
            exact_rate(model, args.head, *synth_val),
            val,
            best,
        )
        if args.out is not None:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "best": best}
            torch.save(state, args.out / "last.pt")
            if improved:
                torch.save(state, args.out / "best.pt")
        if args.onnx is not None and isinstance(model, PlateCtcNet) and improved:
            export_ctc_onnx(model, args.onnx)
            logger.info("exported step %d to %s", step, args.onnx)


if __name__ == "__main__":
    main()
