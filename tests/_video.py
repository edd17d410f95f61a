"""Short test videos made with PyAV, in memory: the one encoding loop the
framer and timestamp tests share (each test module keeps its own picture,
size and encoder options, which are what its assertions depend on)."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from fractions import Fraction

import av
import numpy as np


def encode_video(
    fmt: str,
    *,
    frames: int,
    rate: Fraction | int,
    picture: Callable[[int], np.ndarray],
    options: Mapping[str, str],
    codec: str = "libx264",
    size: tuple[int, int] = (160, 120),
    pix_fmt: str = "yuv420p",
    start: int = 0,
) -> bytes:
    """``frames`` pictures (``picture(i)``: an RGB array of ``size``) at
    ``rate`` frames per second, encoded with ``codec`` and ``options`` and
    muxed as ``fmt`` (``mpegts``, ``h264``...); timestamps start at frame
    ``start``. The encoder is drained, so every frame is in the output."""
    out = io.BytesIO()
    container = av.open(out, "w", format=fmt)
    video = container.add_stream(codec, rate=rate)
    video.width, video.height = size
    video.pix_fmt = pix_fmt
    video.time_base = Fraction(1) / Fraction(rate)
    video.options = dict(options)
    for i in range(frames + 1):
        frame = None
        if i < frames:
            frame = av.VideoFrame.from_ndarray(picture(i), format="rgb24")
            frame.pts = start + i
        for packet in video.encode(frame):  # None at the end drains it
            container.mux(packet)
    container.close()
    return out.getvalue()
