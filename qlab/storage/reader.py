"""Read qlab run files (and plain Photon-HDF5 files): metadata, settings, results, tags in chunks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401 - registers the bitshuffle filter the raw tags are stored with
import numpy as np

from qlab.errors import FileFormatError
from qlab.types import TagChunk


class RunReader:
    """Open a run file for reading; safe while the writer is still recording (SWMR)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # SWMR read works for files being written, files left by a killed writer (whose superblock still
        # says "open for write") and finished files alike; plain mode covers non-SWMR HDF5 files.
        try:
            self.f = h5py.File(self.path, "r", swmr=True)
        except Exception:  # noqa: BLE001 - h5py raises OSError, RuntimeError, ... for bad files
            try:
                self.f = h5py.File(self.path, "r")
            except Exception as exc:  # noqa: BLE001
                raise FileFormatError(str(path), f"not a readable HDF5 file ({exc})") from None
        if self.f.attrs.get("format_name") not in ("Photon-HDF5", b"Photon-HDF5"):
            self.f.close()
            raise FileFormatError(str(path), "HDF5 file without format_name='Photon-HDF5'")
        self.groups = sorted(k for k in self.f if k.startswith("photon_data"))
        if not self.groups:
            raise FileFormatError(str(path), "no /photon_data group")

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_qlab(self) -> bool:
        return "user/qlab" in self.f

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

    def timestamps_unit(self, group: int = 0) -> float:
        g = self.f[self.groups[group]]
        try:
            return float(g["timestamps_specs/timestamps_unit"][()])
        except KeyError:
            raise FileFormatError(str(self.path), f"{g.name} lacks timestamps_specs/timestamps_unit") from None

    def n_tags(self, group: int = 0) -> int:
        return int(self.f[self.groups[group]]["timestamps"].shape[0])

    def iter_chunks(self, group: int = 0, chunk_tags: int = 1 << 22) -> Iterator[TagChunk]:
        """Tags in ps, chunk by chunk, without reading the whole file into memory."""
        g = self.f[self.groups[group]]
        ts, det = g["timestamps"], g.get("detectors")
        scale = self.timestamps_unit(group) / 1e-12
        gaps = self.gaps(group)
        n = ts.shape[0]
        for start in range(0, n, chunk_tags):
            t = ts[start:start + chunk_tags].astype(np.int64)
            if scale != 1.0:
                t = np.round(t * scale).astype(np.int64)
            c = det[start:start + chunk_tags].astype(np.int16) if det is not None else np.zeros(t.size, np.int16)
            t0, t1 = int(t[0]) if t.size else 0, int(t[-1]) + 1 if t.size else 0
            g_in = gaps[(gaps[:, 0] < t1) & (gaps[:, 1] > t0)] if len(gaps) else gaps
            yield TagChunk(t, c, t0, t1, g_in)

    def read_all(self, group: int = 0) -> TagChunk:
        return TagChunk.concatenate(list(self.iter_chunks(group)))

    def gaps(self, group: int = 0) -> np.ndarray:
        if self.is_qlab and f"gaps_{group}" in self.f["user/qlab"]:
            return self.f["user/qlab"][f"gaps_{group}"][()]
        return np.zeros((0, 2), np.int64)

    def duration_s(self, group: int = 0) -> float:
        if self.is_qlab:
            return float(self.f["user/qlab/duration_s"][group])
        ts = self.f[self.groups[group]]["timestamps"]
        if ts.shape[0] < 2:
            return 0.0
        return float(ts[-1] - ts[0]) * self.timestamps_unit(group)

    def metadata(self) -> dict[str, Any]:
        if not self.is_qlab:
            return {}
        m = dict(self.f["user/qlab/metadata"].attrs)
        out = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in m.items()}
        out["parameters"] = json.loads(out.get("parameters", "{}"))
        out["taggers"] = json.loads(out.get("taggers", "[]"))
        return out

    def _json_log(self, name: str) -> list[dict[str, Any]]:
        if not self.is_qlab or name not in self.f["user/qlab"]:
            return []
        return [json.loads(x) for x in self.f["user/qlab"][name].asstr()[()]]

    def settings_log(self) -> list[dict[str, Any]]:
        return self._json_log("settings_log")

    def results(self) -> list[dict[str, Any]]:
        return self._json_log("results_log")

    @property
    def secret(self) -> bool:
        """True for a file of raw detection data of a key run (written on request, owner-only)."""
        return bool(self.is_qlab and self.f["user/qlab/metadata"].attrs.get("secret", False))

    def withheld_tags(self, group: int = 0) -> int:
        """Tags of this tagger that a key run counted but did not record (they were secret)."""
        if self.is_qlab and "withheld_tags" in self.f["user/qlab"]:
            return int(self.f["user/qlab/withheld_tags"][group])
        return 0

    @property
    def complete(self) -> bool:
        return bool(self.is_qlab and self.f["user/qlab/status"][0] == 1)

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
