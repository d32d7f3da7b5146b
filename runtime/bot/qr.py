"""QR codes of access links, as PNG images for ``sendPhoto``."""

from __future__ import annotations

import io


def qr_png(data: str, *, scale: int = 8, border: int = 4) -> bytes:
    """A PNG of ``data`` as a QR code (error correction M, or better when it fits)."""
    if not data:
        raise ValueError("nothing to encode")
    import segno  # only when a link is shown: not a cost of every start

    code = segno.make(data, error="m", boost_error=True, micro=False)
    out = io.BytesIO()
    code.save(out, kind="png", scale=scale, border=border)
    return out.getvalue()
