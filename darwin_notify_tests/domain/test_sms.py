"""SMS encoding and segments: GSM-7 septets (extension characters count two), else UCS-2
units (a character outside the BMP counts two)."""

import pytest

from darwin_notify_assets.domain.sms import sms_segments


@pytest.mark.parametrize(
    ("body", "encoding", "segments"),
    [
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("€" * 80, "GSM-7", 1),  # extension characters take two septets
        ("€" * 81, "GSM-7", 2),
        ("a" * 159 + "{", "GSM-7", 2),
        ("a" * 158 + "^", "GSM-7", 1),
        ("Hi José, Café Müller: $1,000 @ 5% off!", "GSM-7", 1),
        ("伟" * 70, "UCS-2", 1),
        ("伟" * 71, "UCS-2", 2),
        ("伟" * 134, "UCS-2", 2),
        ("伟" * 135, "UCS-2", 3),
        ("😀" * 35, "UCS-2", 1),  # an emoji is two UTF-16 units
        ("😀" * 36, "UCS-2", 2),
        ("a" * 69 + "😀", "UCS-2", 2),
        ("Zoë: price drop", "UCS-2", 1),  # ë is not in the GSM-7 alphabet
    ],
)
def test_sms_segments(body, encoding, segments):
    assert sms_segments(body) == (encoding, segments)
