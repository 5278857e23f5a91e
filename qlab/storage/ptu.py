"""PicoQuant PTU T2 files: streaming import through ``ptufile``, and a minimal T2 writer for tests and
the simulated MultiHarp.

T2 record (HydraHarp v2 / MultiHarp / TimeHarp 260, 32-bit little endian): bit 31 special, bits 25–30
channel, bits 0–24 time tag. special=1 & channel=0x3F: overflow, the time tag holds the number of
overflows (each adds 2^25 time units).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

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


def iter_ptu_t2(path: str | Path, chunk_records: int = 1 << 22) -> Iterator[TagChunk]:
    """Photons of a T2 PTU file in ps, decoded by ``ptufile`` chunk by chunk (bounded memory).

    Channels are the file's own 0-based input numbers; sync events (T2 special channel 0) are skipped.
    """
    import ptufile

    try:
        ptu = ptufile.PtuFile(path)
    except Exception as exc:  # noqa: BLE001 - ptufile raises several types for bad files
        raise FileFormatError(str(path), f"not a readable PTU file: {exc}") from None
    with ptu:
        if ptu.is_t3 or int(ptu.record_type) not in T2_TYPES:
            raise FileFormatError(str(path), f"record type {ptu.record_type!r} is not a T2 record type; "
                                             "qlab imports T2 time-tag files")
        res_ps = float(ptu.global_resolution) / 1e-12
        raw = ptu.read_records()
        n = raw.size
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
