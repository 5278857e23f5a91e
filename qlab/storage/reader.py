"""Read qlab run files (and plain Photon-HDF5 files): metadata, settings, results, tags in chunks.

Every read turns what HDF5, h5py, NumPy or JSON raise on a damaged file into a FileFormatError naming the file
and what was being read. HDF5 itself can hang or crash on some damaged files; ``qlab.storage.probe`` reads a
file in a child process with a time limit first (``open_checked``) for callers that must stay responsive.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import h5py
import hdf5plugin  # noqa: F401 - registers the Blosc2 filter the raw tags are stored with
import numpy as np

from qlab.errors import FileFormatError
from qlab.storage.chunk_codec import read_range
from qlab.types import TagChunk

# What h5py, NumPy and json raise for damaged content (h5py maps HDF5 errors to OSError, RuntimeError,
# KeyError, ValueError, TypeError ...). FileFormatError passes through unchanged.
_DAMAGE = (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError, OverflowError,
           UnicodeDecodeError, MemoryError)

F = TypeVar("F", bound=Callable[..., Any])


def _reading(what: str) -> Callable[[F], F]:
    """Decorate a RunReader method: damage found while reading ``what`` becomes a FileFormatError."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(self: RunReader, *args: Any, **kw: Any) -> Any:
            try:
                return fn(self, *args, **kw)
            except FileFormatError:
                raise
            except _DAMAGE as exc:
                raise FileFormatError(str(self.path), f"damaged {what}: {_short(exc)}") from None
        return inner  # type: ignore[return-value]
    return wrap


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= 200 else text[:197] + "..."


def _is_int_vector(obj: Any) -> bool:
    return isinstance(obj, h5py.Dataset) and obj.ndim == 1 and obj.dtype.kind in "iu"


class RunReader:
    """Open a run file for reading; safe while the writer is still recording (SWMR).

    Raises FileFormatError if the file is not HDF5, not Photon-HDF5, or its structure is damaged (missing or
    misshapen datasets, bad timestamps unit, qlab metadata that is not what qlab writes).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # Plain read first: it covers finished files and fails fast on damage. A SWMR reader retries every
        # metadata read whose checksum fails (about a hundred times, sleeping in between), so a damaged file
        # would take minutes to refuse. Files being written, and files left by a killed writer (whose
        # superblock still says "open for write"), refuse a plain reader and are opened in SWMR mode.
        try:
            self.f = h5py.File(self.path, "r")
        except Exception as plain_exc:  # noqa: BLE001 - h5py raises OSError, RuntimeError, ... for bad files
            if "open for write" not in str(plain_exc):
                raise FileFormatError(str(path), f"not a readable HDF5 file ({_short(plain_exc)})") from None
            try:
                self.f = h5py.File(self.path, "r", swmr=True)
            except Exception as exc:  # noqa: BLE001
                raise FileFormatError(str(path), f"not a readable HDF5 file ({_short(exc)})") from None
        try:
            self._check_structure()
        except BaseException:
            self.f.close()
            raise

    @_reading("file structure")
    def _check_structure(self) -> None:
        if self.f.attrs.get("format_name") not in ("Photon-HDF5", b"Photon-HDF5"):
            raise FileFormatError(str(self.path), "HDF5 file without format_name='Photon-HDF5'")
        self.groups = sorted(k for k in self.f if k.startswith("photon_data"))
        if not self.groups:
            raise FileFormatError(str(self.path), "no /photon_data group")
        for i, name in enumerate(self.groups):
            g = self.f[name]
            if not isinstance(g, h5py.Group) or not _is_int_vector(g.get("timestamps")):
                raise FileFormatError(str(self.path), f"/{name} lacks a one-dimensional integer 'timestamps'")
            det = g.get("detectors")
            if det is not None and (not _is_int_vector(det) or det.shape[0] != g["timestamps"].shape[0]):
                raise FileFormatError(str(self.path), f"/{name}/detectors is not an integer vector as long as "
                                                      "its timestamps")
            self.timestamps_unit(i)
        if "user/qlab" in self.f:
            q = self.f["user/qlab"]
            if not isinstance(q, h5py.Group) or not isinstance(q.get("metadata"), h5py.Group):
                raise FileFormatError(str(self.path), "/user/qlab is not a qlab run file's group (no metadata)")
            for name, size in (("status", 1), ("duration_s", len(self.groups))):
                ds = q.get(name)
                if not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or ds.shape[0] < size:
                    raise FileFormatError(str(self.path), f"/user/qlab/{name} is missing or too short")

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_qlab(self) -> bool:
        return "user/qlab" in self.f

    @_reading("datasets")
    def refresh(self) -> None:
        for ds in self._datasets():
            ds.refresh()

    def _datasets(self) -> list[h5py.Dataset]:
        out = []
        for g in self.groups:
            out += [self.f[g]["timestamps"]]
            if "detectors" in self.f[g]:
                out.append(self.f[g]["detectors"])
        if self.is_qlab:
            q = self.f["user/qlab"]
            out += [q[k] for k in q if isinstance(q[k], h5py.Dataset)]
        return out

    @_reading("timestamps unit")
    def timestamps_unit(self, group: int = 0) -> float:
        """Seconds per timestamp unit. Raises FileFormatError if absent, not a number, or not finite and > 0."""
        g = self.f[self.groups[group]]
        try:
            unit = float(g["timestamps_specs/timestamps_unit"][()])
        except KeyError:
            raise FileFormatError(str(self.path), f"{g.name} lacks timestamps_specs/timestamps_unit") from None
        if not (math.isfinite(unit) and 0 < unit < 1):
            raise FileFormatError(str(self.path), f"{g.name} timestamps_unit {unit!r} s is not a time resolution")
        return unit

    @_reading("timestamps")
    def n_tags(self, group: int = 0) -> int:
        return int(self.f[self.groups[group]]["timestamps"].shape[0]) + int(self._pending(group)[0].size)

    def _pending(self, group: int) -> tuple[np.ndarray, np.ndarray]:
        """Tags a killed writer had flushed as a partial chunk (``/user/qlab/pending_*``) beyond the end of the
        tag datasets; empty for closed files and foreign ones."""
        empty = (np.zeros(0, np.int64), np.zeros(0, np.int16))
        q = self.f.get("user/qlab") if self.is_qlab else None
        if q is None or f"pending_timestamps_{group}" not in q or "pending_count" not in q:
            return empty
        pt, pc = q[f"pending_timestamps_{group}"], q[f"pending_detectors_{group}"]
        count, start = int(q["pending_count"][group]), int(q["pending_start"][group])
        have = int(self.f[self.groups[group]]["timestamps"].shape[0])
        if not 0 < count <= min(pt.shape[0], pc.shape[0]) or not 0 <= start <= have:
            return empty
        skip = have - start  # whole chunks written after the partial one was flushed overlap its start
        if skip >= count:
            return empty
        return pt[skip:count].astype(np.int64), pc[skip:count].astype(np.int16)

    def iter_chunks(self, group: int = 0, chunk_tags: int = 1 << 22) -> Iterator[TagChunk]:
        """Tags in ps, chunk by chunk, without reading the whole file into memory. Raises FileFormatError
        when a chunk cannot be read (damaged data)."""
        try:
            yield from self._iter_chunks(group, chunk_tags)
        except FileFormatError:
            raise
        except _DAMAGE as exc:
            raise FileFormatError(str(self.path), f"damaged tag data: {_short(exc)}") from None

    def _iter_chunks(self, group: int, chunk_tags: int) -> Iterator[TagChunk]:
        gaps = self.gaps(group)
        for start in range(0, self.n_tags(group), chunk_tags):
            t, c = self.read_tags(group, start, start + chunk_tags)
            t0, t1 = int(t[0]) if t.size else 0, int(t[-1]) + 1 if t.size else 0
            g_in = gaps[(gaps[:, 0] < t1) & (gaps[:, 1] > t0)] if len(gaps) else gaps
            yield TagChunk(t, c, t0, t1, g_in)

    def read_tags(self, group: int, a: int, b: int,
                  buffers: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Tags [a, b) of a tagger (indices clipped to ``n_tags``) as (int64 ps, int16 channels): the tag
        datasets, then the partial chunk a killed writer left pending. ``buffers``: (timestamps, channels)
        arrays of the datasets' dtypes to decode into (see ``read_range``). Raises the h5py/HDF5 error of
        damaged data (``iter_chunks`` names the file)."""
        g = self.f[self.groups[group]]
        ts, det = g["timestamps"], g.get("detectors")
        n_ds = int(ts.shape[0])
        a = max(a, 0)
        tb, cb = buffers if buffers is not None else (None, None)
        t = read_range(ts, a, min(b, n_ds), tb).astype(np.int64, copy=False) if a < n_ds else np.zeros(0, np.int64)
        if det is not None and a < n_ds:
            c = read_range(det, a, min(b, n_ds), cb).astype(np.int16, copy=False)
        else:
            c = np.zeros(t.size, np.int16)
        if b > n_ds:
            pt, pc = self._pending(group)
            lo = max(a, n_ds) - n_ds
            if lo < pt.size:
                t, c = np.concatenate([t, pt[lo:b - n_ds]]), np.concatenate([c, pc[lo:b - n_ds]])
        scale = self.timestamps_unit(group) / 1e-12
        if scale != 1.0:
            t = np.round(t * scale).astype(np.int64)
        return t, c

    def read_all(self, group: int = 0) -> TagChunk:
        return TagChunk.concatenate(list(self.iter_chunks(group)))

    @_reading("gaps")
    def gaps(self, group: int = 0) -> np.ndarray:
        if self.is_qlab and f"gaps_{group}" in self.f["user/qlab"]:
            gaps = np.asarray(self.f["user/qlab"][f"gaps_{group}"][()])
            if gaps.ndim != 2 or gaps.shape[1] != 2 or gaps.dtype.kind not in "iu":
                raise FileFormatError(str(self.path), f"/user/qlab/gaps_{group} is not an (n, 2) integer table")
            return gaps.astype(np.int64)
        return np.zeros((0, 2), np.int64)

    @_reading("duration")
    def duration_s(self, group: int = 0) -> float:
        if self.is_qlab:
            return float(self.f["user/qlab/duration_s"][group])
        ts = self.f[self.groups[group]]["timestamps"]
        if ts.shape[0] < 2:
            return 0.0
        return float(ts[-1] - ts[0]) * self.timestamps_unit(group)

    @_reading("metadata")
    def metadata(self) -> dict[str, Any]:
        if not self.is_qlab:
            return {}
        m = dict(self.f["user/qlab/metadata"].attrs)
        out = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in m.items()}
        out["parameters"] = self._json_attr(out, "parameters", "{}", dict)
        out["taggers"] = self._json_attr(out, "taggers", "[]", list)
        return out

    def _json_attr(self, attrs: dict[str, Any], key: str, default: str, kind: type) -> Any:
        text = attrs.get(key, default)
        if not isinstance(text, str):
            raise FileFormatError(str(self.path), f"metadata attribute {key!r} is not JSON text")
        return self._parse_json(text, f"metadata attribute {key!r}", kind)

    def _parse_json(self, text: str, where: str, kind: type) -> Any:
        """``text`` parsed as JSON of type ``kind``; FileFormatError naming the file and ``where`` otherwise."""
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FileFormatError(str(self.path), f"{where} is broken JSON ({exc})") from None
        if not isinstance(value, kind):
            name = {dict: "an object", list: "an array"}.get(kind, f"a {kind.__name__}")
            raise FileFormatError(str(self.path), f"{where} is not JSON {name}")
        return value

    def _json_log(self, name: str) -> list[dict[str, Any]]:
        if not self.is_qlab or name not in self.f["user/qlab"]:
            return []
        return [self._parse_json(text, f"/user/qlab/{name}[{i}]", dict)
                for i, text in enumerate(self.f["user/qlab"][name].asstr()[()])]

    @_reading("settings log")
    def settings_log(self) -> list[dict[str, Any]]:
        return self._json_log("settings_log")

    @_reading("results log")
    def results(self) -> list[dict[str, Any]]:
        out = self._json_log("results_log")
        for i, r in enumerate(out):
            if not isinstance(r.get("name"), str) or "data" not in r:
                raise FileFormatError(str(self.path), f"/user/qlab/results_log[{i}] lacks a name or data")
        return out

    @property
    @_reading("metadata")
    def secret(self) -> bool:
        """True for a file of raw detection data of a key run (written on request, owner-only)."""
        return bool(self.is_qlab and self.f["user/qlab/metadata"].attrs.get("secret", False))

    @_reading("withheld tag counts")
    def withheld_tags(self, group: int = 0) -> int:
        """Tags of this tagger that a key run counted but did not record (they were secret)."""
        if self.is_qlab and "withheld_tags" in self.f["user/qlab"]:
            return int(self.f["user/qlab/withheld_tags"][group])
        return 0

    @property
    @_reading("status")
    def complete(self) -> bool:
        return bool(self.is_qlab and self.f["user/qlab/status"][0] == 1)

    @_reading("summary")
    def summary(self) -> dict[str, Any]:
        meta = self.metadata()
        return {"path": str(self.path), "qlab": self.is_qlab, "complete": self.complete,
                "procedure": meta.get("procedure"), "start_time": meta.get("start_time"),
                "software_version": meta.get("software_version"), "taggers": meta.get("taggers"),
                "tags": {g: self.n_tags(i) for i, g in enumerate(self.groups)},
                "duration_s": {g: self.duration_s(i) for i, g in enumerate(self.groups)},
                "bytes_per_tag": (self.path.stat().st_size / max(1, sum(self.n_tags(i)
                                                                        for i in range(len(self.groups))))),
                "settings_entries": len(self.settings_log()), "secret": self.secret,
                "withheld_tags": {g: self.withheld_tags(i) for i, g in enumerate(self.groups)},
                "results": [r["name"] for r in self.results()]}
