"""Whole HDF5 chunks of tag data, compressed here with Blosc2 and stored with ``write_direct_chunk``.

The run files' tag datasets carry the standard Blosc2 HDF5 filter (id 32026, registered by ``import
hdf5plugin``). Each Blosc2 chunk records its own filter pipeline, and the filter decodes whatever pipeline a
chunk names; so chunks compressed here with byte shuffle followed by *bytedelta* (a delta along each byte
stream, which turns absolute, increasing timestamps into small differences) are read back by any h5py +
hdf5plugin reader exactly like chunks the filter compressed itself. The filter's own options (shuffle +
Zstandard) cannot name bytedelta; they still compress the last, partial chunk of a dataset.

Measured with ``qlab bench --only storage`` (Poisson BBM92 streams, 1 ps timestamps, timestamps and detector
channels together): 3–9 % above the entropy bound at 0.4–20 Mcps, against 15–28 % for shuffle + Zstandard
alone. python-blosc2 is imported on first use: it costs ~0.1 s and starts numexpr's threads.
"""

from __future__ import annotations

import os
from typing import Any

import h5py
import numpy as np

# Blosc2 threads per process, for the HDF5 filter and python-blosc2 alike (read per call; the user's own setting
# wins). One: chunks of 64 Ki tags gain no write speed from a second thread, and file analysis, which runs one
# worker process per core, lost 10-20 % to it (qlab bench, storage and analysis).
os.environ.setdefault("BLOSC_NTHREADS", "1")

BLOSC2_FILTER_ID = 32026  # the HDF5 filter id of Blosc2


def _cparams(itemsize: int, delta: bool) -> Any:
    import blosc2

    filters = [blosc2.Filter.SHUFFLE, blosc2.Filter.BYTEDELTA] if delta else [blosc2.Filter.SHUFFLE]
    return blosc2.CParams(codec=blosc2.Codec.ZSTD, clevel=1, typesize=itemsize, filters=filters,
                          filters_meta=[0] * len(filters),
                          nthreads=max(1, int(os.environ.get("BLOSC_NTHREADS", "1"))))


def encode_chunk(values: np.ndarray, delta: bool) -> bytes:
    """One HDF5 chunk's values as the Blosc2 frame the HDF5 Blosc2 filter decodes. ``delta``: add bytedelta
    after the shuffle (for increasing values such as timestamps; random symbols such as channels lose by it)."""
    import blosc2

    values = np.ascontiguousarray(values)
    return blosc2.SChunk(chunksize=values.nbytes, data=values, cparams=_cparams(values.itemsize, delta)).to_cframe()


def write_whole_chunks(ds: h5py.Dataset, start: int, values: np.ndarray, delta: bool) -> int:
    """Write the whole chunks of ``values`` (1-D) to ``ds`` from element ``start`` (a chunk boundary) directly,
    bypassing the filter (``delta`` as for ``encode_chunk``). Returns how many leading values were written (a
    multiple of the chunk length); the caller writes the rest through the filter. The dataset must already be
    large enough.

    Raises ValueError if ``start`` is not on a chunk boundary.
    """
    (chunk_len,) = ds.chunks
    if start % chunk_len:
        raise ValueError(f"{ds.name}: direct chunk write at {start}, not a multiple of the chunk length {chunk_len}")
    whole = (values.size // chunk_len) * chunk_len
    values = np.asarray(values, dtype=ds.dtype)
    for k in range(0, whole, chunk_len):
        ds.id.write_direct_chunk((start + k,), encode_chunk(values[k:k + chunk_len], delta))
    return whole


def _blosc2_only(ds: h5py.Dataset) -> bool:
    plist = ds.id.get_create_plist()
    return (ds.chunks is not None and len(ds.chunks) == 1 and ds.dtype.isnative and plist.get_nfilters() == 1
            and plist.get_filter(0)[0] == BLOSC2_FILTER_ID)


def read_range(ds: h5py.Dataset, a: int, b: int, buffer: np.ndarray | None = None) -> np.ndarray:
    """Elements [a, b) of a 1-D dataset (indices clipped to the dataset). Blosc2-filtered chunks are read raw and
    decoded by python-blosc2 (which picks the CPU's SIMD shuffle and bytedelta at run time: ~1.4x the filter's
    speed on bytedelta chunks). Any other dataset is read through HDF5, and so is the whole range when one of
    its chunks does not decode as expected: HDF5 then raises its own error for damaged data.

    ``buffer``: a C-contiguous array of the dataset's dtype to decode into when it is long enough; the result is
    then a view of it (valid until the buffer is reused). Reusing one buffer per reader keeps its pages mapped:
    allocators that return freed memory at once (Dask workers set glibc's MALLOC_TRIM_THRESHOLD_) otherwise
    fault every new buffer in anew."""
    a, b = max(a, 0), min(b, ds.shape[0])
    if b <= a or not _blosc2_only(ds):
        return ds[a:b]
    import blosc2

    (chunk_len,) = ds.chunks
    if buffer is not None and buffer.dtype == ds.dtype and buffer.size >= b - a and buffer.flags.c_contiguous:
        out = buffer[:b - a]
    else:
        out = np.empty(b - a, ds.dtype)
    chunk_bytes = chunk_len * ds.dtype.itemsize
    scratch = None  # chunks that stick out of [a, b) are decoded here, the others straight into ``out``
    # The stored chunks, one after the other. Blosc2 adds well under 64 KiB to a chunk's size (read_direct_chunk
    # refuses a buffer too small, and HDF5's own read path then takes over). The stored size is not asked for:
    # H5Dget_chunk_info_by_coord walks the chunk index, 6 us at a file's start but 90 us at 10^8 tags.
    raw = np.empty(chunk_bytes + (1 << 16), np.uint8)
    try:
        for k0 in range((a // chunk_len) * chunk_len, b, chunk_len):
            mask, frame = ds.id.read_direct_chunk((k0,), out=raw)
            schunk = blosc2.schunk_from_cframe(frame, copy=False)
            if mask != 0 or schunk.nchunks != 1 or schunk.nbytes != chunk_bytes:
                raise ValueError("not a one-chunk Blosc2 frame of the dataset's chunk size")
            lo, hi = max(a, k0), min(b, k0 + chunk_len)
            if lo == k0 and hi == k0 + chunk_len:
                schunk.decompress_chunk(0, out[lo - a:hi - a])
            else:
                if scratch is None:
                    scratch = np.empty(chunk_len, ds.dtype)
                schunk.decompress_chunk(0, scratch)
                out[lo - a:hi - a] = scratch[lo - k0:hi - k0]
    except Exception:  # noqa: BLE001 - HDF5's own read path decides (and names damage in its error)
        return ds[a:b]
    return out
