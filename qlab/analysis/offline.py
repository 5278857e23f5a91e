"""`qlab analyze`: the coincidence core on a stored stream (run file, Photon-HDF5 or PTU T2)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from qlab.errors import FileFormatError, NotBuiltError, QlabError
from qlab.stream.coincidence import CoincidenceCounter, CoincidenceResult, NFoldCounter
from qlab.stream.delays import find_delays
from qlab.types import TagChunk

BBM92_ROLES = {f"{p}.{k}" for p in ("alice", "bob") for k in "HVDA"}


def parse_roles(text: str) -> dict[str, int]:
    roles: dict[str, int] = {}
    for item in text.split(","):
        role, sep, ch = item.strip().partition("=")
        if not sep:
            raise QlabError(f"--roles: expected ROLE=CHANNEL, got {item!r}")
        try:
            channel = int(ch)
        except ValueError:
            raise QlabError(f"--roles: channel of {role} must be an integer, got {ch!r}") from None
        twin = next((r for r, c in roles.items() if c == channel), None)
        if twin is not None or role.strip() in roles:
            raise QlabError(f"--roles: {twin or role.strip()} and {role.strip()} both map to channel {channel}"
                            if twin else f"--roles: role {role.strip()} given twice")
        roles[role.strip()] = channel
    return roles


SECRET_NOTE = ("this file holds SECRET raw detection data of a QKD key run (written with keep_raw): anyone "
               "holding it can rebuild the key; keep it owner-only and delete it when done")


def _magic(p: Path) -> bytes:
    """The first 8 bytes of ``p``. Raises FileFormatError if it is not a readable regular file."""
    if not p.is_file():
        raise FileFormatError(str(p), "no such file" if not p.exists() else "not a regular file")
    try:
        with open(p, "rb") as f:
            return f.read(8)
    except OSError as exc:
        raise FileFormatError(str(p), f"cannot read file: {exc.strerror}") from None


def check_stream_file(path: str | Path, allow_truncated: bool = False) -> None:
    """Make sure ``path`` can be read before analysing it: a run / Photon-HDF5 file is read once in a child
    process with a time limit (the HDF5 library can hang or crash on damaged files), a PTU file's header is
    parsed with bounded reads and a truncated PTU is refused unless ``allow_truncated``. Raises
    FileFormatError naming the file."""
    p = Path(path)
    magic = _magic(p)
    if magic.startswith(b"PQTTTR"):
        from qlab.storage.ptu import check_ptu_complete

        check_ptu_complete(p, allow_truncated)
    elif magic.startswith(b"\x89HDF"):
        from qlab.storage.probe import check_run_file

        check_run_file(p)
    else:
        raise FileFormatError(str(p), f"unknown format (first bytes {magic!r}); expected HDF5 or PTU")


def raw_data_status(path: str | Path) -> dict[str, Any]:
    """What a file says about key material: ``secret`` (raw data of a key run, written on request) and
    ``withheld_tags`` (tags a key run counted but did not record). Empty for files that are not qlab's."""
    p = Path(path)
    if not _magic(p).startswith(b"\x89HDF"):
        return {}
    from qlab.storage.reader import RunReader

    with RunReader(p) as r:
        return {"secret": r.secret, "withheld_tags": sum(r.withheld_tags(i) for i in range(len(r.groups))),
                "tags": sum(r.n_tags(i) for i in range(len(r.groups)))}


def open_stream(path: str | Path, allow_truncated: bool = False) -> tuple[Iterator[TagChunk], Any]:
    """Chunks of the first tagger's stream, and a closer. Picks the reader from the file's content.
    Raises FileFormatError for unknown, damaged or (unless ``allow_truncated``) truncated PTU files."""
    p = Path(path)
    magic = _magic(p)
    if magic.startswith(b"PQTTTR"):
        from qlab.storage.ptu import check_ptu_complete, iter_ptu_t2

        check_ptu_complete(p, allow_truncated)  # eagerly: the generator would only check on first use
        return iter_ptu_t2(p, allow_truncated=allow_truncated), None
    if magic.startswith(b"\x89HDF"):
        from qlab.storage.reader import RunReader

        r = RunReader(p)
        if len(r.groups) > 1:
            r.close()
            raise NotBuiltError("two-tagger files need clock synchronisation in qlab analyze (issue #5)")
        return r.iter_chunks(0), r
    raise FileFormatError(str(p), f"unknown format (first bytes {magic!r}); expected HDF5 or PTU")


def analyze_file(path: str | Path, roles: str | None = None, window_ps: int | None = None,
                 find: bool = False, config_path: str | None = None, protocol: str | None = None,
                 accidentals_offset_ps: int | None = None, delay_search_tags: int = 4_000_000,
                 step: str | None = None, segment: int | None = None, allow_truncated: bool = False,
                 check_file: bool = True, workers: int | None = None, client: Any = None,
                 segment_tags: int | None = None, parallel: bool = True) -> dict[str, Any]:
    """Singles, coincidences, accidentals (and QBER for BBM92 roles, optionally a BBM92 key estimate) of a
    stored stream.

    ``step``/``segment`` restrict a qlab run file to one demo step's tags or the N-th acquisition
    (qlab.analysis.selection). ``check_file`` reads a run file once in a time-limited child process first
    (qlab.storage.probe); a truncated PTU file is analysed only with ``allow_truncated`` (then as far as it
    goes, and the result says so). Raises FileFormatError for damaged files, ConfigError, QlabError when
    the role mapping names channels the file has no events on (explicit ``roles``) or maps none of the
    channels that have events (photons on unmapped channels are reported in ``warnings``), AnalysisError
    when ``find`` meets a mapped channel without events.

    The stream is counted in time segments (qlab.analysis.parallel_file) on ``workers`` local processes
    (default: every core), or on the workers of a ``dask.distributed.Client`` (``client``; they read the
    file at the same path), with results identical to the serial streaming pass (``parallel=False``) for any
    ``segment_tags``. ``--find-delays`` runs on the first ``delay_search_tags`` tags as one task. Key
    distillation (``protocol``) and ``step``/``segment`` selections use the serial pass.
    """
    from qlab.analysis.selection import select_tags
    from qlab.config import load_config

    if protocol not in (None, "bbm92"):
        raise NotBuiltError(f"qlab analyze --protocol {protocol} is not built yet; bbm92 is")
    if check_file:
        check_stream_file(path, allow_truncated)
    status = raw_data_status(path)
    # A key run records no tags at all; a demo file records every step but the key step's, which the
    # distillation then simply does not see (select a step with ``step``).
    if protocol and not status.get("secret") and status.get("withheld_tags") and not status.get("tags"):
        raise QlabError(f"{path}: this run file holds no raw detection data: a QKD key run records only "
                        f"statistics ({status['withheld_tags']} tags were withheld because they were secret). "
                        "Run qkd with keep_raw=true to keep them in a separate owner-only file.")
    cfg = load_config(config_path)
    if roles:
        role_map = parse_roles(roles)
    else:
        role_map = {i.channel.role: i.channel.input for i in cfg.config.instruments.values() if i.channel}
    if window_ps is not None and window_ps <= 0:
        raise QlabError(f"window_ps must be > 0 ps, got {window_ps}")
    window = window_ps if window_ps is not None else cfg.config.analysis.window_ps
    acc_off = accidentals_offset_ps if accidentals_offset_ps is not None else cfg.config.analysis.accidentals_offset_ps
    channels = sorted(set(role_map.values()))
    groups = [g for g in cfg.config.analysis.nfold_groups if all(r in role_map for r in g)]
    if parallel and protocol is None and step is None and segment is None:
        counts, res, nfold_counts, delays = _count_in_segments(
            path, role_map, channels, window, acc_off, groups, find, delay_search_tags, allow_truncated, workers,
            client, segment_tags)
        return _report(path, role_map, roles, window, channels, delays, counts, res, groups, nfold_counts,
                       protocol, [], "", status)
    stream, closer = open_stream(path, allow_truncated)
    counts = np.zeros(512, np.int64)  # events per channel (index = channel + 256), mapped or not
    selection = ""
    try:
        if step is not None or segment is not None:
            stream, selection = select_tags(path, stream, step=step, segment=segment)
        delays: dict[int, float] = {ch: 0.0 for ch in channels}
        first: list[TagChunk] = []
        if find:
            first = _head(stream, delay_search_tags)
            sample = TagChunk.concatenate(first) if first else None
            _require_events(sample, role_map, path)
            ref = role_map.get("alice.H", channels[0])
            delays, _ = find_delays(TagChunk.concatenate(first), channels, ref)
        int_delays = {c: int(round(d)) for c, d in delays.items()}
        counter = CoincidenceCounter(channels, window, int_delays, acc_off)
        nfold = NFoldCounter([[role_map[r] for r in g] for g in groups], window, int_delays) if groups else None
        kept: list[TagChunk] = []  # key distillation needs the whole block (bounded by the file's size)
        for chunk in itertools.chain(first, stream):
            counts += np.bincount(chunk.channels.astype(np.int64) + 256, minlength=512)[:512]
            counter.process(chunk)
            if nfold is not None:
                nfold.process(chunk)
            kept += [chunk] if protocol else []
        if nfold is not None:
            nfold.process(TagChunk(np.zeros(0, np.int64), np.zeros(0, np.int16), 0, 0), final=True)
    finally:
        if closer is not None:
            closer.close()
    return _report(path, role_map, roles, window, channels, delays, counts, counter.total, groups,
                   nfold.counts if nfold is not None else None, protocol, kept, selection, status)


def analyze_files(paths: list[str | Path], scheduler: str | None = None, client: Any = None,
                  **kw: Any) -> dict[str, Any]:
    """A campaign: ``analyze_file`` on every path (segments of all on the same local processes, or on the Dask
    cluster at ``scheduler`` (tcp://HOST:8786) / ``client``), with totals over the files: singles,
    coincidences, accidentals, n-fold counts, duration, exposure and the BBM92 sifted counts and QBER from the
    summed coincidences. Raises QlabError when Dask is needed but not installed or unreachable."""
    own = None
    if scheduler is not None and client is None:
        own = client = connect_dask(scheduler)
    try:
        files = [analyze_file(p, client=client, **kw) for p in paths]
    finally:
        if own is not None:
            own.close()
    return {"files": files, "total": campaign_total(files)}


def connect_dask(scheduler: str, timeout_s: float = 10.0) -> Any:
    """A ``dask.distributed.Client`` of the scheduler at ``scheduler``. QlabError if the extra is missing or the
    scheduler does not answer within ``timeout_s``."""
    try:
        from distributed import Client
    except ImportError:
        raise QlabError("--scheduler needs Dask: pip install 'qlab[cluster]'") from None
    try:
        return Client(scheduler, timeout=timeout_s)
    except (OSError, TimeoutError, ValueError) as exc:
        raise QlabError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc})") from None


def campaign_total(files: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums of the per-file results (counts by role / pair / group, duration, exposure) with QBER recomputed."""
    total: dict[str, Any] = {"files": len(files), "duration_s": sum(f["duration_s"] for f in files),
                             "exposure_s": sum(f["exposure_s"] for f in files)}
    for key in ("singles", "coincidences", "accidentals", "nfold"):
        acc: dict[str, int] = {}
        for f in files:
            for k, v in f.get(key, {}).items():
                acc[k] = acc.get(k, 0) + int(v)
        total[key] = acc
    c = total["coincidences"]
    if all(f"alice.{x}|bob.{y}" in c for x in "HVDA" for y in "HVDA"):
        sz = sum(c[f"alice.{x}|bob.{y}"] for x in "HV" for y in "HV")
        sx = sum(c[f"alice.{x}|bob.{y}"] for x in "DA" for y in "DA")
        ez = c["alice.H|bob.V"] + c["alice.V|bob.H"]
        ex = c["alice.D|bob.A"] + c["alice.A|bob.D"]
        total["sifted"] = {"Z": sz, "X": sx}
        total["qber"] = {"Z": ez / sz if sz else None, "X": ex / sx if sx else None}
    return total


def _count_in_segments(path: str | Path, role_map: dict[str, int], channels: list[int], window: int, acc_off: int,
                       groups: list[Any], find: bool, delay_search_tags: int, allow_truncated: bool,
                       workers: int | None, client: Any, segment_tags: int | None
                       ) -> tuple[np.ndarray, CoincidenceResult, np.ndarray | None, dict[int, float]]:
    """(events per channel, counts, n-fold counts, delays) of a whole file counted in segments."""
    from qlab.analysis.parallel_file import (
        AnalysisSpec,
        count_file,
        dask_mapper,
        default_workers,
        file_kind,
        local_mapper,
    )

    if file_kind(path) == "h5":
        from qlab.storage.reader import RunReader

        with RunReader(path) as r:
            if len(r.groups) > 1:
                raise NotBuiltError("two-tagger files need clock synchronisation in qlab analyze (issue #5)")
    mapper = dask_mapper(client) if client is not None else local_mapper(workers or default_workers())
    delays: dict[int, float] = {ch: 0.0 for ch in channels}
    if find:
        ref = role_map.get("alice.H", channels[0])
        sample_counts, sample_n, found = mapper(_delay_task, [(str(path), channels, ref, delay_search_tags,
                                                               allow_truncated)])[0]
        _require_event_counts(sample_counts, sample_n, role_map, path)
        delays = found
    int_delays = {c: int(round(d)) for c, d in delays.items()}
    spec = AnalysisSpec(tuple(channels), int(window), tuple(sorted(int_delays.items())), int(acc_off),
                        tuple(tuple(role_map[r] for r in g) for g in groups))
    fc = count_file(path, spec, mapper, segment_tags, allow_truncated)
    res = CoincidenceCounter(channels, window, int_delays, acc_off)._empty()
    res.singles, res.coincidences, res.accidentals = fc.counts.singles, fc.counts.coincidences, fc.counts.accidentals
    res.duration_s, res.exposure_s = fc.duration_s, fc.exposure_s
    return fc.counts.channel_events, res, (fc.counts.nfold if groups else None), delays


def _head(stream: Iterable[TagChunk], n_tags: int) -> list[TagChunk]:
    """The chunks of ``stream`` up to and including the one that brings the count to ``n_tags`` tags."""
    first: list[TagChunk] = []
    n = 0
    for chunk in stream:
        first.append(chunk)
        n += len(chunk)
        if n >= n_tags:
            break
    return first


def _delay_task(item: tuple[str, list[int], int, int, bool]) -> tuple[np.ndarray, int, dict[int, float]]:
    """--find-delays on the first ``n`` tags of a file, read as the serial pass reads them (runs on a worker).
    Returns (events per channel of the sample, its size, delays); delays are empty when a channel has none."""
    path, channels, ref, n_tags, allow_truncated = item
    stream, closer = open_stream(path, allow_truncated)
    try:
        first = _head(stream, n_tags)
    finally:
        if closer is not None:
            closer.close()
    sample = TagChunk.concatenate(first)
    counts = np.bincount(sample.channels.astype(np.int64) + 256, minlength=512)[:512]
    if any(counts[c + 256] == 0 for c in channels):
        return counts, len(sample), {}
    delays, _ = find_delays(sample, channels, ref)
    return counts, len(sample), delays


def _report(path: str | Path, role_map: dict[str, int], roles: str | None, window: int, channels: list[int],
            delays: dict[int, float], counts: np.ndarray, res: Any, groups: list[Any], nfold_counts: Any,
            protocol: str | None, kept: list[TagChunk], selection: str, status: dict[str, Any]) -> dict[str, Any]:
    """The analysis result of one file from its totals (shared by the serial and the segmented pass)."""
    warnings = _check_mapping(counts, role_map, explicit=bool(roles), path=path)
    by_ch = {ch: role for role, ch in role_map.items()}
    out: dict[str, Any] = {
        "file": str(path), "window_ps": window,
        "delays_ps": {str(ch): round(delays[ch], 1) for ch in channels},
        "singles": {role: res.single(ch) for role, ch in role_map.items()},
        "nfold": {"+".join(g): int(n) for g, n in zip(groups, nfold_counts, strict=True)} if groups else {},
        "coincidences": {}, "accidentals": {}, "duration_s": res.duration_s, "exposure_s": res.exposure_s,
        "roles": dict(role_map), "channel_events": _present(counts), "warnings": warnings}
    if selection:
        out["selection"] = selection
    alice = sorted(r for r in role_map if r.startswith("alice."))
    bob = sorted(r for r in role_map if r.startswith("bob."))
    pairs = [(a, b) for a in alice for b in bob] if alice and bob else [
        (by_ch[a], by_ch[b]) for i, a in enumerate(channels) for b in channels[i + 1:]]
    for a, b in pairs:
        out["coincidences"][f"{a}|{b}"] = res.pair(role_map[a], role_map[b])
        out["accidentals"][f"{a}|{b}"] = res.accidental_pair(role_map[a], role_map[b])
    if set(role_map) >= BBM92_ROLES:
        c = out["coincidences"]
        sz = sum(c[f"alice.{x}|bob.{y}"] for x in "HV" for y in "HV")
        ez = c["alice.H|bob.V"] + c["alice.V|bob.H"]
        sx = sum(c[f"alice.{x}|bob.{y}"] for x in "DA" for y in "DA")
        ex = c["alice.D|bob.A"] + c["alice.A|bob.D"]
        out["sifted"] = {"Z": sz, "X": sx}
        out["qber"] = {"Z": ez / sz if sz else None, "X": ex / sx if sx else None}
    if protocol == "bbm92":
        out.update(_distill_file(kept, role_map, delays, window, res.exposure_s))
    truncated = _ptu_truncation(path)
    if truncated:
        out["truncated"] = truncated
    if status.get("secret"):
        out["secret"] = True
        out["warning"] = SECRET_NOTE
    return out


def _present(counts: np.ndarray) -> dict[str, int]:
    """Channels with events, in numeric order: {"channel": events}."""
    return {str(i - 256): int(counts[i]) for i in np.flatnonzero(counts)}


def _mapping_text(role_map: dict[str, int]) -> str:
    return ", ".join(f"{r}={c}" for r, c in sorted(role_map.items(), key=lambda x: x[1]))


def _present_text(counts: np.ndarray) -> str:
    present = _present(counts)
    return ", ".join(f"{ch} ({n:,} events)" for ch, n in present.items()) if present else "none (no events)"


def _require_events(sample: TagChunk | None, role_map: dict[str, int], path: str | Path) -> None:
    """--find-delays needs events on every mapped channel; AnalysisError naming the empty ones otherwise."""
    counts = np.zeros(512, np.int64)
    if sample is not None and len(sample):
        counts += np.bincount(sample.channels.astype(np.int64) + 256, minlength=512)[:512]
    _require_event_counts(counts, 0 if sample is None else len(sample), role_map, path)


def _require_event_counts(counts: np.ndarray, n: int, role_map: dict[str, int], path: str | Path) -> None:
    """``_require_events`` on the sample's events per channel (index channel + 256) and its size ``n``."""
    from qlab.errors import AnalysisError

    empty = [f"{c} ({r})" for r, c in sorted(role_map.items(), key=lambda x: x[1]) if counts[c + 256] == 0]
    if empty:
        raise AnalysisError(f"{path}: --find-delays: no events on channel(s) {', '.join(empty)} in the first "
                            f"{n:,} tags, so there is no delay to find; channels with events: "
                            f"{_present_text(counts)}; mapping used: {_mapping_text(role_map)}")


def _check_mapping(counts: np.ndarray, role_map: dict[str, int], explicit: bool, path: str | Path) -> list[str]:
    """Refuse a mapping that misses the data; warnings for photons on channels no role is mapped to."""
    mapped = set(role_map.values())
    unmapped = {i - 256: int(counts[i]) for i in np.flatnonzero(counts) if i - 256 not in mapped}
    empty = [f"{c} ({r})" for r, c in sorted(role_map.items(), key=lambda x: x[1]) if counts[c + 256] == 0]
    source = "--roles" if explicit else "the config's wiring"
    if counts.sum() and all(counts[c + 256] == 0 for c in mapped):
        raise QlabError(f"{path}: none of the {int(counts.sum()):,} events is on a mapped channel; channels "
                        f"present: {_present_text(counts)}; mapping used ({source}): {_mapping_text(role_map)}. "
                        "Give --roles ROLE=CHANNEL,... for this file")
    if explicit and empty:
        raise QlabError(f"{path}: --roles names channel(s) the file has no events on: {', '.join(empty)}; "
                        f"channels present: {_present_text(counts)}")
    warnings = []
    if unmapped:
        warnings.append(f"{sum(unmapped.values()):,} events on channel(s) "
                        f"{', '.join(str(c) for c in sorted(unmapped))} not mapped to any role were ignored; "
                        f"mapping used ({source}): {_mapping_text(role_map)}")
    if empty and not explicit:
        warnings.append(f"no events on mapped channel(s) {', '.join(empty)}")
    return warnings


def _ptu_truncation(path: str | Path) -> dict[str, int] | None:
    """For a truncated PTU file: how many records its header declares and how many were analysed."""
    p = Path(path)
    if not _magic(p).startswith(b"PQTTTR"):
        return None
    from qlab.storage.ptu import read_ptu_header

    h = read_ptu_header(p)
    return {"records_declared": h.records_declared, "records_read": h.records_in_file} if h.truncated else None


def _distill_file(chunks: list[TagChunk], roles: dict[str, int], delays: dict[int, float], window_ps: int,
                  exposure_s: float) -> dict[str, Any]:
    import numpy as np

    from qlab.qkd.bbm92 import QkdParams
    from qlab.qkd.pipeline import distill

    whole = TagChunk.concatenate(chunks)
    shift = np.zeros(512, np.int64)
    for ch, d in delays.items():
        shift[ch + 256] = int(round(d))
    t = whole.timestamps - shift[whole.channels.astype(np.int64) + 256]  # into one corrected time frame
    order = np.argsort(t, kind="stable")
    aligned = TagChunk(t[order], whole.channels[order], whole.t_start_ps, whole.t_stop_ps, whole.gaps)
    stats, _, _ = distill(aligned, roles, QkdParams(window_ps=window_ps), exposure_s)
    # Offline analysis reports what a key would be; no key is stored.
    return {"qber": stats["qber"], "sifted": stats["sifted"], "secret_bits": stats["secret_bits"],
            "aborted": stats["aborted"], "abort_reason": stats["abort_reason"], "ec_efficiency": stats["ec_efficiency"]}
