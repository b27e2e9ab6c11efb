"""Turn the OCR model's per-slot probabilities into a plate reading, using regional plate formats.

The OCR head predicts a fixed number of character slots, each a softmax over ``ALPHABET``; text is
left-aligned and padded with ``PAD``. Decoding happens in three steps:

1. exact k-best search over left-aligned strings (a beam that keeps the k best prefixes per slot is
   exact here, because the score of a string is a sum of independent per-slot terms);
2. for every known plate format, the best string that fits it, using the model's own probabilities
   restricted to the allowed characters per slot: this is what turns an "8" into a "B" where the
   format wants a letter;
3. ranking of all readings by model log-probability plus the log of a format prior, with guards so
   that a confident reading that fits no format (a vanity plate) is never rewritten.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from itertools import product

import numpy as np
import numpy.typing as npt

from edge.recognition.types import Candidate, PlateReading

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
PAD = "_"
SLOTS = 10
PAD_INDEX = ALPHABET.index(PAD)
DIGITS = ALPHABET[:10]
LETTERS = ALPHABET[10:PAD_INDEX]

MIN_PLATE_LENGTH = 2
MAX_PLATE_LENGTH = SLOTS
MIN_READING_CONFIDENCE = 0.05
"""Below this model probability of the best raw string the crop is treated as unreadable (junk)."""

VANITY_MIN_CHAR_PROB = 0.85
"""A raw best string that fits no format is kept as-is when every character is at least this likely.
The minimum, not the mean, is used: a mean hides the one doubtful character a format could fix."""

LOOKALIKE_MIN_PROB_RATIO = 0.05
"""A format may replace a slot's top character only by one at least this fraction as likely."""

UNMATCHED_WEIGHT = 0.05
"""Prior weight of a string that fits no known format (format weights are 0.2 .. 1.0)."""

HINT_BOOST = 4.0
"""Weight factor for formats of the hinted region or its sub-regions ("br" boosts "br-mercosur")."""

HINT_FAMILY_BOOST = 2.0
"""Weight factor for formats sharing the hint's top-level family ("us-ca" hint boosts "us")."""

RAW_POOL_SIZE = 32
"""Raw strings the k-best search keeps (before formats are tried); candidates' confidences are renormalised
over the pool. 64 until 2026-12-06: on 297 detector crops of val photos, 32 gave every plate the same text,
294 the same top five candidates (3 swapped low ones), confidences within 0.013, and took 0.30 ms a plate
instead of 0.44 (docs/benchmarks.md)."""
FORMAT_LENGTH_SOURCES = 8
"""Formats are tried only at the lengths of this many best raw strings."""

UNKNOWN_REGION = "unknown"
JUNK_REGION = "junk"

_PROB_FLOOR = 1e-12
_SCORE_TOLERANCE = 1e-9  # keeps exact score ties when pruning

FloatMatrix = npt.NDArray[np.float64]
IndexMatrix = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class PlateFormat:
    """One plate layout of a region.

    ``pattern`` is one token per slot: ``L`` any letter A-Z, ``D`` any digit, ``[..]`` a set of literal
    characters (``[EH]`` = E or H). ``weight`` is a relative prior in (0, 1].
    """

    region: str
    pattern: str
    weight: float


def _german_formats() -> tuple[PlateFormat, ...]:
    # District (1-3 letters) and recognition letters (1-2) merge into 2-5 letters once the separator
    # is gone, then 1-4 digits, optional E (electric) / H (historic) suffix; 8 characters at most.
    formats = []
    for letters, digits in product(range(2, 6), range(1, 5)):
        base = "L" * letters + "D" * digits
        if len(base) <= 8:
            formats.append(PlateFormat("eu-de", base, 0.4))
        if len(base) < 8:
            formats.append(PlateFormat("eu-de", base + "[EH]", 0.2))
    return tuple(formats)


# Layouts shared between regions are listed once per region; the higher weight (then table order)
# decides the reported region unless a region hint boosts another one.
FORMATS: tuple[PlateFormat, ...] = (
    # California since 1980 (7ABC123). Belgium's 1ABC123 is the same layout: see "eu-be".
    PlateFormat("us-ca", "DLLLDDD", 1.0),
    PlateFormat("us-ca", "DLDDDDD", 0.4),  # commercial vehicles (4A12345)
    PlateFormat("us-ca", "LLLDDD", 0.3),  # 1956-1969 (ABC123)
    PlateFormat("us-ca", "DDDLLL", 0.3),  # 1969-1980 (123ABC)
    # Serial layouts used by many states; the state cannot be told from the layout alone.
    PlateFormat("us", "LLLDDDD", 0.8),  # NY, PA, TX, OH, GA, NC ...; also Brazil before Mercosur
    PlateFormat("us", "LLLDDD", 0.5),
    PlateFormat("us", "DDDLLL", 0.5),
    PlateFormat("us", "LLDDDDD", 0.4),  # e.g. Illinois AB12345
    PlateFormat("us-nj", "LDDLLL", 0.5),  # A12BCD; same layout as Bucharest, see "ro"
    # Brazil: old grey plates and Mercosur (ABC1D23; Poland has the same layout, lower prior).
    PlateFormat("br", "LLLDDDD", 0.6),
    PlateFormat("br-mercosur", "LLLDLDD", 0.9),
    PlateFormat("ar", "LLDDDLL", 0.6),  # Argentina Mercosur, same layout as France / Italy
    # United Kingdom: current (AB12CDE), prefix and suffix systems.
    PlateFormat("uk", "LLDDLLL", 0.9),
    PlateFormat("uk", "LDDDLLL", 0.3),
    PlateFormat("uk", "LLLDDDL", 0.3),
    # Romania: Bucharest (B12ABC, B123ABC) and counties (CJ12ABC, same layout as the UK).
    PlateFormat("ro", "LDDLLL", 0.6),
    PlateFormat("ro", "LDDDLLL", 0.6),
    PlateFormat("ro", "LLDDLLL", 0.6),
    # France SIV and Italy share AB123CD; France comes first so it wins ties without a hint.
    PlateFormat("eu-fr", "LLDDDLL", 0.8),
    PlateFormat("eu-it", "LLDDDLL", 0.8),
    # Spain since 2000 (1234BCD) and the old provincial plates (M1234AB, GR1234AB).
    PlateFormat("eu-es", "DDDDLLL", 0.8),
    PlateFormat("eu-es", "LDDDDLL", 0.3),
    PlateFormat("eu-es", "LLDDDDLL", 0.3),
    # Belgium since 2010 (1ABC123), and the older ABC123 / 123ABC.
    PlateFormat("eu-be", "DLLLDDD", 0.7),
    PlateFormat("eu-be", "LLLDDD", 0.3),
    PlateFormat("eu-be", "DDDLLL", 0.3),
    # Portugal: 2020+, 2005-2020, 1992-2005, before 1992.
    PlateFormat("eu-pt", "LLDDLL", 0.5),
    PlateFormat("eu-pt", "DDLLDD", 0.5),
    PlateFormat("eu-pt", "DDDDLL", 0.4),
    PlateFormat("eu-pt", "LLDDDD", 0.4),
    # Netherlands side codes 1-14 (all six characters).
    PlateFormat("eu-nl", "LLDDDD", 0.5),
    PlateFormat("eu-nl", "DDDDLL", 0.5),
    PlateFormat("eu-nl", "DDLLDD", 0.5),
    PlateFormat("eu-nl", "LLDDLL", 0.5),
    PlateFormat("eu-nl", "LLLLDD", 0.5),
    PlateFormat("eu-nl", "DDLLLL", 0.5),
    PlateFormat("eu-nl", "DDLLLD", 0.5),
    PlateFormat("eu-nl", "DLLLDD", 0.5),
    PlateFormat("eu-nl", "LLDDDL", 0.5),
    PlateFormat("eu-nl", "LDDDLL", 0.5),
    PlateFormat("eu-nl", "LLLDDL", 0.5),
    PlateFormat("eu-nl", "LDDLLL", 0.5),
    PlateFormat("eu-nl", "DLLDDD", 0.5),
    PlateFormat("eu-nl", "DDDLLD", 0.5),
    # Poland: two-letter district + 5 characters, three-letter district + 4 (common layouts).
    PlateFormat("eu-pl", "LLDDDDD", 0.4),
    PlateFormat("eu-pl", "LLDDDDL", 0.4),
    PlateFormat("eu-pl", "LLDDDLL", 0.4),
    PlateFormat("eu-pl", "LLDLDDD", 0.4),
    PlateFormat("eu-pl", "LLDLLDD", 0.4),
    PlateFormat("eu-pl", "LLLLDDD", 0.4),
    PlateFormat("eu-pl", "LLLDDLL", 0.4),
    PlateFormat("eu-pl", "LLLDLDD", 0.4),
    PlateFormat("eu-pl", "LLLDDLD", 0.4),
    PlateFormat("eu-pl", "LLLDLLD", 0.4),
    PlateFormat("eu-pl", "LLLLLDD", 0.4),
    *_german_formats(),
)

_LOOKALIKE_PAIRS = (
    ("O", "0"), ("D", "0"), ("Q", "0"), ("O", "D"), ("O", "Q"),
    ("I", "1"), ("L", "1"), ("B", "8"), ("S", "5"), ("Z", "2"),
    ("G", "6"), ("A", "4"), ("T", "7"), ("U", "V"), ("M", "N"),
    ("E", "F"), ("P", "R"), ("C", "G"),
)  # fmt: skip


def _build_lookalikes() -> dict[str, str]:
    partners: dict[str, str] = {}
    for first, second in _LOOKALIKE_PAIRS:
        partners[first] = partners.get(first, "") + second
        partners[second] = partners.get(second, "") + first
    return partners


LOOKALIKES: dict[str, str] = _build_lookalikes()
"""Character -> the characters OCR commonly confuses it with (symmetric: "0" -> "ODQ", "O" -> "0DQ")."""


# ---------------------------------------------------------------------------------------------
# Compiled format tables, built once at import.
# ---------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"L|D|\[([0-9A-Z]+)\]")


def parse_pattern(pattern: str) -> tuple[str, ...]:
    """The characters allowed in each slot of a ``PlateFormat`` pattern."""
    slots: list[str] = []
    position = 0
    while position < len(pattern):
        token = _TOKEN_RE.match(pattern, position)
        if token is None:
            raise ValueError(f"bad plate pattern {pattern!r} at position {position}")
        literals = token.group(1)
        slots.append(literals if literals else (LETTERS if token.group(0) == "L" else DIGITS))
        position = token.end()
    if not MIN_PLATE_LENGTH <= len(slots) <= MAX_PLATE_LENGTH:
        raise ValueError(f"plate pattern {pattern!r} has {len(slots)} slots")
    return tuple(slots)


@dataclass(frozen=True, slots=True)
class _CompiledFormat:
    fmt: PlateFormat
    order: int  # position in FORMATS, breaks weight ties
    regex: re.Pattern[str] | None  # None when the letter/digit signature alone decides a match


_SIGNATURE_TABLE = str.maketrans({**dict.fromkeys(LETTERS, "L"), **dict.fromkeys(DIGITS, "D")})


def _signatures(slots: tuple[str, ...]) -> list[str]:
    """Letter/digit signatures ("DLLLDDD") a pattern can produce; used as a dictionary key."""

    def slot_classes(chars: str) -> str:
        return ("L" if set(chars) & set(LETTERS) else "") + ("D" if set(chars) & set(DIGITS) else "")

    return ["".join(choice) for choice in product(*map(slot_classes, slots))]


def _compile_formats() -> dict[str, tuple[_CompiledFormat, ...]]:
    index: dict[str, list[_CompiledFormat]] = {}
    for order, fmt in enumerate(FORMATS):
        slots = parse_pattern(fmt.pattern)
        pure_classes = all(s in (LETTERS, DIGITS) for s in slots)
        regex = None if pure_classes else re.compile("".join(f"[{s}]" for s in slots))
        for signature in _signatures(slots):
            index.setdefault(signature, []).append(_CompiledFormat(fmt, order, regex))
    return {signature: tuple(entries) for signature, entries in index.items()}


def _compile_slot_classes() -> tuple[npt.NDArray[np.bool_], IndexMatrix, npt.NDArray[np.intp]]:
    """Per-format slot classes for vectorised constrained decoding.

    Returns the class masks (classes x alphabet), each format's class per slot (formats x SLOTS,
    slots past the format's length use the pad-only class) and each format's length.
    """
    class_chars: list[str] = [PAD]
    format_classes = np.zeros((len(FORMATS), SLOTS), dtype=np.intp)
    lengths = np.zeros(len(FORMATS), dtype=np.intp)
    for row, fmt in enumerate(FORMATS):
        slots = parse_pattern(fmt.pattern)
        lengths[row] = len(slots)
        for slot, chars in enumerate(slots):
            if chars not in class_chars:
                class_chars.append(chars)
            format_classes[row, slot] = class_chars.index(chars)
    masks = np.array([[c in chars for c in ALPHABET] for chars in class_chars], dtype=np.bool_)
    return masks, format_classes, lengths


_FORMATS_BY_SIGNATURE = _compile_formats()
_CLASS_MASKS, _FORMAT_CLASSES, _FORMAT_LENGTHS = _compile_slot_classes()
_FORMAT_PAD_SLOTS = _FORMAT_CLASSES == 0  # class 0 is the pad-only class
_LOG_LOOKALIKE_RATIO = math.log(LOOKALIKE_MIN_PROB_RATIO)
_ASCII_CODES = np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)
_CHAR_INDEX = {char: index for index, char in enumerate(ALPHABET)}
_SLOT_RANGE = np.arange(SLOTS)
_NON_PLATE_CHARS = re.compile(r"[^A-Z0-9]")
_JUNK_READING = PlateReading(text="", confidence=0.0, char_confidences=(), region=JUNK_REGION, candidates=())


# ---------------------------------------------------------------------------------------------
# Plate text helpers.
# ---------------------------------------------------------------------------------------------


def normalize_plate(text: str) -> str:
    """Upper-case and drop everything but A-Z and 0-9 ("7abc-123 " -> "7ABC123")."""
    return _NON_PLATE_CHARS.sub("", text.upper())


def lookalike_variants(text: str, max_changes: int = 1) -> set[str]:
    """All spellings of a plate reachable by at most ``max_changes`` look-alike swaps.

    The (normalised) text itself is included, so the result can be used directly as a match set.
    """
    if max_changes < 0:
        raise ValueError("max_changes must be >= 0")
    variants = {normalize_plate(text)}
    frontier = set(variants)
    for _ in range(max_changes):
        frontier = {
            plate[:i] + swap + plate[i + 1 :]
            for plate in frontier
            for i, char in enumerate(plate)
            for swap in LOOKALIKES.get(char, "")
        } - variants
        variants |= frontier
    return variants


def _hint_factor(region: str, region_hint: str | None) -> float:
    if not region_hint:
        return 1.0
    if region == region_hint or region.startswith(region_hint + "-"):
        return HINT_BOOST
    if region.split("-")[0] == region_hint.split("-")[0]:
        return HINT_FAMILY_BOOST
    return 1.0


def _matching_formats(text: str) -> list[_CompiledFormat]:
    candidates = _FORMATS_BY_SIGNATURE.get(text.translate(_SIGNATURE_TABLE), ())
    return [c for c in candidates if c.regex is None or c.regex.fullmatch(text) is not None]


_WeightedFormat = tuple[float, str, re.Pattern[str] | None]  # (hinted weight, region, regex)


@functools.lru_cache(maxsize=4096)
def _formats_by_weight(signature: str, region_hint: str | None) -> tuple[_WeightedFormat, ...]:
    """Formats with this letter/digit signature, best hinted weight first (table order breaks ties)."""
    entries = _FORMATS_BY_SIGNATURE.get(signature, ())
    weighted = [(c.fmt.weight * _hint_factor(c.fmt.region, region_hint), c.order, c) for c in entries]
    weighted.sort(key=lambda entry: (-entry[0], entry[1]))
    return tuple((weight, c.fmt.region, c.regex) for weight, _, c in weighted)


def _best_format(text: str, region_hint: str | None) -> tuple[float, str]:
    """(prior weight, region) of the best format the text fits, or the unmatched prior."""
    for weight, region, regex in _formats_by_weight(text.translate(_SIGNATURE_TABLE), region_hint):
        if regex is None or regex.fullmatch(text) is not None:
            return weight, region
    return UNMATCHED_WEIGHT, UNKNOWN_REGION


def match_region(text: str) -> list[str]:
    """Region codes whose formats fit the (normalised) text, most likely first."""
    matches = sorted(_matching_formats(normalize_plate(text)), key=lambda c: (-c.fmt.weight, c.order))
    return list(dict.fromkeys(c.fmt.region for c in matches))


# ---------------------------------------------------------------------------------------------
# Decoding.
# ---------------------------------------------------------------------------------------------


def _log_probs(probs: npt.ArrayLike) -> FloatMatrix:
    matrix = np.asarray(probs, dtype=np.float64)
    if matrix.shape != (SLOTS, len(ALPHABET)):
        raise ValueError(f"expected probabilities of shape {(SLOTS, len(ALPHABET))}, got {matrix.shape}")
    # Floor (fmax also maps NaN to the floor) and renormalise, so that log() is finite and the
    # string probabilities stay a distribution.
    matrix = np.fmax(matrix, _PROB_FLOOR)
    log_matrix: FloatMatrix = np.log(matrix / matrix.sum(axis=1, keepdims=True))
    return log_matrix


def _pad_tail(logp: FloatMatrix) -> FloatMatrix:
    """tail[i] = log-probability that slots i.. are all padding (tail[SLOTS] = 0)."""
    tail: FloatMatrix = np.zeros(SLOTS + 1)
    tail[:SLOTS] = np.cumsum(logp[::-1, PAD_INDEX])[::-1]
    return tail


@functools.lru_cache(maxsize=8)
def _tie_break(size: int) -> FloatMatrix:
    # argpartition degrades badly on large groups of exactly equal values (common with synthetic
    # or saturated outputs); a ramp far below any meaningful score difference splits the ties.
    ramp: FloatMatrix = np.arange(size, dtype=np.float64) * 1e-13
    return ramp


def _top_k(values: FloatMatrix, k: int) -> npt.NDArray[np.intp]:
    """Indices of the k largest values, unordered; among equal values the earlier ones."""
    if values.size <= k:
        return np.arange(values.size)
    return np.argpartition(values - _tie_break(values.size), values.size - k)[values.size - k :]


def _kth_score_floor(char_logp: FloatMatrix, length_best: FloatMatrix, k: int) -> float:
    """A score that at least k distinct strings reach, so nothing below it can be in the top k.

    The strings used: the best one of each length and the single-character substitutions of the
    overall best; -inf when they are fewer than k.
    """
    best_length = int(np.argmax(length_best))
    head = char_logp[:best_length]
    costs = head.max(axis=1, keepdims=True) - head
    costs[np.arange(best_length), head.argmax(axis=1)] = np.inf  # the best string itself
    scores = np.concatenate((length_best[1:], length_best[best_length] - costs.ravel()))
    if scores.size < k:
        return -math.inf
    return float(np.partition(scores, scores.size - k)[scores.size - k])


def _k_best_rows(logp: FloatMatrix, k: int) -> tuple[IndexMatrix, FloatMatrix]:
    """The k most likely left-aligned strings as alphabet-index rows (pad-filled) and log-probs, best first.

    Exact: a string's log-prob is its prefix's plus terms that do not depend on the prefix, so every
    top-k string of length L has a prefix among the k best prefixes of each shorter length. Characters
    and prefixes that cannot beat the k-th best score are pruned first, which only saves time.
    """
    char_logp = logp[:, :PAD_INDEX]
    slot_best = char_logp.max(axis=1)
    prefix_best = np.concatenate(([0.0], np.cumsum(slot_best)))  # best prefix of each length
    tail = _pad_tail(logp)
    length_best = prefix_best + tail  # best string of each length
    length_best[0] = -np.inf  # the empty string is not a reading
    floor = _kth_score_floor(char_logp, length_best, k) - _SCORE_TOLERANCE
    # Best score any string extending a prefix of length m can still gain: max over L >= m.
    reach = np.maximum.accumulate(length_best[::-1])[::-1] - prefix_best
    slack = float(length_best.max()) - floor

    allowed_chars = slot_best[:, None] - char_logp <= slack

    prefix_scores: FloatMatrix = np.zeros(1)
    prefixes: IndexMatrix = np.full((1, SLOTS), PAD_INDEX, dtype=np.intp)
    done_scores: list[FloatMatrix] = []
    done_rows: list[IndexMatrix] = []
    for slot in range(SLOTS):
        allowed = np.flatnonzero(allowed_chars[slot])
        extended = (prefix_scores[:, None] + char_logp[slot, allowed]).ravel()
        keep = _top_k(extended, k)
        kept_scores = extended[keep]
        promising = kept_scores >= floor - reach[slot + 1]
        if not promising.all():
            keep, kept_scores = keep[promising], kept_scores[promising]
        if keep.size == 0:
            break
        parents, columns = np.divmod(keep, allowed.size)
        prefixes = prefixes[parents]  # fancy indexing copies, so earlier rows stay untouched
        prefixes[:, slot] = allowed[columns]
        prefix_scores = kept_scores
        done_scores.append(prefix_scores + tail[slot + 1])
        done_rows.append(prefixes)
    scores = np.concatenate(done_scores)
    best = _top_k(scores, k)
    best = best[np.argsort(-scores[best], kind="stable")]
    return np.concatenate(done_rows)[best], scores[best]


def _rows_to_texts(rows: IndexMatrix) -> list[str]:
    joined = _ASCII_CODES[rows].tobytes().decode("ascii")
    return [joined[i : i + SLOTS].rstrip(PAD) for i in range(0, len(joined), SLOTS)]


def k_best_strings(probs: npt.ArrayLike, k: int) -> list[tuple[str, float]]:
    """The k most likely non-empty left-aligned strings with their natural-log probabilities, best first."""
    if k < 1:
        raise ValueError("k must be >= 1")
    rows, scores = _k_best_rows(_log_probs(probs), k)
    return list(zip(_rows_to_texts(rows), scores.tolist(), strict=True))


def _format_constrained_strings(logp: FloatMatrix, lengths: set[int]) -> dict[str, float]:
    """For each format of an allowed length, its best fitting string and log-prob.

    A format is skipped when it needs a character whose probability is below
    LOOKALIKE_MIN_PROB_RATIO of its slot's best character: such a swap is not a look-alike fix.
    """
    masked = np.where(_CLASS_MASKS[:, None, :], logp[None, :, :], -np.inf)  # classes x SLOTS x alphabet
    class_best = masked.argmax(axis=2)
    class_logp = masked.max(axis=2)
    chosen = class_best[_FORMAT_CLASSES, _SLOT_RANGE]  # formats x SLOTS
    chosen_logp = class_logp[_FORMAT_CLASSES, _SLOT_RANGE]
    slot_best = logp[:, :PAD_INDEX].max(axis=1)
    plausible = (chosen_logp - slot_best >= _LOG_LOOKALIKE_RATIO) | _FORMAT_PAD_SLOTS
    wanted_length = np.zeros(SLOTS + 1, dtype=np.bool_)
    wanted_length[list(lengths)] = True
    accepted = plausible.all(axis=1) & wanted_length[_FORMAT_LENGTHS]
    texts = _rows_to_texts(chosen[accepted])
    return dict(zip(texts, chosen_logp[accepted].sum(axis=1).tolist(), strict=True))


@dataclass(frozen=True, slots=True)
class _Ranking:
    """The reading pool sorted by prior-weighted score, best first (parallel lists)."""

    texts: list[str]
    log_probs: list[float]  # model log-probability of each exact string
    regions: list[str]
    posteriors: list[float]  # prior-weighted probability, renormalised over the pool


def _rank(pool: dict[str, float], region_hint: str | None) -> _Ranking:
    texts = list(pool)
    log_probs = np.fromiter(pool.values(), dtype=np.float64, count=len(pool))
    matches = [_best_format(text, region_hint) for text in texts]
    scores = log_probs + np.log([weight for weight, _ in matches])
    order = np.argsort(-scores, kind="stable")  # stable: pool order (raw strings first) breaks ties
    return _Ranking(
        texts=[texts[i] for i in order.tolist()],
        log_probs=log_probs[order].tolist(),
        regions=[matches[i][1] for i in order.tolist()],
        posteriors=_posteriors(scores[order], log_probs).tolist(),
    )


def _posteriors(scores: FloatMatrix, log_probs: FloatMatrix) -> FloatMatrix:
    """exp(scores) renormalised; model mass outside the pool counts as unmatched strings."""
    unseen = 1.0 - float(np.exp(log_probs).sum())
    terms = np.append(scores, math.log(unseen * UNMATCHED_WEIGHT)) if unseen > 0.0 else scores
    posteriors: FloatMatrix = np.clip(np.exp(scores - np.logaddexp.reduce(terms)), 0.0, 1.0)
    return posteriors


def _char_probs(logp: FloatMatrix, text: str) -> FloatMatrix:
    indices = [_CHAR_INDEX[char] for char in text]
    probs: FloatMatrix = np.exp(logp[_SLOT_RANGE[: len(text)], indices])
    return probs


def _is_plausible(logp: FloatMatrix, text: str) -> bool:
    """Whether every character is at least LOOKALIKE_MIN_PROB_RATIO as likely as its slot's best."""
    indices = [_CHAR_INDEX[char] for char in text]
    slots = _SLOT_RANGE[: len(text)]
    gaps = logp[slots, indices] - logp[slots, :PAD_INDEX].max(axis=1)
    return bool((gaps >= _LOG_LOOKALIKE_RATIO).all())


def _choose_best(ranking: _Ranking, raw_best_text: str, logp: FloatMatrix) -> int:
    """Index of the reading to report.

    The raw best stays when it fits no format yet every character is confident (vanity plates).
    Otherwise the top-ranked reading wins, skipping any that needs an implausible character: a
    strong prior (a region hint) must not turn a clear "8" with 2% "B" into a "B".
    """
    raw_best = ranking.texts.index(raw_best_text)
    vanity = ranking.regions[raw_best] == UNKNOWN_REGION
    if vanity and _char_probs(logp, raw_best_text).min() >= VANITY_MIN_CHAR_PROB:
        return raw_best
    # The raw best itself is always plausible (it takes each slot's best character), so this stops.
    return next(i for i, text in enumerate(ranking.texts) if _is_plausible(logp, text))


def _alternatives(ranking: _Ranking, best: int, limit: int) -> tuple[Candidate, ...]:
    alternatives: list[Candidate] = []
    for index, text in enumerate(ranking.texts):
        if len(alternatives) >= limit:
            break
        if index != best and MIN_PLATE_LENGTH <= len(text) <= MAX_PLATE_LENGTH:
            alternatives.append(Candidate(text=text, confidence=ranking.posteriors[index]))
    return tuple(alternatives)


def decode_plate(
    probs: npt.NDArray[np.float32],
    *,
    num_candidates: int = 8,
    region_hint: str | None = None,
) -> PlateReading:
    """Decode one plate's (SLOTS, len(ALPHABET)) probability matrix into a reading.

    ``confidence`` is the model probability of the chosen string (pad slots included);
    ``candidates`` are other readings, best first, with their prior-weighted probabilities
    renormalised over the search pool. Unreadable crops give text "" and region "junk".
    """
    if num_candidates < 0:
        raise ValueError("num_candidates must be >= 0")
    logp = _log_probs(probs)
    rows, scores = _k_best_rows(logp, max(RAW_POOL_SIZE, 2 * num_candidates))
    raw = dict(zip(_rows_to_texts(rows), scores.tolist(), strict=True))
    raw_best_text, raw_best_log_prob = next(iter(raw.items()))
    if math.exp(raw_best_log_prob) < MIN_READING_CONFIDENCE:
        return _JUNK_READING

    lengths = {len(text) for text in list(raw)[:FORMAT_LENGTH_SOURCES]}
    pool = dict(raw)  # raw strings first, so that they win score ties
    for text, log_prob in _format_constrained_strings(logp, lengths).items():
        pool.setdefault(text, log_prob)
    ranking = _rank(pool, region_hint.strip().lower() if region_hint else None)
    best = _choose_best(ranking, raw_best_text, logp)
    text = ranking.texts[best]
    if not MIN_PLATE_LENGTH <= len(text) <= MAX_PLATE_LENGTH:
        return _JUNK_READING
    return PlateReading(
        text=text,
        confidence=math.exp(ranking.log_probs[best]),
        char_confidences=tuple(_char_probs(logp, text).tolist()),
        region=ranking.regions[best],
        candidates=_alternatives(ranking, best, num_candidates),
    )


def mask_plate(text: str) -> str:
    """A plate text safe for logs ("7AB***3"): ALPR data is sensitive, full plates stay out of them."""
    if len(text) <= 4:
        return text[:1] + "*" * (len(text) - 1)
    return text[:3] + "*" * (len(text) - 4) + text[-1]


def edit_distance(a: str, b: str, limit: int | None = None) -> int:
    """Levenshtein distance; with ``limit``, any value above it may be reported as ``limit + 1``."""
    if limit is not None and abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if limit is not None and min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]
