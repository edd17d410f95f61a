"""What the H.264 framer reads from sequence parameter sets and slice
headers: the frame rate (VUI timing info), and whether a picture is a field;
and what a browser's decoder is configured with (profile, level, size)."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["SpsInfo", "field_picture", "parse_sps"]

# profile_idc values whose SPS carries chroma format, bit depths and scaling
# matrices (H.264 7.3.2.1.1).
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
_EXTENDED_SAR = 255
# Rates outside this range come from a damaged or odd SPS, not from video
# anyone paces (a timelapse at one picture in 10 s to high-speed capture).
_MIN_RATE, _MAX_RATE = 0.1, 1000.0


class _Truncated(Exception):
    """The SPS ends before the field being read."""


class _Bits:
    """A big-endian bit reader over an RBSP (emulation prevention removed)."""

    __slots__ = ("_data", "_pos", "_total")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self._total = len(data) * 8

    def u(self, n: int) -> int:
        if self._pos + n > self._total:
            raise _Truncated
        value = 0
        for _ in range(n):
            pos = self._pos
            value = (value << 1) | ((self._data[pos >> 3] >> (7 - (pos & 7))) & 1)
            self._pos = pos + 1
        return value

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise _Truncated  # no valid ue(v) is this long
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _rbsp(nal: bytes) -> bytes:
    """The payload of ``nal`` after its header, emulation prevention bytes removed."""
    out = bytearray()
    zeros = 0
    for byte in nal[1:]:
        if zeros >= 2 and byte == 0x03:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            nxt = (last + bits.se() + 256) % 256
        last = nxt or last


class SpsInfo(NamedTuple):
    """The fields of an SPS the framer uses."""

    #: Frames per second from the VUI timing info: ``time_scale / (2 *
    #: num_units_in_tick)``, two ticks a frame (H.264 E.2.1, as ffmpeg and
    #: x264 read it; a field coded as its own access unit lasts one tick, see
    #: :func:`field_picture`); None when there is none or it is outside
    #: 0.1-1000.
    rate: float | None
    #: frame_mbs_only_flag: False when pictures may be coded as fields.
    frame_mbs_only: bool
    #: Bits of frame_num in a slice header.
    frame_num_bits: int
    #: separate_colour_plane_flag (a slice header then has colour_plane_id).
    separate_colour_plane: bool
    profile_idc: int = 0
    #: constraint_set0..5 flags and the two reserved bits: the SPS's second byte.
    constraint_flags: int = 0
    level_idc: int = 0
    #: Picture size in pixels after the SPS's cropping window (0: cut short).
    width: int = 0
    height: int = 0

    @property
    def codec(self) -> str:
        """The RFC 6381 codec string ``avc1.PPCCLL`` (hex), as WebCodecs and
        Media Source Extensions take it."""
        return f"avc1.{self.profile_idc:02X}{self.constraint_flags:02X}{self.level_idc:02X}"


def parse_sps(nal: bytes) -> SpsInfo | None:
    """The :class:`SpsInfo` of the SPS NAL unit ``nal`` (header byte first),
    or None if it is not one or is cut short before frame_mbs_only_flag."""
    if not nal or nal[0] & 0x1F != 7:
        return None
    try:
        return _parse_sps(_Bits(_rbsp(nal)))
    except _Truncated:
        return None


def field_picture(nal: bytes, sps: SpsInfo) -> bool | None:
    """Whether the slice NAL unit ``nal`` (header byte first; its first bytes
    are enough) codes a field rather than a frame, per its field_pic_flag;
    None if it cannot be read."""
    if sps.frame_mbs_only:
        return False
    bits = _Bits(_rbsp(nal))
    try:
        bits.ue()  # first_mb_in_slice
        bits.ue()  # slice_type
        bits.ue()  # pic_parameter_set_id
        if sps.separate_colour_plane:
            bits.u(2)  # colour_plane_id
        bits.u(sps.frame_num_bits)  # frame_num
        return bool(bits.u(1))  # field_pic_flag
    except _Truncated:
        return None


def _parse_sps(bits: _Bits) -> SpsInfo:
    separate_colour_plane = False
    chroma_format = 1  # 4:2:0 unless a high profile says otherwise
    profile = bits.u(8)
    constraints = bits.u(8)
    level = bits.u(8)
    bits.ue()  # seq_parameter_set_id
    if profile in _HIGH_PROFILES:
        chroma_format = bits.ue()
        if chroma_format == 3:
            separate_colour_plane = bool(bits.u(1))
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format != 3 else 12):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if i < 6 else 64)
    frame_num_bits = bits.ue() + 4  # log2_max_frame_num_minus4
    if frame_num_bits > 16:
        raise _Truncated  # beyond the range H.264 allows: not an SPS
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        bits.u(1)  # delta_pic_order_always_zero_flag
        bits.se()  # offset_for_non_ref_pic
        bits.se()  # offset_for_top_to_bottom_field
        for _ in range(bits.ue()):  # num_ref_frames_in_pic_order_cnt_cycle
            bits.se()
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1  # pic_width_in_mbs_minus1
    height_units = bits.ue() + 1  # pic_height_in_map_units_minus1
    frame_mbs_only = bool(bits.u(1))
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field_flag
    info = SpsInfo(None, frame_mbs_only, frame_num_bits, separate_colour_plane,
                   profile, constraints, level)
    try:
        bits.u(1)  # direct_8x8_inference_flag
        width = width_mbs * 16
        height = (2 - frame_mbs_only) * height_units * 16
        if bits.u(1):  # frame_cropping_flag: offsets in crop units (H.264 7.4.2.1.1)
            left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
            if chroma_format == 0 or separate_colour_plane:
                unit_x, unit_y = 1, 2 - frame_mbs_only
            else:
                unit_x = 1 if chroma_format == 3 else 2
                unit_y = (2 if chroma_format == 1 else 1) * (2 - frame_mbs_only)
            width -= (left + right) * unit_x
            height -= (top + bottom) * unit_y
        info = info._replace(width=width, height=height)
        return info._replace(rate=_frame_rate(bits))
    except _Truncated:
        return info


def _frame_rate(bits: _Bits) -> float | None:
    """The rate from the VUI, ``bits`` just after frame_cropping."""
    if not bits.u(1):  # vui_parameters_present_flag
        return None
    # aspect_ratio_info_present_flag, then aspect_ratio_idc
    if bits.u(1) and bits.u(8) == _EXTENDED_SAR:
        bits.u(32)  # sar_width, sar_height
    if bits.u(1):  # overscan_info_present_flag
        bits.u(1)
    if bits.u(1):  # video_signal_type_present_flag
        bits.u(4)  # video_format, video_full_range_flag
        if bits.u(1):  # colour_description_present_flag
            bits.u(24)
    if bits.u(1):  # chroma_loc_info_present_flag
        bits.ue()
        bits.ue()
    if not bits.u(1):  # timing_info_present_flag
        return None
    num_units_in_tick = bits.u(32)
    time_scale = bits.u(32)
    if not num_units_in_tick or not time_scale:
        return None  # forbidden values: no usable rate
    rate = time_scale / (2 * num_units_in_tick)
    return rate if _MIN_RATE <= rate <= _MAX_RATE else None
