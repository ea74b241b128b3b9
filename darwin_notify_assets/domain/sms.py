"""SMS encoding and segment count: GSM-7 (GSM 03.38) when every character fits, else UCS-2.

Standard library only: the provider sinks (``testing/sinks``) count segments with it too, and
they run on a bare ``python3``.
"""

import math

# GSM 03.38 basic character set, and the extension table (two septets each).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

GSM7 = "GSM-7"
UCS2 = "UCS-2"


def sms_segments(body: str) -> tuple[str, int]:
    """The encoding of an SMS body and the number of segments it needs.

    GSM-7 carries 160 septets in one segment and 153 in each of several; UCS-2 carries 70
    UTF-16 units in one and 67 in each of several (a character outside the BMP is two).

    Args:
        body: The message body.

    Returns:
        ``(encoding, segments)``, encoding ``"GSM-7"`` or ``"UCS-2"``, segments at least 1.
    """
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in body):
        septets = sum(2 if ch in GSM7_EXTENSION else 1 for ch in body)
        return GSM7, 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(body.encode("utf-16-le")) // 2
    return UCS2, 1 if units <= 70 else math.ceil(units / 67)
