"""The built-in live test stream: real H.264 in MPEG-TS, made with PyAV.

A moving colour-bar pattern with a running clock (seven-segment digits
drawn into the picture), one keyframe a second, encoded by libx264 with
zero latency so every frame leaves the encoder as soon as it is made.
"""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Any

__all__ = ["TestPattern"]

# Segments of a seven-segment digit: (x, y, w, h) in a 4x7 cell grid.
_SEGMENTS = {
    "a": (0, 0, 4, 1), "b": (3, 0, 1, 4), "c": (3, 3, 1, 4), "d": (0, 6, 4, 1),
    "e": (0, 3, 1, 4), "f": (0, 0, 1, 4), "g": (0, 3, 4, 1),
}
_DIGITS = {
    "0": "abcdef", "1": "bc", "2": "abged", "3": "abgcd", "4": "fgbc",
    "5": "afgcd", "6": "afgedc", "7": "abc", "8": "abcdefg", "9": "abcdfg",
}


class _ByteCollector(io.RawIOBase):
    """A write-only file that collects what the muxer writes."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.chunks.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


class TestPattern:
    """Encodes frame after frame of the test pattern; :meth:`frame` returns
    the MPEG-TS bytes the muxer produced for it (possibly empty)."""

    __test__ = False  # not a pytest class

    def __init__(self, width: int = 320, height: int = 240, fps: int = 25) -> None:
        import av  # optional dependency: the `server` extra
        import numpy as np

        self._np = np
        self.width, self.height, self.fps = width, height, fps
        self._out = _ByteCollector()
        self._container = av.open(self._out, "w", format="mpegts")
        stream = self._container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = fps
        stream.codec_context.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "x264-params": f"keyint={fps}:min-keyint={fps}:scenecut=0:repeat-headers=1",
        }
        stream.time_base = Fraction(1, fps)
        self._stream = stream
        self._av = av
        self._count = 0
        x = np.arange(width, dtype=np.int32)
        self._ramp = (x * 256 // width).astype(np.int32)

    def _picture(self, n: int) -> Any:
        np = self._np
        h, w = self.height, self.width
        luma = np.empty((h, w), dtype=np.uint8)
        luma[:] = ((self._ramp + n * 4) % 256).astype(np.uint8)
        seconds = n / self.fps
        text = f"{int(seconds // 3600):02d}{int(seconds // 60) % 60:02d}{int(seconds) % 60:02d}"
        text += str(int(seconds * 10) % 10)
        scale = max(2, h // 40)
        y0 = h // 2 - 4 * scale
        luma[y0 - scale : y0 + 8 * scale, :] = 16
        for i, ch in enumerate(text):
            x0 = w // 2 - len(text) * 3 * scale + i * 6 * scale + (scale if i == 7 else 0)
            for seg in _DIGITS[ch]:
                sx, sy, sw, sh = _SEGMENTS[seg]
                luma[y0 + sy * scale : y0 + (sy + sh) * scale,
                     x0 + sx * scale : x0 + (sx + sw) * scale] = 235
        frame = self._av.VideoFrame(w, h, "yuv420p")
        frame.planes[0].update(luma.tobytes())
        chroma = np.full((h // 2, w // 2), 128, dtype=np.uint8)
        chroma[:, : w // 4] = (n * 3) % 256
        frame.planes[1].update(chroma.tobytes())
        frame.planes[2].update(np.flipud(chroma).tobytes())
        frame.pts = n
        frame.time_base = Fraction(1, self.fps)
        return frame

    def frame(self) -> bytes:
        """Encode the next frame; returns the MPEG-TS bytes produced."""
        picture = self._picture(self._count)
        self._count += 1
        for packet in self._stream.encode(picture):
            self._container.mux(packet)
        return self._out.take()

    def close(self) -> bytes:
        """Flush the encoder and the muxer; returns the last bytes."""
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._out.take()
