"""Synthetic licence plates for OCR training: US, EU and Brazilian layouts, one and two rows.

Fonts come from Debian packages (see ``FONT_FILES``); each plate is rendered large with PIL
(California plates, the most frequent layout, by their own renderer: embossed characters, red
state name, stickers, bolts, frames, older designs), lit unevenly, warped in perspective onto a
car-like background, cropped as loosely or tightly as a detector box would be, and degraded
(dirt, blur, horizontal motion smear, haze, sharpening halos, interlacing, glare, low resolution,
noise, JPEG).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from edge.recognition.ocr import split_rows
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
    "/usr/share/fonts/truetype/roboto/unhinted/RobotoCondensed-Medium.ttf",
)
# Older California plates (yellow on blue or on black) used a wider, plainer face.
CA_LEGACY_FONT_FILES: tuple[str, ...] = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf",
    "/usr/share/fonts/truetype/roboto/unhinted/RobotoCondensed-Bold.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Bold.ttf",
)
# Stand-ins for the red cursive "California": none is a true script, sheared italics come closest at
# the few pixels a camera gives the state name.
CA_SCRIPT_FONT_FILES: tuple[str, ...] = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSerifCondensed-BoldItalic.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSerifBoldItalic.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSerif-BoldItalic.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSansBoldOblique.ttf",
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
    if band_top > height * 0.07 and rng.random() < 0.4:  # dealer frames often carry a line on top too
        header = ImageFont.truetype(SMALL_FONT, max(8, int(band_top * 0.7)))
        text = str(DEALERS[int(rng.integers(len(DEALERS)))])
        draw.text(((width - header.getlength(text)) / 2, band_top * 0.1), text, font=header, fill=text_colour)


STICKER_COLOURS: tuple[tuple[int, int, int], ...] = (
    (250, 220, 30),
    (240, 120, 30),
    (230, 60, 120),
    (60, 160, 70),
    (40, 110, 200),
    (200, 40, 40),
    (150, 80, 170),
    (235, 235, 235),
)


def _shape_text(text: str, font_path: str, size: tuple[int, int], shear: float) -> Image.Image:
    """A line of small text as a mask ("L"), slanted by ``shear`` and stretched to ``size``."""
    font = ImageFont.truetype(font_path, 64)
    left, top, right, bottom = (int(v) for v in font.getbbox(text))
    pad = int(abs(shear) * (bottom - top)) + 4
    mask = Image.new("L", (right - left + 2 * pad, bottom - top + 8), 0)
    ImageDraw.Draw(mask).text((pad - left, 4 - top), text, font=font, fill=255)
    if shear:
        mask = mask.transform(mask.size, Image.Transform.AFFINE, (1, shear, -shear * mask.height / 2, 0, 1, 0))
    box = mask.getbbox()
    if box:
        mask = mask.crop(box)
    return mask.resize((max(size[0], 1), max(size[1], 1)), Image.Resampling.BILINEAR)


def _paste_colour(plate: Image.Image, mask: Image.Image, xy: tuple[int, int], colour: tuple[int, int, int]) -> None:
    plate.paste(Image.new("RGB", mask.size, colour), xy, mask)


def _emboss(plate: Image.Image, bg: tuple[int, int, int], rng: np.random.Generator) -> Image.Image:
    """Raised (embossed) characters and rim: a shadow on one side of every stroke, a highlight on the
    other, as light falls on a stamped metal plate."""
    arr = np.asarray(plate).astype(np.float32)
    mask = (np.abs(arr - np.array(bg, np.float32)).sum(axis=2) > 60).astype(np.float32)
    reach = float(rng.uniform(1.0, 2.5))
    angle = rng.uniform(0, 2 * np.pi)
    dx, dy = int(round(np.cos(angle) * reach)), int(round(np.sin(angle) * reach))
    shadow = np.clip(np.roll(mask, (dy, dx), axis=(0, 1)) - mask, 0, 1)
    highlight = np.clip(np.roll(mask, (-dy, -dx), axis=(0, 1)) - mask, 0, 1)
    shadow = cv2.GaussianBlur(shadow, (3, 3), 0)
    highlight = cv2.GaussianBlur(highlight, (3, 3), 0)
    arr *= (1 - rng.uniform(0.15, 0.5) * shadow)[..., None]
    arr += (rng.uniform(0.1, 0.5) * highlight)[..., None] * (255 - arr)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _screws(
    draw: ImageDraw.ImageDraw, width: int, height: int, bg: tuple[int, int, int], rng: np.random.Generator
) -> None:
    """Mounting bolts in the plate's slots: two near the top (and sometimes two near the bottom),
    chrome, black or painted the plate's colour, with a shadow ring."""
    rows = [rng.uniform(0.07, 0.13)] + ([rng.uniform(0.87, 0.93)] if rng.random() < 0.3 else [])
    spread = rng.uniform(0.18, 0.24)
    radius = height * rng.uniform(0.03, 0.05)
    roll = rng.random()
    colour = _color(rng, (185, 185, 190), 30) if roll < 0.5 else _color(rng, (35, 35, 40), 15) if roll < 0.8 else bg
    for fy in rows:
        for fx in (spread, 1 - spread):
            cx, cy = width * (fx + rng.uniform(-0.01, 0.01)), height * fy
            draw.ellipse(
                (cx - radius * 1.25, cy - radius * 1.25, cx + radius * 1.25, cy + radius * 1.25), fill=(90, 90, 90)
            )
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
            if rng.random() < 0.5:  # a slot or a cross in the head
                draw.line((cx - radius * 0.7, cy, cx + radius * 0.7, cy), fill=(60, 60, 60), width=2)


def _ca_stickers(draw: ImageDraw.ImageDraw, width: int, height: int, rng: np.random.Generator) -> None:
    """California's registration stickers: year at top right (on plates since the 1990s), month at top
    left on older ones; bright colours with a small number."""
    small = ImageFont.truetype(SMALL_FONT, max(8, int(height * 0.08)))
    for corner, chance in ((1, 0.65), (0, 0.35)):
        if rng.random() > chance:
            continue
        sw, sh = int(width * rng.uniform(0.07, 0.11)), int(height * rng.uniform(0.11, 0.17))
        inset = int(width * rng.uniform(0.02, 0.07))
        x = inset if corner == 0 else width - sw - inset
        y = int(height * rng.uniform(0.03, 0.09))
        colour = _color(rng, STICKER_COLOURS[int(rng.integers(len(STICKER_COLOURS)))], 20)
        draw.rectangle((x, y, x + sw, y + sh), fill=colour)
        if rng.random() < 0.4:  # older stickers stacked on top of each other leave a rim
            draw.rectangle((x - 2, y - 2, x + sw + 2, y + sh + 2), outline=_color(rng, (200, 200, 200), 50), width=2)
        if rng.random() < 0.7:
            text = str(rng.integers(0, 30)).zfill(2) if corner == 1 else str(rng.integers(1, 13))
            dark = (20, 20, 20) if sum(colour) > 300 else (240, 240, 240)
            draw.text((x + sw * 0.15, y + sh * 0.1), text, font=small, fill=dark)


def _render_california(rng: np.random.Generator, pattern: str) -> tuple[Image.Image, str, tuple[int, int, int, int]]:
    """A California plate as most are seen today: white, dark blue condensed characters of one height,
    a red cursive "California" at the top, dmv.ca.gov or a dealer frame at the bottom, a year sticker
    top right, embossed, bolted on; a few older designs (block-letter state name, yellow on blue,
    yellow on black, six characters) are still on the road too. Returns the plate, its printed text and
    the characters' box."""
    style = int(rng.choice(4, p=[0.82, 0.06, 0.08, 0.04]))
    height = 160
    width = int(height * 2.0 * rng.uniform(0.96, 1.04))
    if style >= 2:
        pattern = ("LLLDDD", "LLL DDD", "DDDLLL", "DLLLDDD")[int(rng.integers(4))]
    printed = _fill(pattern, rng)
    if printed[0] == "0":  # the sequence never starts with 0
        printed = str(rng.integers(1, 10)) + printed[1:]
    if style == 0 or style == 1:
        level = rng.uniform(215, 252) if rng.random() < 0.25 else rng.uniform(235, 252)  # grimy or clean
        bg = _color(rng, (int(level), int(level), int(level - rng.uniform(0, 15))), 4)
        fg = _color(rng, (25, 35, 105), 20)
        font_path = CA_FONT_FILES[int(rng.integers(len(CA_FONT_FILES)))]
    else:
        bg = _color(rng, (28, 45, 120), 15) if style == 2 else _color(rng, (22, 22, 22), 10)
        fg = _color(rng, (235, 195, 55), 20)
        font_path = CA_LEGACY_FONT_FILES[int(rng.integers(len(CA_LEGACY_FONT_FILES)))]
    plate = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(plate)

    # The state name: a red cursive over about half the width (modern), block capitals (older).
    name_h = int(height * rng.uniform(0.13, 0.2))
    if style == 0:
        script = CA_SCRIPT_FONT_FILES[int(rng.integers(len(CA_SCRIPT_FONT_FILES)))]
        mask = _shape_text("California", script, (int(width * rng.uniform(0.33, 0.46)), name_h), rng.uniform(0.1, 0.35))
        colour = _color(rng, (195, 35, 45), 30) if rng.random() < 0.9 else fg
    else:
        name_h = int(height * rng.uniform(0.09, 0.14))
        mask = _shape_text("CALIFORNIA", SMALL_FONT, (int(width * rng.uniform(0.35, 0.55)), name_h), 0.0)
        colour = _color(rng, (195, 35, 45), 30) if style == 1 and rng.random() < 0.6 else fg
    name_top = style != 3 or rng.random() < 0.3
    name_y = int(height * rng.uniform(0.03, 0.07)) if name_top else int(height * rng.uniform(0.83, 0.88))
    _paste_colour(plate, mask, ((width - mask.width) // 2 + int(rng.integers(-6, 7)), name_y), colour)

    # The characters: one height, about half the plate's, over 70-86% of its width.
    top = int(height * rng.uniform(0.26, 0.33))
    bottom = int(height * rng.uniform(0.74, 0.81)) if name_top else int(height * rng.uniform(0.68, 0.76))
    if not name_top:
        top = int(height * rng.uniform(0.14, 0.2))
    row = _text_image(printed, font_path, 120, fg, bg, rng)
    fill = float(rng.uniform(0.7, 0.86)) if style <= 1 else float(rng.uniform(0.66, 0.82))
    placed = _paste_fit(plate, row, (int(width * 0.04), top, int(width * 0.96), bottom), rng, fill)

    if style == 0 and rng.random() < 0.55:  # the DMV's address under the characters (plates since ~2000)
        url = "dmv.ca.gov" if rng.random() < 0.8 else "DMV.CA.GOV"
        mask = _shape_text(
            url, SMALL_FONT, (int(width * rng.uniform(0.2, 0.3)), int(height * rng.uniform(0.05, 0.08))), 0.0
        )
        _paste_colour(plate, mask, ((width - mask.width) // 2, int(height * rng.uniform(0.85, 0.9))), fg)
    if style >= 2 or rng.random() < 0.15:  # a printed or embossed rim
        inset = int(rng.integers(2, 7))
        draw.rectangle((inset, inset, width - 1 - inset, height - 1 - inset), outline=fg, width=int(rng.integers(2, 5)))
    if rng.random() < 0.85:
        plate = _emboss(plate, bg, rng)
        draw = ImageDraw.Draw(plate)
    if rng.random() < 0.75:
        _ca_stickers(draw, width, height, rng)
    if rng.random() < 0.6:
        _screws(draw, width, height, bg, rng)
    if rng.random() < 0.5:
        _frame(draw, width, height, top, bottom, rng)
    return plate, printed, placed


def render_plate(
    rng: np.random.Generator, layouts: tuple[Layout, ...] = LAYOUTS
) -> tuple[Image.Image, str, str, tuple[int, int, int, int]]:
    """One clean plate image (RGB), its label, its layout name and the box around its characters; the
    layout is drawn from ``layouts`` by weight."""
    plate, printed, name, text_box = render_printed_plate(rng, layouts)
    return plate, label_of(printed), name, text_box


TWO_ROW_LAYOUTS = tuple(layout for layout in LAYOUTS if layout.two_rows)


def render_printed_plate(
    rng: np.random.Generator, layouts: tuple[Layout, ...] = LAYOUTS
) -> tuple[Image.Image, str, str, tuple[int, int, int, int]]:
    """:func:`render_plate` with the text as printed (gaps kept, rows split by "/") instead of the label."""
    weights = np.array([layout.weight for layout in layouts])
    layout = layouts[int(rng.choice(len(layouts), p=weights / weights.sum()))]
    pattern = layout.patterns[int(rng.integers(len(layout.patterns)))]
    if layout.name == "us-ca":
        ca_plate, ca_printed, ca_box = _render_california(rng, pattern)
        return ca_plate, ca_printed, layout.name, ca_box
    printed = _random_text(rng) if pattern == "*" else _fill(pattern, rng)
    height = 160
    width = int(height * layout.aspect * rng.uniform(0.9, 1.1))
    font_path = list(FONT_FILES)[int(rng.integers(len(FONT_FILES)))]
    if layout.name == "us" and rng.random() < 0.3:
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
    elif layout.name in ("us", "br", "random", "two-row") and rng.random() < 0.8:
        state = US_STATES[int(rng.integers(len(US_STATES)))] if layout.name != "br" else "SP - SAO PAULO"
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
    fill = None

    rows = printed.split("/") if layout.two_rows else [printed]
    row_h = (bottom - top) // len(rows)
    placed = []
    for i, row_text in enumerate(rows):
        row = _text_image(row_text, font_path, 120, fg, bg, rng)
        box = (left, top + i * row_h + 2, right, top + (i + 1) * row_h - 2)
        placed.append(_paste_fit(plate, row, box, rng, fill))
    if layout.name == "us" and rng.random() < 0.5:
        _stickers(draw, width, height, rng)
    if rng.random() < 0.7:
        draw.rectangle((2, 2, width - 3, height - 3), outline=fg, width=int(rng.integers(2, 6)))
    if layout.name in ("us", "random") and rng.random() < 0.45:
        _frame(draw, width, height, top, bottom, rng)
    text_box = (
        min(b[0] for b in placed),
        min(b[1] for b in placed),
        max(b[2] for b in placed),
        max(b[3] for b in placed),
    )
    return plate, printed, layout.name, text_box


def _colors(layout: str, rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Background and character colours typical of the layout."""
    if layout == "uk" and rng.random() < 0.5 or layout == "eu" and rng.random() < 0.1:
        return _color(rng, (245, 200, 20)), _color(rng, (15, 15, 15), 10)
    if layout == "br":
        return _color(rng, (190, 190, 190)), _color(rng, (20, 20, 20), 10)
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


def _lighting(img: NpImage, rng: np.random.Generator) -> NpImage:
    """Uneven light on the plate: a smooth gradient (the bumper recess, a low sun) or a hard-edged
    shadow across part of it (the trunk lid, a tow hitch)."""
    h, w = img.shape[:2]
    roll = rng.random()
    if roll > 0.5:
        return img
    yy, xx = np.indices((h, w), dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h) + rng.uniform(-0.5, 0.5)
    if roll < 0.35:
        gain = 1 - rng.uniform(0.15, 0.5) * np.clip(ramp + 0.5, 0, 1)
    else:
        edge = cv2.GaussianBlur((ramp > 0).astype(np.float32), (0, 0), rng.uniform(1.0, 6.0))
        gain = 1 - rng.uniform(0.25, 0.55) * edge
    out: NpImage = np.clip(img.astype(np.float32) * gain[..., None], 0, 255).astype(np.uint8)
    return out


def _car_background(h: int, w: int, rng: np.random.Generator) -> NpImage:
    """What lies around a plate: painted bodywork with a vertical gradient, bumper edges and a dark
    recess, or (as before) a flat colour with noise."""
    base = rng.integers(0, 256, 3).astype(np.float32)
    if rng.random() < 0.35:
        flat = np.full((h, w, 3), base, np.uint8)
        return cv2.add(flat, rng.integers(0, 60, flat.shape, dtype=np.uint8))
    shade = np.linspace(rng.uniform(0.6, 1.3), rng.uniform(0.6, 1.3), h, dtype=np.float32)[:, None, None]
    body = np.broadcast_to(base * shade, (h, w, 3)).copy()
    for _ in range(int(rng.integers(0, 4))):  # bumper edges, chrome strips, shadow lines
        y = int(rng.integers(0, h))
        thick = int(rng.integers(1, max(2, h // 12)))
        body[y : y + thick] = rng.uniform(0, 255) if rng.random() < 0.5 else body[y : y + thick] * 0.4
    if rng.random() < 0.4:  # the recess the plate sits in
        mx, my = int(w * rng.uniform(0.2, 0.3)), int(h * rng.uniform(0.15, 0.3))
        body[my : h - my, mx : w - mx] *= rng.uniform(0.35, 0.7)
    body += np.asarray(rng.normal(0, rng.uniform(2, 12), body.shape), np.float32)
    out: NpImage = np.clip(body, 0, 255).astype(np.uint8)
    return out


def _camera(img: NpImage, rng: np.random.Generator) -> NpImage:
    """Capture effects beyond ``real_world``: a moving car's horizontal smear, haze and low
    contrast, in-camera sharpening halos, and interlaced video fields."""
    h, w = img.shape[:2]
    out = img
    if rng.random() < 0.15:
        length = int(np.clip(w * rng.uniform(0.015, 0.04), 2, 10))
        kernel = np.zeros((1, length), np.float32)
        kernel[0, :] = 1.0 / length
        out = cv2.filter2D(out, -1, kernel)
    if rng.random() < 0.12:
        alpha = rng.uniform(0.45, 0.75)
        veil = rng.uniform(60, 220)
        out = cv2.addWeighted(out, alpha, np.full_like(out, int(veil)), 1 - alpha, 0)
    if rng.random() < 0.1:
        soft = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.8, 2.0))
        out = cv2.addWeighted(out, 1 + rng.uniform(0.5, 1.5), soft, -rng.uniform(0.5, 1.5), 0)
    if rng.random() < 0.05 and h >= 8:
        shift = int(rng.integers(1, 4))
        out = out.copy()
        out[1::2] = np.roll(out[1::2], shift, axis=1)
    return out


def place_in_scene(
    plate: Image.Image,
    rng: np.random.Generator,
    out_w: int | None,
    out_h: int | None,
    text_box: tuple[int, int, int, int] | None = None,
    text_crop: float = 0.0,
) -> NpImage:
    """Warp the plate onto a background and crop it the way a detector box would (BGR, out_h x out_w;
    with no ``out_w``, at the size the camera saw it, as the engine's crops are before the reader).

    With probability ``text_crop`` the crop is cut around the characters (``text_box``) instead of
    the whole plate, as a box that hugs the text would be."""
    src = cv2.cvtColor(np.asarray(plate), cv2.COLOR_RGB2BGR)
    if rng.random() < 0.3:
        src = _dirt(src, rng)
    src = _lighting(src, rng)
    h, w = src.shape[:2]
    margin = 0.5
    canvas_w, canvas_h = int(w * (1 + 2 * margin)), int(h * (1 + 2 * margin))
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    jitter = rng.uniform(-0.08, 0.08, (4, 2)) * np.array([w, h], np.float32)
    skew = rng.uniform(-0.12, 0.12) * h
    dst = corners + jitter + np.array([w * margin, h * margin], np.float32)
    dst[:, 1] += np.array([skew, -skew, -skew, skew], np.float32) * 0.5
    if rng.random() < 0.3:  # seen from the side: the far edge shorter
        squeeze = rng.uniform(0.0, 0.15) * h / 2
        far = (1, 2) if rng.random() < 0.5 else (0, 3)
        dst[far[0], 1] += squeeze
        dst[far[1], 1] -= squeeze
    if rng.random() < 0.3:  # a tilted camera or plate
        centre = dst.mean(axis=0)
        theta = np.deg2rad(rng.uniform(-5, 5))
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]], np.float32)
        dst = (dst - centre) @ rot.T + centre
    matrix = cv2.getPerspectiveTransform(corners, dst.astype(np.float32))
    background = _car_background(canvas_h, canvas_w, rng)
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
    small = real_world(_camera(small, rng), rng, strength=0.6)
    if out_w is None or out_h is None:
        return small
    return cv2.resize(small, (out_w, out_h), interpolation=cv2.INTER_LINEAR)


def synth_sample(rng: np.random.Generator, out_w: int, out_h: int, text_crop: float = 0.2) -> tuple[NpImage, str]:
    plate, label, _, text_box = render_plate(rng)
    return place_in_scene(plate, rng, out_w, out_h, text_box, text_crop), label


def synth_row_samples(rng: np.random.Generator, out_w: int, out_h: int) -> list[tuple[NpImage, str]]:
    """A two-row plate seen as a detector box frames it, cut into its rows the way the engine cuts a
    squarish crop (``edge.recognition.ocr.split_rows``): each row's image (out_h x out_w) and label."""
    plate, printed, _, text_box = render_printed_plate(rng, TWO_ROW_LAYOUTS)
    crop = place_in_scene(plate, rng, None, None, text_box, 0.0)
    rows = split_rows(crop)
    labels = [label_of(row) for row in printed.split("/")]
    return [
        (cv2.resize(row, (out_w, out_h), interpolation=cv2.INTER_LINEAR), label)
        for row, label in zip(rows, labels, strict=True)
    ]


def available_fonts() -> list[Path]:
    return [Path(p) for p in FONT_FILES if Path(p).exists()]
