"""MPEG-TS packet headers and the two PSI tables the framer needs (PAT, PMT)."""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "PACKET_SIZE",
    "PAT_PID",
    "SYNC_BYTE",
    "Packet",
    "PesHeader",
    "parse_packet",
    "parse_pat",
    "parse_pes_header",
    "parse_pmt",
    "section_of",
]

PACKET_SIZE = 188
SYNC_BYTE = 0x47
PAT_PID = 0x0000


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes | memoryview) -> int:
    """CRC-32/MPEG-2 (poly 0x04C11DB7, init all ones, not reflected)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ byte]
    return crc


class Packet(NamedTuple):
    """The header fields of one 188-byte TS packet the framer looks at."""

    pid: int
    #: payload_unit_start_indicator (and no transport_error_indicator).
    unit_start: bool
    #: adaptation field random_access_indicator.
    random_access: bool
    #: offset of the payload in the packet (188 when there is none).
    payload_start: int


def parse_packet(pkt: bytes | memoryview) -> Packet:
    """Header fields of ``pkt`` (188 bytes starting with the sync byte)."""
    b1 = pkt[1]
    pid = ((b1 & 0x1F) << 8) | pkt[2]
    control = (pkt[3] >> 4) & 0x03
    start = 4
    random_access = False
    if control & 0x02:
        af_len = pkt[4]
        start = 5 + af_len
        random_access = af_len > 0 and bool(pkt[5] & 0x40)
    if not control & 0x01 or start > PACKET_SIZE:
        start = PACKET_SIZE
    # A packet flagged as damaged by the demodulator starts nothing.
    unit_start = bool(b1 & 0x40) and not b1 & 0x80
    return Packet(pid, unit_start, random_access, start)


def section_of(payload: bytes | memoryview) -> bytes | None:
    """The PSI section starting in ``payload`` (a unit-start payload), if it
    fits in it and its CRC is right; else None."""
    if not payload:
        return None
    start = 1 + payload[0]
    if start + 3 > len(payload):
        return None
    length = ((payload[start + 1] & 0x0F) << 8) | payload[start + 2]
    end = start + 3 + length
    if length < 9 or end > len(payload) or not payload[start + 1] & 0x80:
        return None
    section = bytes(payload[start:end])
    if crc32_mpeg2(section) != 0 or not section[5] & 0x01:  # current_next_indicator
        return None
    return section


def parse_pat(section: bytes) -> list[tuple[int, int]] | None:
    """(program_number, PMT PID) pairs of a PAT section, or None if it is not one."""
    if section[0] != 0x00:
        return None
    programs = []
    for i in range(8, len(section) - 4 - 3, 4):
        number = (section[i] << 8) | section[i + 1]
        pid = ((section[i + 2] & 0x1F) << 8) | section[i + 3]
        if number != 0:  # 0 is the network PID, not a program
            programs.append((number, pid))
    return programs


def parse_pmt(section: bytes) -> list[tuple[int, int]] | None:
    """(stream_type, PID) pairs of a PMT section in order, or None if it is not one."""
    if section[0] != 0x02 or len(section) < 16:
        return None
    end = len(section) - 4
    i = 12 + (((section[10] & 0x0F) << 8) | section[11])
    streams = []
    while i + 5 <= end:
        stream_type = section[i]
        pid = ((section[i + 1] & 0x1F) << 8) | section[i + 2]
        streams.append((stream_type, pid))
        i += 5 + (((section[i + 3] & 0x0F) << 8) | section[i + 4])
    return streams


# stream_ids whose PES packets have no optional header (H.222.0 table 2-21).
_NO_HEADER_IDS = frozenset({0xBC, 0xBE, 0xBF, 0xF0, 0xF1, 0xF2, 0xF8, 0xFF})


class PesHeader(NamedTuple):
    """What the framer reads from the header of a PES packet."""

    #: Presentation timestamp in 90 kHz ticks, or None.
    pts: int | None
    #: Decode timestamp in 90 kHz ticks, or None (absent: equal to ``pts``).
    dts: int | None
    #: Offset of the elementary stream data in the payload.
    es_start: int


def _timestamp(p: bytes | memoryview, i: int) -> int:
    """The 33-bit timestamp coded in the 5 bytes at ``p[i]`` (with marker bits)."""
    return (
        ((p[i] >> 1) & 0x07) << 30
        | p[i + 1] << 22
        | (p[i + 2] >> 1) << 15
        | p[i + 3] << 7
        | p[i + 4] >> 1
    )


def parse_pes_header(payload: bytes | memoryview) -> PesHeader | None:
    """The header of the PES packet starting ``payload``, or None if it does
    not start a PES packet."""
    if len(payload) < 6 or payload[0] != 0 or payload[1] != 0 or payload[2] != 1:
        return None
    if payload[3] in _NO_HEADER_IDS:
        return PesHeader(None, None, 6)
    if len(payload) < 9:
        return PesHeader(None, None, len(payload))
    es_start = min(9 + payload[8], len(payload))
    flags = payload[7] >> 6  # PTS_DTS_flags: 2 = PTS, 3 = PTS and DTS
    if not flags & 0x02 or len(payload) < 14:
        return PesHeader(None, None, es_start)
    pts = _timestamp(payload, 9)
    dts = _timestamp(payload, 14) if flags == 0x03 and len(payload) >= 19 else None
    return PesHeader(pts, dts, es_start)
