"""The rule that labels real crops for the reader's training (``make_ocr_data.py real``)."""

from edge.recognition.types import PlateReading
from scripts.make_ocr_data import LabelRule
from scripts.trainlib.teachers import TeacherRead


def rule() -> LabelRule:
    return LabelRule(0.85, 0.5, 0.75, 0.3, 0.97, 0.9)


def test_strict_agreement_on_the_tight_crop_comes_first() -> None:
    pp = [TeacherRead("7ABC123", 0.95, 0.9), TeacherRead("7ABC123", 0.9, 0.8)]
    cct = [TeacherRead("7ABC123", 0.9, 0.6), TeacherRead("7ABC12", 0.9, 0.6)]
    assert rule().label(pp, cct) == ("7ABC123", "strict")


def test_looser_agreement_on_any_pair_of_crops() -> None:
    pp = [TeacherRead("CALIF7ABC123", 0.9, 0.5), TeacherRead("7ABC123", 0.8, 0.5)]
    cct = [TeacherRead("7ABC123", 0.6, 0.35), TeacherRead("7ABC12", 0.9, 0.6)]
    assert rule().label(pp, cct) == ("7ABC123", "agree")
    weak = [TeacherRead("7ABC123", 0.6, 0.2)]
    assert rule().label([TeacherRead("7ABC123", 0.8, 0.5)], weak) == (None, "")


def test_ppocr_alone_needs_the_same_very_confident_read_on_every_crop() -> None:
    sure = [TeacherRead("7ABC123", 0.99, 0.95), TeacherRead("7ABC123", 0.98, 0.93)]
    cct = [TeacherRead("7ABC128", 0.9, 0.6)]
    assert rule().label(sure, cct) == ("7ABC123", "ppocr")
    split = [TeacherRead("7ABC123", 0.99, 0.95), TeacherRead("7ABC12", 0.99, 0.95)]
    assert rule().label(split, cct) == (None, "")


def with_self() -> LabelRule:
    return LabelRule(
        0.85, 0.5, 0.75, 0.3, 0.97, 0.9, self_cct=0.9, self_cct_own=0.2, self_ppocr=0.9, self_ppocr_own=0.5
    )


def own(text: str, confidence: float) -> PlateReading:
    return PlateReading(text=text, confidence=confidence, char_confidences=(), region="unknown")


def test_our_reader_and_one_confident_teacher_make_a_pseudo_label() -> None:
    pp = [TeacherRead("ECSO70E", 0.81, 0.26), TeacherRead("ECSO70E", 0.84, 0.26)]
    cct = [TeacherRead("CSQ70E", 0.99, 0.98), TeacherRead("CSQ70E", 0.98, 0.96)]
    assert with_self().label(pp, cct, [own("CSQ7OE", 0.9), own("CSQ70E", 0.25)]) == ("CSQ70E", "self+cct")
    assert with_self().label(pp, cct, [own("CSQ70E", 0.15)]) == (None, "")  # our reader unsure
    unsure_cct = [TeacherRead("CSQ70E", 0.9, 0.85)]
    assert with_self().label(pp, unsure_cct, [own("CSQ70E", 0.9)]) == (None, "")
    sure_pp = [TeacherRead("DL7CN5617", 0.99, 0.76)]
    other_cct = [TeacherRead("DLCC55617", 0.6, 0.45)]
    assert with_self().label(sure_pp, other_cct, [own("DL7CN5617", 0.56)]) == ("DL7CN5617", "self+ppocr")
    assert with_self().label(sure_pp, other_cct, [own("DL7CN5617", 0.4)]) == (None, "")


def test_pseudo_labels_need_4_to_9_characters_and_one_text() -> None:
    cct = [TeacherRead("AB1", 1.0, 1.0)]
    assert with_self().label([TeacherRead("", 0.0, 0.0)], cct, [own("AB1", 1.0)]) == (None, "")
    pp = [TeacherRead("PUI8BES", 0.95, 0.9)]
    cct = [TeacherRead("PU18BES", 1.0, 1.0)]
    assert with_self().label(pp, cct, [own("PUI8BES", 0.9), own("PU18BES", 0.9)]) == (None, "")


def test_pseudo_labels_leave_the_existing_rules_and_need_our_reads() -> None:
    pp = [TeacherRead("7ABC123", 0.95, 0.9)]
    cct = [TeacherRead("7ABC123", 0.9, 0.6)]
    assert with_self().label(pp, cct, [own("7ABC128", 0.99)]) == ("7ABC123", "strict")
    sure = [TeacherRead("7ABC123", 0.99, 0.95), TeacherRead("7ABC123", 0.98, 0.93)]
    other = [TeacherRead("7ABC128", 0.99, 0.99)]
    assert with_self().label(sure, other, [own("7ABC128", 0.99)]) == ("7ABC123", "ppocr")
    assert with_self().label([TeacherRead("", 0.0, 0.0)], other) == (None, "")  # val crops: no reads of ours
    assert rule().label([TeacherRead("", 0.0, 0.0)], other, [own("7ABC128", 0.99)]) == (None, "")  # off
