"""PicoQuant PTU T2 files: streaming import through ``ptufile``, and a minimal T2 writer for tests and
the simulated MultiHarp.

T2 record (HydraHarp v2 / MultiHarp / TimeHarp 260, 32-bit little endian): bit 31 special, bits 25–30
channel, bits 0–24 time tag. special=1 & channel=0x3F: overflow, the time tag holds the number of
overflows (each adds 2^25 time units).
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qlab.errors import FileFormatError
from qlab.types import TagChunk

T2_WRAP = 1 << 25
# PicoQuant record-type codes (TTResultFormat_TTTRRecType) of T2 files.
REC_PICOHARP_T2 = 0x00010203
REC_HYDRAHARP1_T2 = 0x00010204  # HydraHarp v1: one overflow per overflow record
REC_HYDRAHARP2_T2 = 0x01010204
REC_TIMEHARP260N_T2 = 0x00010205
REC_TIMEHARP260P_T2 = 0x00010206
REC_MULTIHARP_T2 = 0x00010207  # same encoding as HydraHarp v2
REC_GENERIC_T2 = 0x00010208  # PicoHarp 330, MultiHarp 160
T2_TYPES = {REC_PICOHARP_T2, REC_HYDRAHARP1_T2, REC_HYDRAHARP2_T2, REC_TIMEHARP260N_T2, REC_TIMEHARP260P_T2,
            REC_MULTIHARP_T2, REC_GENERIC_T2}

# PTU tag type codes
_TY_INT8 = 0x10000008
_TY_FLOAT8 = 0x20000008
_TY_ANSI = 0x4001FFFF
_TY_EMPTY = 0xFFFF0008
_FIXED_TYPES = {0xFFFF0008, 0x00000008, 0x10000008, 0x11000008, 0x12000008, 0x20000008, 0x21000008}
_FLOAT_TYPES = {0x20000008, 0x21000008}  # Float8, TDateTime
_LENGTH_TYPES = {0x2001FFFF, 0x4001FFFF, 0x4002FFFF, 0xFFFFFFFF}  # Float8Array, Ansi, Wide string, blob
MAX_HEADER_BYTES = 16 << 20  # PicoQuant headers are a few kB; a longer "header" is damage


def encode_t2(timestamps_units: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """Encode photons (time in units of the global resolution, 0-based channels) as T2 records with
    overflow records inserted (one record may carry several overflows)."""
    t = np.asarray(timestamps_units, np.int64)
    ch = np.asarray(channels, np.int64)
    wraps = t >> 25
    dw = np.diff(wraps, prepend=0)
    out = []
    for i in np.flatnonzero(dw):
        out.append((i, dw[i]))
    n_ovf = len(out)
    records = np.empty(t.size + n_ovf, np.uint32)
    # Interleave: overflow record(s) before the first photon of each new wrap period.
    photon_pos = np.arange(t.size) + np.searchsorted([i for i, _ in out], np.arange(t.size), side="right")
    records[photon_pos] = ((ch & 0x3F) << 25 | (t & (T2_WRAP - 1))).astype(np.uint32)
    for k, (i, n) in enumerate(out):
        records[i + k] = np.uint32((1 << 31) | (0x3F << 25) | int(n))
    return records


def write_ptu_t2(path: str | Path, timestamps_ps: np.ndarray, channels: np.ndarray,
                 resolution_s: float = 1e-12, record_type: int = REC_MULTIHARP_T2) -> None:
    """Write a T2 PTU file (header tags + records) readable by PicoQuant software and ``ptufile``."""
    units = np.asarray(timestamps_ps, np.int64) * 1e-12 / resolution_s
    records = encode_t2(np.round(units).astype(np.int64), channels)
    tags: list[bytes] = []

    def tag(ident: str, typ: int, value: int | float | str, idx: int = -1) -> None:
        head = struct.pack("<32siI", ident.encode()[:32], idx, typ)
        if typ == _TY_ANSI:
            raw = str(value).encode() + b"\0"
            raw += b"\0" * (-len(raw) % 8)
            tags.append(head + struct.pack("<q", len(raw)) + raw)
        elif typ == _TY_FLOAT8:
            tags.append(head + struct.pack("<d", float(value)))
        else:
            tags.append(head + struct.pack("<q", int(value)))

    tag("File_GUID", _TY_ANSI, "{00000000-0000-0000-0000-000000000000}")
    tag("Measurement_Mode", _TY_INT8, 2)
    tag("Measurement_SubMode", _TY_INT8, 0)
    tag("TTResultFormat_TTTRRecType", _TY_INT8, record_type)
    tag("TTResultFormat_BitsPerRecord", _TY_INT8, 32)
    tag("MeasDesc_GlobalResolution", _TY_FLOAT8, resolution_s)
    tag("MeasDesc_Resolution", _TY_FLOAT8, resolution_s)
    tag("HW_InpChannels", _TY_INT8, int(np.max(channels, initial=0)) + 2)
    tag("TTResult_NumberOfRecords", _TY_INT8, records.size)
    tag("Header_End", _TY_EMPTY, 0)
    with open(path, "wb") as f:
        f.write(b"PQTTTR\0\0" + b"1.0.00\0\0")
        f.write(b"".join(tags))
        f.write(records.tobytes())


@dataclass(frozen=True)
class PtuHeader:
    """What qlab needs from a PTU header, checked against the file's size."""

    record_type: int
    resolution_s: float  # MeasDesc_GlobalResolution
    records_declared: int  # TTResult_NumberOfRecords
    records_in_file: int  # whole 32-bit records after the header
    data_offset: int  # byte offset of the first record

    @property
    def truncated(self) -> bool:
        return self.records_in_file < self.records_declared


def read_ptu_header(path: str | Path) -> PtuHeader:
    """Parse a PTU header with bounded reads (tag count, tag lengths and header size are limited by the file's
    size and MAX_HEADER_BYTES). Raises FileFormatError naming the file for a garbled or incomplete header, a
    non-T2 record type, or a resolution that is not a positive finite number."""
    p = str(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(min(size, MAX_HEADER_BYTES))
    except OSError as exc:
        raise FileFormatError(p, f"cannot read file: {exc.strerror}") from None
    if not head.startswith(b"PQTTTR\0\0"):
        raise FileFormatError(p, "not a PicoQuant PTU file (no PQTTTR magic)")
    pos, tags = 16, {}
    while True:
        if pos + 48 > len(head):
            raise FileFormatError(p, "PTU header ends before its Header_End tag (garbled or truncated header)")
        ident = head[pos:pos + 32].split(b"\0", 1)[0].decode("ascii", "replace")
        _idx, typ = struct.unpack_from("<iI", head, pos + 32)
        (value,) = struct.unpack_from("<d" if typ in _FLOAT_TYPES else "<q", head, pos + 40)
        pos += 48
        if typ in _LENGTH_TYPES:  # value is the byte length of the data that follows
            if not 0 <= value <= len(head) - pos:
                raise FileFormatError(p, f"PTU header tag {ident!r} claims {value} bytes of data; "
                                         f"the header has {len(head) - pos} left")
            pos += int(value)
        elif typ not in _FIXED_TYPES:
            raise FileFormatError(p, f"PTU header tag {ident!r} has unknown type code 0x{typ:08X} (garbled header)")
        if ident == "Header_End":
            break
        tags[ident] = value
    for key in ("TTResultFormat_TTTRRecType", "MeasDesc_GlobalResolution", "TTResult_NumberOfRecords"):
        if key not in tags:
            raise FileFormatError(p, f"PTU header lacks {key}")
    rec_type, res_s, declared = int(tags["TTResultFormat_TTTRRecType"]), tags["MeasDesc_GlobalResolution"], \
        int(tags["TTResult_NumberOfRecords"])
    if rec_type not in T2_TYPES:
        raise FileFormatError(p, f"record type 0x{rec_type:08X} is not a T2 record type; qlab imports T2 "
                                 "time-tag files")
    if tags.get("TTResultFormat_BitsPerRecord", 32) != 32:
        raise FileFormatError(p, f"{tags['TTResultFormat_BitsPerRecord']} bits per record; T2 records have 32")
    if not (math.isfinite(res_s) and 0 < res_s < 1):
        raise FileFormatError(p, f"global resolution {res_s!r} s is not a time resolution")
    if declared < 0:
        raise FileFormatError(p, f"the header declares {declared} records")
    return PtuHeader(rec_type, float(res_s), declared, (size - pos) // 4, pos)


def check_ptu_complete(path: str | Path, allow_truncated: bool = False) -> PtuHeader:
    """The header of ``path``; raises FileFormatError for a truncated file (saying how many records were
    expected and how many are there) unless ``allow_truncated``."""
    h = read_ptu_header(path)
    if h.truncated and not allow_truncated:
        raise FileFormatError(str(path), f"truncated PTU file: the header declares {h.records_declared} records, "
                                         f"the file holds {h.records_in_file}; analyse what is there with "
                                         "--allow-truncated")
    return h


def iter_ptu_t2(path: str | Path, chunk_records: int = 1 << 22, allow_truncated: bool = False
                ) -> Iterator[TagChunk]:
    """Photons of a T2 PTU file in ps, decoded by ``ptufile`` chunk by chunk (bounded memory).

    Channels are the file's own 0-based input numbers; sync events (T2 special channel 0) are skipped.
    Raises FileFormatError for a damaged or non-T2 file, and for a truncated one unless ``allow_truncated``
    (then the records that are there are decoded).
    """
    import ptufile

    header = check_ptu_complete(path, allow_truncated)
    try:
        ptu = ptufile.PtuFile(path)
    except Exception as exc:  # noqa: BLE001 - ptufile raises several types for bad files
        raise FileFormatError(str(path), f"not a readable PTU file: {exc}") from None
    try:
        yield from _decode(ptu, header, chunk_records)
    except FileFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - ptufile / NumPy on damaged records
        raise FileFormatError(str(path), f"damaged PTU records: {type(exc).__name__}: {exc}") from None
    finally:
        ptu.close()


def _decode(ptu: Any, header: PtuHeader, chunk_records: int) -> Iterator[TagChunk]:
    """Decode the records of an open ``ptufile.PtuFile`` (at most the header's count) into chunks."""
    if ptu.is_t3 or int(ptu.record_type) not in T2_TYPES:
        raise FileFormatError(str(ptu.filename), f"record type {ptu.record_type!r} is not a T2 record type; "
                                                 "qlab imports T2 time-tag files")
    res_ps = header.resolution_s / 1e-12
    raw = ptu.read_records()
    n = min(raw.size, header.records_declared)
    raw = raw[:n]
    one_per_record = int(ptu.record_type) in (REC_HYDRAHARP1_T2,)
    picoharp = int(ptu.record_type) == REC_PICOHARP_T2
    offset = 0
    t_prev = 0
    for start in range(0, n, chunk_records):
        recs = raw[start:start + chunk_records]
        dec = ptu.decode_records(recs)
        times = dec["time"].astype(np.int64) + offset
        photons = dec["channel"] >= 0
        t = np.round(times[photons] * res_ps).astype(np.int64)
        c = dec["channel"][photons].astype(np.int16)
        offset += _overflow_units(recs, one_per_record, picoharp)
        t_stop = int(round(offset * res_ps)) if start + chunk_records < n else (int(t[-1]) + 1 if t.size
                                                                                 else t_prev)
        yield TagChunk(t, c, t_prev, max(t_stop, t_prev))
        t_prev = max(t_stop, t_prev)


def _overflow_units(recs: np.ndarray, one_per_record: bool, picoharp: bool) -> int:
    """Time units added by the overflow records of one chunk (so the next chunk continues the clock)."""
    r = recs.astype(np.uint32)
    if picoharp:
        special = (r >> 28) == 0xF
        ovf = special & ((r & 0xF) == 0)
        return int(np.count_nonzero(ovf)) * 210698240
    special = (r >> 31) == 1
    ovf = special & (((r >> 25) & 0x3F) == 0x3F)
    if one_per_record:
        return int(np.count_nonzero(ovf)) * T2_WRAP
    counts = (r[ovf] & (T2_WRAP - 1)).astype(np.int64)
    counts[counts == 0] = 1
    return int(counts.sum()) * T2_WRAP
