"""HDF5 run files: raw tags in the Photon-HDF5 layout plus qlab's settings log and results.

Layout::

    /                          attrs format_name="Photon-HDF5", format_version="0.5"
    /photon_data               (one tagger) or /photon_data0, /photon_data1 (one per tagger)
        timestamps             int64 ticks, Blosc2 (hdf5plugin): whole chunks shuffle + bytedelta + Zstd-1
                               (``chunk_codec``), the last partial chunk shuffle + Zstd-1; appendable
        detectors              int16 input channel of each tag
        timestamps_specs/timestamps_unit = 1e-12
    /identity, /setup, /provenance   Photon-HDF5 descriptive groups
    /user/qlab
        metadata               attrs: procedure, parameters (JSON), start_time, software_version,
                               config_text, config_path, taggers (JSON), secret (bool: raw data of a key
                               run, owner-only)
        withheld_tags          int64 per tagger: tags not recorded because they were secret (key runs)
        settings_log           JSON lines: {"time", "instrument", "settings": {name: {value, unit}}, "source"}
                               source "read" (read from the device) or "last_known" (its settings cache
                               when a run failed: values with their own time and source)
        results_log            JSON lines: {"time", "name", "data"}; a failed run adds "error", one
                               "fault" per instrument fault and "laser_states" ({laser: off | unknown: why})
        gaps_<i>               (N, 2) int64 ps intervals lost to overflow, per tagger
        status                 int8 [complete]; set to 1 only on a clean finish

The file is opened in SWMR (single-writer/multi-reader) mode after creation; every append is
followed by a flush, so a reader (the GUI, ``qlab info``) sees data while the run goes on, and a
killed writer leaves a file holding every chunk flushed before the kill. Integrations append tags chunk
by chunk as the tagger delivers them (``append_tags(..., flush=False)`` between flushes at most
``FLUSH_INTERVAL_S`` apart), so ``kill -9`` loses at most the last second of tags. Reading needs h5py plus
``import hdf5plugin`` (which registers the Blosc2 filter).

Raw detection data of a QKD key run is secret: ordinary run files only count it (``withhold_tags``); it is
written only on request to a separate file made with ``secret=True`` (0600 in a 0700 directory, marked in
its metadata).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from qlab import __version__
from qlab.storage.chunk_codec import write_whole_chunks
from qlab.storage.secret import FILE_MODE, create_secret_file
from qlab.types import TagChunk

CHUNK_TAGS = 1 << 16  # tags per HDF5 chunk; appends are written whole chunks at a time
PENDING_CHUNK_TAGS = 4096  # small, so a short partial chunk allocates little space
FLUSH_INTERVAL_S = 0.5  # longest time appended tags may sit unflushed (wall clock)
_STR = h5py.string_dtype("utf-8")

# Node descriptions required verbatim by the Photon-HDF5 specification (its validators compare TITLEs).
SPEC_TITLES = {
    "/": "A file format for photon-counting detector based single-molecule spectroscopy experiments.",
    "/description": "A user-defined comment describing the data file.",
    "/acquisition_duration": "Measurement duration in seconds.",
    "/identity": "Information about the Photon-HDF5 data file.",
    "/identity/software": "Name of the software used to create the current Photon-HDF5 file.",
    "/identity/software_version": "Version of the software used to create current the Photon-HDF5 file.",
    "/identity/creation_time": "Creation time of the current Photon-HDF5 file.",
    "/identity/format_name": "Name of the file format.",
    "/identity/format_version": "Version for the Photon-HDF5 format.",
    "/identity/format_url": "Official URL for the Photon-HDF5 format.",
    "/identity/filename": "Original file name of the current Photon-HDF5 file (i.e. file name at creation time).",
    "/setup": "Information about the experimental setup.",
    "/setup/num_pixels": "Total number of detector pixels.",
    "/setup/num_spots": 'Number of excitation (or detection) "spots" in the sample.',
    "/setup/num_spectral_ch": "Number of distinct spectral bands which are acquired.",
    "/setup/num_polarization_ch": "Number of distinct polarization states which are acquired.",
    "/setup/num_split_ch": "Number of distinct detection channels detecting the same spectral band and "
                           "polarization. This value is > 1 when using a non-polarizing beam splitter.",
    "/setup/modulated_excitation": "True (i.e. 1) if there is any form of excitation modulation of excitation "
                                   "wavelength (as in us-ALEX or PAX) or polarization. This field is also True for "
                                   "pulse-interleaved excitation (PIE) or ns-ALEX measurements.",
    "/setup/lifetime": "True (i.e. 1) if the measurement includes a nanotimes array of photon arrival times with "
                       "respect to a laser pulse (as in TCSPC measurements).",
    "/setup/excitation_alternated": "New in version 0.5. Indicates whether each excitation source is alternated "
                                    "(True, or 1) or not alternated (False, or 0).",
    "/provenance": "Information about the original data file.",
    "photon_data": "Group containing arrays of photon-data.",
    "photon_data/timestamps": "Array of photon timestamps. Units specified in timestamps_units (defined in "
                              "timestamps_specs/).",
    "photon_data/detectors": "Array of pixel IDs for each timestamp.",
    "photon_data/timestamps_specs": "Specifications for timestamps.",
    "photon_data/timestamps_specs/timestamps_unit": "Value of 1-unit timestamp-increment in seconds.",
}


def _title(node: h5py.Group | h5py.Dataset, key: str) -> None:
    node.attrs["TITLE"] = np.bytes_(SPEC_TITLES[key])


def _compression() -> dict[str, Any]:
    # The filter's own pipeline (byte shuffle + Zstandard level 1) compresses only the last, partial chunk of a
    # dataset; whole chunks are compressed with bytedelta as well by chunk_codec and written directly.
    return dict(hdf5plugin.Blosc2(cname="zstd", clevel=1, filters=hdf5plugin.Blosc2.SHUFFLE))


def photon_group_name(index: int, n_taggers: int) -> str:
    return "photon_data" if n_taggers == 1 else f"photon_data{index}"


class RunFile:
    """Writer of one run. Use as a context manager; ``finish()`` marks it complete."""

    def __init__(self, path: str | Path, *, taggers: list[str], procedure: str = "",
                 parameters: dict[str, Any] | None = None, config_text: str = "", config_path: str = "",
                 description: str = "", secret: bool = False):
        self.path = Path(path)
        self.secret = secret
        if secret:  # owner-only before a byte is written (HDF5 truncates the file and keeps its mode)
            create_secret_file(self.path)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.taggers = list(taggers)
        # v1.10 format: needed for SWMR, and readable by every HDF5 >= 1.10 (PyTables-based tools too).
        self.f = h5py.File(self.path, "w", libver=("v110", "v110"))
        if secret:
            os.chmod(self.path, FILE_MODE)
        f = self.f
        f.attrs["format_name"] = "Photon-HDF5"
        f.attrs["format_version"] = "0.5"
        f.attrs["format_url"] = "http://photon-hdf5.org"
        # Fixed-length strings: PyTables-based Photon-HDF5 tools (phconvert) cannot read variable-length ones.
        f["description"] = np.bytes_(description or f"qlab run: {procedure}")
        f["acquisition_duration"] = np.float64(0.0)
        ident = f.create_group("identity")
        ident["software"] = np.bytes_("qlab")
        ident["software_version"] = np.bytes_(__version__)
        ident["creation_time"] = np.bytes_(time.strftime("%Y-%m-%d %H:%M:%S"))
        ident["filename"] = np.bytes_(self.path.name)
        ident["format_name"] = np.bytes_("Photon-HDF5")
        ident["format_version"] = np.bytes_("0.5")
        ident["format_url"] = np.bytes_("http://photon-hdf5.org")
        setup = f.create_group("setup")
        setup["num_pixels"] = np.int64(0)
        setup["num_spots"] = np.int64(1)
        setup["num_spectral_ch"] = np.int64(1)
        setup["num_polarization_ch"] = np.int64(2)
        setup["num_split_ch"] = np.int64(2)
        setup["modulated_excitation"] = False
        setup["lifetime"] = False
        setup["excitation_alternated"] = np.array([False])
        f.create_group("provenance")
        for key in [k for k in SPEC_TITLES if k.startswith("/")]:
            _title(f[key], key)
        self._ts: list[h5py.Dataset] = []
        self._det: list[h5py.Dataset] = []
        # Tags not yet in a complete HDF5 chunk. Writing chunk-aligned whole chunks keeps a compressed chunk
        # from being rewritten (and its old space wasted) at every append; a partial chunk is written only
        # when a flush is due, so a killed writer loses at most FLUSH_INTERVAL_S of tags.
        self._pend_t: list[list[np.ndarray]] = [[] for _ in taggers]
        self._pend_c: list[list[np.ndarray]] = [[] for _ in taggers]
        self._whole: list[int] = [0 for _ in taggers]  # tags in complete chunks
        self._gaps: list[h5py.Dataset] = []
        comp = _compression()
        for i, _name in enumerate(self.taggers):
            g = f.create_group(photon_group_name(i, len(self.taggers)))
            self._ts.append(g.create_dataset("timestamps", shape=(0,), maxshape=(None,), dtype=np.int64,
                                             chunks=(CHUNK_TAGS,), **comp))
            self._det.append(g.create_dataset("detectors", shape=(0,), maxshape=(None,), dtype=np.int16,
                                              chunks=(CHUNK_TAGS,), **comp))
            g.create_group("timestamps_specs")["timestamps_unit"] = np.float64(1e-12)
            for key in [k for k in SPEC_TITLES if k.startswith("photon_data")]:
                _title(g[key.removeprefix("photon_data").lstrip("/")] if key != "photon_data" else g, key)
        q = f.create_group("user").create_group("qlab")
        meta = q.create_group("metadata")
        meta.attrs["procedure"] = procedure
        meta.attrs["parameters"] = json.dumps(parameters or {}, default=str)
        meta.attrs["start_time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        meta.attrs["software_version"] = __version__
        meta.attrs["config_text"] = config_text
        meta.attrs["config_path"] = config_path
        meta.attrs["taggers"] = json.dumps(self.taggers)
        meta.attrs["secret"] = bool(secret)
        if secret:
            meta.attrs["secret_note"] = ("SECRET: raw detection data of a QKD key run; anyone holding this file "
                                         "can rebuild the key. Owner-only; delete when no longer needed.")
        self._settings = q.create_dataset("settings_log", shape=(0,), maxshape=(None,), dtype=_STR,
                                          chunks=(64,))
        self._results = q.create_dataset("results_log", shape=(0,), maxshape=(None,), dtype=_STR, chunks=(64,))
        for i in range(len(self.taggers)):
            self._gaps.append(q.create_dataset(f"gaps_{i}", shape=(0, 2), maxshape=(None, 2), dtype=np.int64,
                                               chunks=(256, 2)))
        # The partial chunk at the end of each tagger's tags, rewritten in place at every flush (uncompressed,
        # one fixed-size chunk) so the compressed datasets hold whole chunks only; readers of a file left by a
        # killed writer append it from index ``pending_start``. Emptied when the file is closed.
        for i in range(len(self.taggers)):
            for name, dtype in (("timestamps", np.int64), ("detectors", np.int16)):
                q.create_dataset(f"pending_{name}_{i}", shape=(CHUNK_TAGS,), dtype=dtype,
                                 chunks=(PENDING_CHUNK_TAGS,))  # fixed size: resizing would reallocate chunks
        self._pending_start = q.create_dataset("pending_start", data=np.zeros(len(self.taggers), np.int64))
        self._pending_count = q.create_dataset("pending_count", data=np.zeros(len(self.taggers), np.int64))
        self._status = q.create_dataset("status", data=np.zeros(1, np.int8))
        self._duration = q.create_dataset("duration_s", data=np.zeros(len(self.taggers)))
        self._withheld = q.create_dataset("withheld_tags", data=np.zeros(len(self.taggers), np.int64))
        f.swmr_mode = True
        f.flush()
        self._last_flush = time.monotonic()
        self.closed = False

    # -- appends (each flushed, so readers and crash recovery see it) -----------------------------------
    def append_tags(self, chunk: TagChunk, tagger: str | int = 0, flush: bool = True) -> None:
        """Append a chunk's tags, overflow gaps and duration. ``flush=False`` flushes only if the last flush
        is over FLUSH_INTERVAL_S s old (streamed integrations append every few tens of ms)."""
        i = tagger if isinstance(tagger, int) else self.taggers.index(tagger)
        if len(chunk):
            self._pend_t[i].append(np.asarray(chunk.timestamps, np.int64))
            self._pend_c[i].append(np.asarray(chunk.channels, np.int16))
            self._write_whole_chunks(i)
        self._account(i, chunk)
        self._flush(force=flush)

    def _account(self, i: int, chunk: TagChunk) -> None:
        """A chunk's overflow gaps and duration (recorded whether or not its tags are)."""
        if len(chunk.gaps):
            g = self._gaps[i]
            old = g.shape[0]
            g.resize((old + len(chunk.gaps), 2))
            g[old:] = chunk.gaps
        self._duration[i] = self._duration[i] + chunk.duration_s

    def _write_whole_chunks(self, i: int) -> None:
        pending = sum(a.size for a in self._pend_t[i])
        if pending < CHUNK_TAGS:
            return
        t = np.concatenate(self._pend_t[i])
        c = np.concatenate(self._pend_c[i])
        whole = (t.size // CHUNK_TAGS) * CHUNK_TAGS
        self._write(i, t[:whole], c[:whole])
        self._whole[i] += whole
        self._pend_t[i], self._pend_c[i] = [t[whole:]], [c[whole:]]

    def _write(self, i: int, t: np.ndarray, c: np.ndarray) -> None:
        """Write tags after the complete chunks: whole chunks directly (``chunk_codec``), a remainder (only at
        close) through the filter."""
        start, stop = self._whole[i], self._whole[i] + t.size
        ts, det = self._ts[i], self._det[i]
        if ts.shape[0] < stop:
            ts.resize((stop,))
            det.resize((stop,))
        done = 0
        if start % CHUNK_TAGS == 0:  # always, except after a tail written at close
            done = write_whole_chunks(ts, start, t, delta=True)
            write_whole_chunks(det, start, c, delta=False)
        if done < t.size:
            ts[start + done:stop] = t[done:]
            det[start + done:stop] = c[done:]

    def _write_partial(self) -> None:
        """Put each tagger's partial chunk where a crashed file's reader finds it (``pending_*``)."""
        q = self.f["user/qlab"]
        for i in range(len(self.taggers)):
            t = np.concatenate(self._pend_t[i]) if self._pend_t[i] else np.zeros(0, np.int64)
            c = np.concatenate(self._pend_c[i]) if self._pend_c[i] else np.zeros(0, np.int16)
            if t.size == 0 and self._pending_count[i] == 0:
                continue
            if t.size:
                q[f"pending_timestamps_{i}"][:t.size] = t
                q[f"pending_detectors_{i}"][:t.size] = c
            self._pending_start[i] = self._whole[i]
            self._pending_count[i] = t.size

    def _write_tail(self) -> None:
        """At close: the partial chunks go to the end of the tag datasets; nothing stays pending."""
        for i in range(len(self.taggers)):
            if any(a.size for a in self._pend_t[i]):
                t, c = np.concatenate(self._pend_t[i]), np.concatenate(self._pend_c[i])
                self._write(i, t, c)
                self._whole[i] += t.size
                self._pend_t[i], self._pend_c[i] = [], []
            self._pending_count[i] = 0
            self._pending_start[i] = self._whole[i]

    def _flush(self, force: bool = True) -> None:
        now = time.monotonic()
        if force or now - self._last_flush >= FLUSH_INTERVAL_S:
            self._write_partial()
            self.f.flush()
            self._last_flush = now

    def withhold_tags(self, chunk: TagChunk, tagger: str | int = 0, flush: bool = True) -> None:
        """Account for a secret chunk without recording its tags: duration and overflow gaps are kept (they
        say nothing about the key), the tags are only counted (``/user/qlab/withheld_tags``)."""
        i = tagger if isinstance(tagger, int) else self.taggers.index(tagger)
        self._account(i, chunk)
        self._withheld[i] = self._withheld[i] + len(chunk)
        self._flush(force=flush)

    def _append_json(self, ds: h5py.Dataset, record: dict[str, Any]) -> None:
        old = ds.shape[0]
        ds.resize((old + 1,))
        ds[old] = json.dumps(record, default=_jsonable)
        self.f.flush()

    def log_settings(self, instrument: str, settings: dict[str, Any], source: str = "read") -> None:
        """One settings record; ``source`` "read" (from the device) or "last_known" (the settings cache)."""
        self._append_json(self._settings, {"time": time.time(), "instrument": instrument, "settings": settings,
                                           "source": source})

    def add_result(self, name: str, data: dict[str, Any]) -> None:
        self._append_json(self._results, {"time": time.time(), "name": name, "data": data})

    def finish(self) -> None:
        """Mark the run complete (only on a clean finish) and close."""
        self._status[0] = 1
        self.close()

    def close(self) -> None:
        if not self.closed:
            self._write_tail()
            self.f.flush()
            self.f.close()
            self.closed = True

    def __enter__(self) -> RunFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, complex):
        return [o.real, o.imag]
    return str(o)
