"""Network definitions for the plate detector and the plate readers (the slot reader and the shipped CTC reader)."""

from __future__ import annotations

import torch
from torch import nn


class ConvBnAct(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int = 3, s: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, k, s, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class DwResidual(nn.Module):
    """Depthwise 3x3 then pointwise 1x1, added to the input: cheap context on CPUs."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False),
            nn.BatchNorm2d(channels),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(x + self.body(x))
        return out


def _stage(c_in: int, c_out: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(ConvBnAct(c_in, c_out, 3, 2), *[DwResidual(c_out) for _ in range(blocks)])


class PlateDetectorNet(nn.Module):
    """CenterNet-style single-class detector with output stride 4.

    Input: N x 3 x H x W RGB in [0, 1], H and W multiples of 32.
    Outputs: heatmap (sigmoid, N x 1 x H/4 x W/4), size (log w, log h in output cells),
    offset (sub-cell centre in [0, 1]).
    """

    stride = 4

    def __init__(self, width: tuple[int, int, int, int, int] = (16, 32, 64, 96, 128)) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = width
        self.s2 = ConvBnAct(3, c1, 3, 2)
        self.s4 = _stage(c1, c2, 1)
        self.s8 = _stage(c2, c3, 2)
        self.s16 = _stage(c3, c4, 2)
        self.s32 = _stage(c4, c5, 2)
        neck = c2
        self.lat32 = ConvBnAct(c5, neck, 1)
        self.lat16 = ConvBnAct(c4, neck, 1)
        self.lat8 = ConvBnAct(c3, neck, 1)
        self.lat4 = ConvBnAct(c2, neck, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.smooth8 = DwResidual(neck)
        self.smooth4 = DwResidual(neck)
        self.head = ConvBnAct(neck, neck, 3)
        self.heat = nn.Conv2d(neck, 1, 1)
        self.size = nn.Conv2d(neck, 2, 1)
        self.offset = nn.Conv2d(neck, 2, 1)
        assert self.heat.bias is not None
        nn.init.constant_(self.heat.bias, -4.6)  # prior of 1% plates per cell keeps early focal loss sane

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f4 = self.s4(self.s2(x))
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        f32 = self.s32(f16)
        p = self.lat32(f32)
        p = self.up(p) + self.lat16(f16)
        p = self.smooth8(self.up(p) + self.lat8(f8))
        p = self.smooth4(self.up(p) + self.lat4(f4))
        p = self.head(p)
        return torch.sigmoid(self.heat(p)), self.size(p), torch.sigmoid(self.offset(p))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class PlateOcrNet(nn.Module):
    """Slot reader: a small CNN, then one spatial attention map per character slot.

    Input: N x 1 x 48 x 160 grayscale in [0, 1]. Output: N x slots x classes softmax
    probabilities, slot i holding the i-th character of the left-aligned plate text or the
    pad class. Attention over the whole feature map lets two-row plates be read in order.
    The stem strides early (large activation maps dominate CPU training time) and the third
    stage strides only vertically, keeping horizontal resolution for narrow characters.
    """

    def __init__(
        self, slots: int = 10, classes: int = 37, width: tuple[int, int, int, int] = (32, 64, 128, 160)
    ) -> None:
        super().__init__()
        c1, c2, c3, c4 = width
        self.features = nn.Sequential(
            ConvBnAct(1, c1, 3, 2),  # 24 x 80
            DwResidual(c1),
            ConvBnAct(c1, c2, 3, 2),  # 12 x 40
            DwResidual(c2),
            DwResidual(c2),
            _strided(c2, c3, (2, 1)),  # 6 x 40
            DwResidual(c3),
            DwResidual(c3),
            _strided(c3, c4, (1, 2)),  # 6 x 20
            DwResidual(c4),
            DwResidual(c4),
        )
        self.slots = slots
        self.attention = nn.Conv2d(c4, slots, 1)
        # Position channels let attention tell left from right after global pooling.
        self.position = nn.Parameter(torch.zeros(1, c4, 6, 20))
        self.classifier = nn.Sequential(
            nn.Linear(c4, c4), nn.ReLU(inplace=True), nn.Dropout(0.1), nn.Linear(c4, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x) + self.position
        n, c = f.shape[0], f.shape[1]
        attn = torch.softmax(self.attention(f).reshape(n, self.slots, -1), dim=-1)
        pooled = torch.bmm(attn, f.reshape(n, c, -1).transpose(1, 2))
        return torch.softmax(self.classifier(pooled), dim=-1)


def _strided(c_in: int, c_out: int, stride: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ColumnContext(nn.Module):
    """A residual 3-wide convolution along the columns, dilated so that a few of them see most of the plate
    (a character's neighbours tell a glyph's edge from a letter's stroke)."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
            nn.Dropout(0.1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.conv(x)
        return out


class PlateCtcNet(PlateOcrNet):
    """The shipped reader: the slot reader's backbone and position channels, then a CTC head over the 20
    feature columns: the 6 rows folded into each column by a learnt (depthwise) convolution, ``context``
    residual dilated convolutions along the columns (none in the shipped reader), a 3-wide convolution
    along the columns, and per column a class (``PAD`` doubles as the CTC blank)."""

    def __init__(self, classes: int = 37, channels: int = 160, context: int = 0) -> None:
        super().__init__(classes=classes)
        del self.attention, self.classifier
        # Depthwise: each channel folds its own 6 rows, so the head stays about the slot head's size.
        self.fold = nn.Sequential(
            nn.Conv2d(channels, channels, (6, 1), groups=channels, bias=False), nn.BatchNorm2d(channels), nn.ReLU()
        )
        self.context = nn.Sequential(*(ColumnContext(channels, 2 ** (i % 3)) for i in range(context)))
        self.sequence = nn.Sequential(
            nn.Conv1d(channels, channels, 3, padding=1), nn.ReLU(), nn.Dropout(0.1), nn.Conv1d(channels, classes, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities, N x 20 columns x classes."""
        f = self.fold(self.features(x) + self.position).squeeze(2)  # N x C x 20
        return torch.log_softmax(self.sequence(self.context(f)), dim=1).transpose(1, 2)
