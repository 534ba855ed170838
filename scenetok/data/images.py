"""Decoding one frame from disk or from bytes, with limits.

PIL refuses images over ``Image.MAX_IMAGE_PIXELS * 2`` pixels (``DecompressionBombError``) and only
*warns* between one and two times the limit; the default limit is a global PIL may change. Frames
are therefore opened through :func:`open_frame`, which sets the limit explicitly
(:data:`MAX_IMAGE_PIXELS`), checks the header size before decoding anything, and turns every
decoding failure into :class:`~scenetok.interfaces.CorruptSampleError` naming the source.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image

from scenetok.interfaces import CorruptSampleError

#: Largest frame decoded, in pixels (width x height). 100 MP is 12x a 4K frame (DL3DV's largest);
#: a bigger header is a decompression bomb or a mistake, and is skipped before decoding.
MAX_IMAGE_PIXELS = 100_000_000

# Set explicitly instead of relying on PIL's default (about 89 MP at the time of writing).
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


def open_frame(source: str | Path | bytes, where: str) -> Image.Image:
    """Decode ``source`` (a path or encoded bytes) into an RGB PIL image.

    Raises:
        CorruptSampleError: naming ``where`` when the data is not a decodable image, has a zero
            dimension or more than :data:`MAX_IMAGE_PIXELS` pixels (checked on the header, before
            decoding).
    """
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with warnings.catch_warnings():
            # between 1x and 2x the limit PIL only warns: enforce the limit ourselves below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(handle) as image:
                width, height = image.size
                if width <= 0 or height <= 0:
                    raise CorruptSampleError(f"{where}: image size {width}x{height}")
                if width * height > MAX_IMAGE_PIXELS:
                    raise CorruptSampleError(
                        f"{where}: {width}x{height} = {width * height:,} pixels exceeds the limit of "
                        f"{MAX_IMAGE_PIXELS:,} (scenetok.data.images.MAX_IMAGE_PIXELS); skipped undecoded")
                image.load()  # decode now, so truncated files fail here and not later
                return image.convert("RGB")
    except CorruptSampleError:
        raise
    except Exception as error:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, bombs...)
        raise CorruptSampleError(f"{where}: not a decodable image ({type(error).__name__}: {error})") from error
