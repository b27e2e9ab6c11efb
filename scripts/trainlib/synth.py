"""Synthetic licence plates for OCR training: US, EU and Brazilian layouts, one and two rows.

Fonts come from Debian packages (see ``FONT_FILES``); each plate is rendered large with PIL,
warped in perspective onto a background, cropped as loosely or tightly as a detector box
would be, and degraded (dirt, blur, glare, low resolution, noise, JPEG).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from scripts.trainlib.augment import Image as NpImage
from scripts.trainlib.augment import real_world

# Debian package -> licence, for the model card.
FONT_FILES: dict[str, str] = {
    "/usr/share/fonts/truetype/roboto/unhinted/RobotoCondensed-Bold.ttf": "fonts-roboto-unhinted (Apache-2.0)",
    "/usr/share/fonts/opentype/bebas-neue/BebasNeue-Bold.otf": "fonts-bebas-neue (OFL-1.1)",
    "/usr/share/fonts/truetype/open-sans/OpenSans-CondBold.ttf": "fonts-open-sans (Apache-2.0)",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf": "fonts-dejavu-core (Bitstream Vera licence)",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf": "fonts-dejavu-core (Bitstream Vera licence)",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Bold.ttf": "fonts-liberation2 (OFL-1.1)",
    "/usr/share/fonts/truetype/freefont/FreeSansBold.ttf": "fonts-freefont-ttf (GPL-3+ with font exception)",
    "/usr/share/fonts/truetype/roboto/unhinted/RobotoTTF/Roboto-Bold.ttf": "fonts-roboto-unhinted (Apache-2.0)",
}
# California's plates use a tall condensed face: these (from the same packages) come closest.
CA_FONT_FILES: tuple[str, ...] = (
    "/usr/share/fonts/opentype/bebas-neue/BebasNeue-Bold.otf",
    "/usr/share/fonts/opentype/bebas-neue/BebasNeue-Regular.otf",
    "/usr/share/fonts/truetype/roboto/unhinted/RobotoCondensed-Bold.ttf",
    "/usr/share/fonts/truetype/roboto/unhinted/RobotoCondensed-Regular.ttf",
    "/usr/share/fonts/truetype/open-sans/OpenSans-CondBold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf",
)
DEALERS = (
    "DMV.CA.GOV",
    "dmv.ca.gov",
    "SAN DIEGO HONDA",
    "TOYOTA OF ESCONDIDO",
    "LAND OF LINCOLN",
    "MISSION VALLEY FORD",
    "KEARNY MESA",
    "LEXUS OF SAN DIEGO",
    "CARMAX",
    "NORTH COUNTY BMW",
    "I LOVE MY DOG",
    "UC SAN DIEGO ALUMNI",
)
SMALL_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
SCRIPT_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSerifCondensed-BoldItalic.ttf"

LETTERS = string.ascii_uppercase
DIGITS = string.digits
US_STATES = (
    "CALIFORNIA",
    "California",
    "TEXAS",
    "NEW YORK",
    "FLORIDA",
    "ARIZONA",
    "NEVADA",
    "OREGON",
    "WASHINGTON",
    "ILLINOIS",
    "OHIO",
    "GEORGIA",
    "COLORADO",
    "UTAH",
    "Sunshine State",
)
EU_CODES = ("D", "F", "I", "E", "NL", "PL", "RO", "B", "P", "A", "CZ", "SK", "H", "BG")


@dataclass(frozen=True, slots=True)
class Layout:
    """How one family of plates looks; ``groups`` is a pattern like 'D LLL DDD' (space or dash gaps)."""

    name: str
    patterns: tuple[str, ...]
    aspect: float
    weight: float
    two_rows: bool = False


LAYOUTS: tuple[Layout, ...] = (
    Layout("us-ca", ("DLLLDDD", "DLLLDDD", "DLLLDDD", "DLDDDDD", "DDDDDLD"), 2.0, 6.0),
    Layout(
        "us",
        (
            "LLL DDDD",
            "LLL-DDDD",
            "DDD LLL",
            "LLL DDD",
            "LL DDDDD",
            "DLLDDD",
            "DDDDLL",
            "LLLDDDD",
            "DDD-LLL",
            "LLL-DDD",
            "DL DDDD",
            "LLDDDD",
        ),
        2.0,
        3.0,
    ),
    Layout(
        "eu",
        (
            "LL LL DDDD",
            "L LL DDD",
            "LL-DDD-LL",
            "LL DDD LL",
            "DDDD LLL",
            "DD-LLL-D",
            "LL-DDD-L",
            "LL DDDDD",
            "LLL DDDLL",
            "L DD LLL",
            "LL DD LLL",
            "DDD-LLL-DD",
        ),
        4.7,
        2.5,
    ),
    Layout("uk", ("LLDD LLL",), 4.7, 0.6),
    Layout("br", ("LLL-DDDD",), 3.1, 0.8),
    Layout("br-mercosur", ("LLLDLDD",), 3.1, 1.0),
    Layout("two-row", ("LLL/DLDD", "LL DDD/LL", "DL/DDDD", "LLL/DDDD", "DD/LLLD"), 1.4, 0.8, two_rows=True),
    Layout("random", ("*",), 2.0, 2.0),
)


def _fill(pattern: str, rng: np.random.Generator) -> str:
    out = []
    for ch in pattern:
        if ch == "L":
            out.append(LETTERS[rng.integers(26)])
        elif ch == "D":
            out.append(DIGITS[rng.integers(10)])
        else:
            out.append(ch)
    return "".join(out)


def _random_text(rng: np.random.Generator) -> str:
    length = int(rng.integers(2, 10))
    chars = [(LETTERS + DIGITS)[rng.integers(36)] for _ in range(length)]
    if length > 4 and rng.random() < 0.5:
        chars.insert(int(rng.integers(1, length)), rng.choice([" ", "-"]))
    return "".join(chars)


def label_of(printed: str) -> str:
    """The plate's characters as the model must read them: no spaces, dashes or row breaks."""
    return "".join(c for c in printed if c.isalnum())


def _color(rng: np.random.Generator, base: tuple[int, int, int], spread: int = 25) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in base)
    return r, g, b


def _text_image(
    text: str,
    font_path: str,
    height: int,
    color: tuple[int, int, int],
    bg: tuple[int, int, int],
    rng: np.random.Generator,
) -> Image.Image:
    """Render one row on its own canvas, tightly cropped, so it can be stretched to fit."""
    font = ImageFont.truetype(font_path, height)
    spacing = rng.uniform(-0.02, 0.12) * height
    widths = [font.getbbox(c)[2] - font.getbbox(c)[0] if c != " " else height * 0.35 for c in text]
    total = int(sum(widths) + spacing * (len(text) - 1) + height)
    canvas = Image.new("RGB", (max(total, 1), int(height * 1.6)), bg)
    draw = ImageDraw.Draw(canvas)
    x = height * 0.5
    for ch, w in zip(text, widths, strict=True):
        if ch != " ":
            left = font.getbbox(ch)[0]
            draw.text((x - left, height * 0.1), ch, font=font, fill=color)
        x += w + spacing
    arr = np.asarray(canvas).astype(np.int16)
    diff = np.abs(arr - np.array(bg, np.int16)).sum(axis=2) > 40
    ys, xs = np.nonzero(diff)
    if len(xs) == 0:
        return canvas
    return canvas.crop((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))


def _paste_fit(
    plate: Image.Image,
    row: Image.Image,
    box: tuple[int, int, int, int],
    rng: np.random.Generator,
    fill: float | None = None,
) -> tuple[int, int, int, int]:
    """Stretch a row into a box, keeping a plausible width/height ratio (or filling ``fill`` of the
    box's width); returns where the row went."""
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    h = bh
    w = int(bw * fill) if fill else int(row.width * h / max(row.height, 1) * rng.uniform(0.8, 1.15))
    if w > bw:
        w = bw
    resized = row.resize((max(w, 1), max(h, 1)), Image.Resampling.BILINEAR)
    offset = x1 + (bw - w) // 2 + int(rng.integers(-max(1, (bw - w) // 4), max(1, (bw - w) // 4) + 1))
    x = max(x1, min(offset, x2 - w))
    plate.paste(resized, (x, y1))
    return x, y1, x + w, y1 + h


def _stickers(draw: ImageDraw.ImageDraw, width: int, height: int, rng: np.random.Generator) -> None:
    """Registration stickers in the top corners (month and year), not part of the plate's text."""
    small = ImageFont.truetype(SMALL_FONT, max(8, int(height * 0.09)))
    for corner in range(2):
        if rng.random() < 0.45:
            continue
        sw, sh = int(width * rng.uniform(0.07, 0.12)), int(height * rng.uniform(0.1, 0.17))
        x = int(width * rng.uniform(0.03, 0.08)) if corner == 0 else width - sw - int(width * rng.uniform(0.03, 0.08))
        y = int(height * rng.uniform(0.04, 0.1))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.rectangle((x, y, x + sw, y + sh), fill=colour)
        if rng.random() < 0.6:
            draw.text((x + 2, y + 1), str(rng.integers(10, 30)), font=small, fill=(0, 0, 0))


def _frame(draw: ImageDraw.ImageDraw, width: int, height: int, top: int, bottom: int, rng: np.random.Generator) -> None:
    """A licence plate frame: dark or chrome bands over the plate's edges, often with a dealer's name."""
    colour = _color(rng, (20, 20, 20), 15) if rng.random() < 0.7 else _color(rng, (170, 170, 175), 30)
    text_colour = (235, 235, 235) if sum(colour) < 300 else (20, 20, 20)
    band_top = int(min(top * 0.9, height * rng.uniform(0.04, 0.12)))
    band_bottom = int(min((height - bottom) * 0.95, height * rng.uniform(0.08, 0.18)))
    side = int(width * rng.uniform(0.01, 0.035))
    draw.rectangle((0, 0, width, band_top), fill=colour)
    draw.rectangle((0, height - band_bottom, width, height), fill=colour)
    draw.rectangle((0, 0, side, height), fill=colour)
    draw.rectangle((width - side, 0, width, height), fill=colour)
    if band_bottom > height * 0.07 and rng.random() < 0.8:
        footer = ImageFont.truetype(SMALL_FONT, max(8, int(band_bottom * 0.7)))
        text = str(DEALERS[int(rng.integers(len(DEALERS)))])
        fw = footer.getlength(text)
        draw.text(((width - fw) / 2, height - band_bottom * 0.95), text, font=footer, fill=text_colour)


def render_plate(rng: np.random.Generator) -> tuple[Image.Image, str, str, tuple[int, int, int, int]]:
    """One clean plate image (RGB), its label, its layout name and the box around its characters."""
    weights = np.array([layout.weight for layout in LAYOUTS])
    layout = LAYOUTS[int(rng.choice(len(LAYOUTS), p=weights / weights.sum()))]
    pattern = layout.patterns[int(rng.integers(len(layout.patterns)))]
    printed = _random_text(rng) if pattern == "*" else _fill(pattern, rng)
    height = 160
    width = int(height * layout.aspect * rng.uniform(0.9, 1.1))
    font_path = list(FONT_FILES)[int(rng.integers(len(FONT_FILES)))]
    if layout.name == "us-ca" and rng.random() < 0.8 or layout.name == "us" and rng.random() < 0.3:
        font_path = CA_FONT_FILES[int(rng.integers(len(CA_FONT_FILES)))]

    bg, fg = _colors(layout.name, rng)
    plate = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(plate)
    left, top, right, bottom = int(width * 0.05), int(height * 0.22), int(width * 0.95), int(height * 0.82)
    if layout.name in ("eu", "uk") and rng.random() < 0.85:
        band = int(width * 0.09)
        draw.rectangle((0, 0, band, height), fill=_color(rng, (20, 50, 160), 15))
        code = EU_CODES[int(rng.integers(len(EU_CODES)))] if layout.name == "eu" else "UK"
        small = ImageFont.truetype(SMALL_FONT, int(height * 0.25))
        draw.text((band * 0.15, height * 0.6), code, font=small, fill=(255, 255, 255))
        left, top, bottom = band + int(width * 0.03), int(height * 0.12), int(height * 0.9)
    elif layout.name == "br-mercosur":
        draw.rectangle((0, 0, width, int(height * 0.2)), fill=_color(rng, (20, 60, 170), 15))
        small = ImageFont.truetype(SMALL_FONT, int(height * 0.14))
        draw.text((width * 0.4, height * 0.02), "BRASIL", font=small, fill=(255, 255, 255))
        top, bottom = int(height * 0.28), int(height * 0.92)
    elif layout.name in ("us", "us-ca", "br", "random", "two-row") and rng.random() < 0.8:
        state = US_STATES[int(rng.integers(len(US_STATES)))] if layout.name != "br" else "SP - SAO PAULO"
        if layout.name == "us-ca":
            state = "California" if rng.random() < 0.7 else "CALIFORNIA"
        font = SCRIPT_FONT if state[1:].islower() else SMALL_FONT
        small = ImageFont.truetype(font, int(height * rng.uniform(0.13, 0.2)))
        tw = small.getlength(state)
        color = _color(rng, (190, 30, 40), 30) if rng.random() < 0.6 else fg
        draw.text(((width - tw) / 2, height * 0.02), state, font=small, fill=color)
        if rng.random() < 0.5:
            footer = ImageFont.truetype(SMALL_FONT, int(height * 0.09))
            text = str(DEALERS[int(rng.integers(len(DEALERS)))])
            fw = footer.getlength(text)
            draw.text(((width - fw) / 2, height * 0.87), text, font=footer, fill=fg)
        top, bottom = int(height * 0.24), int(height * 0.84)
        if layout.name == "us-ca":
            top, bottom = int(height * rng.uniform(0.24, 0.3)), int(height * rng.uniform(0.76, 0.84))
    fill = float(rng.uniform(0.72, 0.92)) if layout.name == "us-ca" and rng.random() < 0.7 else None

    rows = printed.split("/") if layout.two_rows else [printed]
    row_h = (bottom - top) // len(rows)
    placed = []
    for i, row_text in enumerate(rows):
        row = _text_image(row_text, font_path, 120, fg, bg, rng)
        box = (left, top + i * row_h + 2, right, top + (i + 1) * row_h - 2)
        placed.append(_paste_fit(plate, row, box, rng, fill))
    if layout.name in ("us", "us-ca") and rng.random() < 0.5:
        _stickers(draw, width, height, rng)
    if rng.random() < 0.7:
        draw.rectangle((2, 2, width - 3, height - 3), outline=fg, width=int(rng.integers(2, 6)))
    if layout.name in ("us", "us-ca", "random") and rng.random() < 0.45:
        _frame(draw, width, height, top, bottom, rng)
    text_box = (
        min(b[0] for b in placed),
        min(b[1] for b in placed),
        max(b[2] for b in placed),
        max(b[3] for b in placed),
    )
    return plate, label_of(printed), layout.name, text_box


def _colors(layout: str, rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Background and character colours typical of the layout."""
    if layout == "uk" and rng.random() < 0.5 or layout == "eu" and rng.random() < 0.1:
        return _color(rng, (245, 200, 20)), _color(rng, (15, 15, 15), 10)
    if layout == "br":
        return _color(rng, (190, 190, 190)), _color(rng, (20, 20, 20), 10)
    if layout == "us-ca":
        return _color(rng, (245, 245, 245), 10), _color(rng, (20, 30, 110), 20)
    roll = rng.random()
    if roll < 0.6:
        return _color(rng, (240, 240, 240), 15), _color(rng, (20, 20, 40), 20)
    if roll < 0.75:
        return _color(rng, (240, 240, 240), 15), _color(rng, (30, 40, 140), 30)
    if roll < 0.85:
        return _color(rng, (20, 20, 20), 15), _color(rng, (240, 240, 240), 15)
    bg = (int(rng.integers(0, 256)), int(rng.integers(0, 256)), int(rng.integers(0, 256)))
    fg = (0, 0, 0) if sum(bg) > 380 else (255, 255, 255)
    return bg, fg


def _dirt(img: NpImage, rng: np.random.Generator) -> NpImage:
    h, w = img.shape[:2]
    mask = cv2.resize(rng.random((max(2, h // 16), max(2, w // 16))).astype(np.float32), (w, h))
    strength = rng.uniform(0.1, 0.45)
    brown = np.array([40, 60, 90], np.float32)
    out = img.astype(np.float32) * (1 - strength * mask[..., None]) + brown * strength * mask[..., None]
    dirty: NpImage = np.clip(out, 0, 255).astype(np.uint8)
    return dirty


def place_in_scene(
    plate: Image.Image,
    rng: np.random.Generator,
    out_w: int,
    out_h: int,
    text_box: tuple[int, int, int, int] | None = None,
    text_crop: float = 0.0,
) -> NpImage:
    """Warp the plate onto a background and crop it the way a detector box would (BGR, out_h x out_w).

    With probability ``text_crop`` the crop is cut around the characters (``text_box``) instead of
    the whole plate, as a box that hugs the text would be."""
    src = cv2.cvtColor(np.asarray(plate), cv2.COLOR_RGB2BGR)
    if rng.random() < 0.3:
        src = _dirt(src, rng)
    h, w = src.shape[:2]
    margin = 0.5
    canvas_w, canvas_h = int(w * (1 + 2 * margin)), int(h * (1 + 2 * margin))
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    jitter = rng.uniform(-0.08, 0.08, (4, 2)) * np.array([w, h], np.float32)
    skew = rng.uniform(-0.12, 0.12) * h
    dst = corners + jitter + np.array([w * margin, h * margin], np.float32)
    dst[:, 1] += np.array([skew, -skew, -skew, skew], np.float32) * 0.5
    matrix = cv2.getPerspectiveTransform(corners, dst.astype(np.float32))
    flat = np.full((canvas_h, canvas_w, 3), rng.integers(0, 256, 3), np.uint8)
    background = cv2.add(flat, rng.integers(0, 60, flat.shape, dtype=np.uint8))
    scene = cv2.warpPerspective(src, matrix, (canvas_w, canvas_h), dst=background, borderMode=cv2.BORDER_TRANSPARENT)
    x1, y1 = dst.min(axis=0)
    x2, y2 = dst.max(axis=0)
    hugs_text = text_box is not None and rng.random() < text_crop
    if text_box is not None and hugs_text:
        tx1, ty1, tx2, ty2 = text_box
        inner = np.array([[[tx1, ty1], [tx2, ty1], [tx2, ty2], [tx1, ty2]]], np.float32)
        warped = cv2.perspectiveTransform(inner, matrix)[0]
        x1, y1 = warped.min(axis=0)
        x2, y2 = warped.max(axis=0)
    bw, bh = x2 - x1, y2 - y1
    # Detector boxes are neither tight nor centred: grow or shrink each side independently.
    dx1, dx2 = rng.uniform(0.0, 0.08, 2) * bw if hugs_text else rng.uniform(-0.04, 0.1, 2) * bw
    dy1, dy2 = rng.uniform(0.02, 0.2, 2) * bh if hugs_text else rng.uniform(-0.06, 0.18, 2) * bh
    crop = scene[
        int(max(0, y1 - dy1)) : int(min(canvas_h, y2 + dy2)), int(max(0, x1 - dx1)) : int(min(canvas_w, x2 + dx2))
    ]
    # Distance: shrink to the size the plate would have in a frame, then degrade like a camera would.
    target_w = int(np.exp(rng.uniform(np.log(40), np.log(260))))
    scale = target_w / max(crop.shape[1], 1)
    small = cv2.resize(crop, (max(8, target_w), max(4, int(crop.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    small = real_world(small, rng, strength=0.6)
    return cv2.resize(small, (out_w, out_h), interpolation=cv2.INTER_LINEAR)


def synth_sample(rng: np.random.Generator, out_w: int, out_h: int, text_crop: float = 0.2) -> tuple[NpImage, str]:
    plate, label, _, text_box = render_plate(rng)
    return place_in_scene(plate, rng, out_w, out_h, text_box, text_crop), label


def available_fonts() -> list[Path]:
    return [Path(p) for p in FONT_FILES if Path(p).exists()]
