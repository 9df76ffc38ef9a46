"""A JPEG's marker structure, walked on the CPU before its bytes are queued for nvJPEG.

nvJPEG (like libjpeg-turbo's lenient mode) decodes a JPEG cut short into an image with a grey
or smeared lower part, often without an error: the client would get an answer for pixels it
never sent. So a model that decodes on its GPU first checks, here, in microseconds:

- the file starts with SOI (FFD8) and its marker segments up to the first SOS (start of
  scan) are whole (each segment's length fits in the data);
- an EOI (FFD9) follows the scan header, with entropy-coded data in between.

An EOI cannot occur inside entropy-coded data (a data byte FF is always stuffed as FF00), so
a file cut anywhere after its headers fails the second check. Not caught: bytes corrupted
inside the entropy-coded data of a complete file. Every decoder (nvJPEG, libjpeg-turbo,
Pillow) then decodes some garbage without an error, on the CPU path as on the GPU path.
"""

from __future__ import annotations

SOI, EOI, SOS = 0xD8, 0xD9, 0xDA
STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: no length field


def jpeg_structure_error(data: bytes) -> str | None:
    """Why these bytes are not a whole JPEG, or None when they are."""
    n = len(data)
    if data[:2] != b"\xff\xd8":
        return "no start-of-image marker"
    pos = 2
    while True:
        if pos >= n:
            return "the file ends before its first scan"
        if data[pos] != 0xFF:
            return f"no marker at byte {pos} where one must start"
        while pos < n and data[pos] == 0xFF:  # fill bytes may precede a marker
            pos += 1
        if pos >= n:
            return "the file ends inside a marker"
        marker = data[pos]
        pos += 1
        if marker == EOI:
            return "end-of-image before any scan"
        if marker in STANDALONE:
            continue
        if pos + 2 > n:
            return "the file ends inside a segment header"
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > n:
            return f"segment FF{marker:02X} at byte {pos - 2} runs past the end of the file"
        pos += length
        if marker == SOS:
            break
    eoi = data.rfind(b"\xff\xd9", pos)
    if eoi < 0:
        return "the file ends before its end-of-image marker (truncated)"
    if eoi == pos:
        return "the scan holds no data"
    return None
