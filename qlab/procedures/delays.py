"""`delays`: find per-channel delays by cross-correlation and apply them to the tagger.

The measured delays are stored as a new versioned calibration record (never by editing the config);
the lab applies the latest record whenever it opens.

Keeps: the tagger input delays it applies (its purpose; with ``apply`` false it puts the old ones back).
Restores: the laser state it found, also on an error or abort.
"""

from __future__ import annotations

from typing import Any

from qlab.procedures.engine import Param, Procedure, RunContext
from qlab.procedures.measure import integrate, light_on, role_channels, single_tagger
from qlab.procedures.restore import restoring
from qlab.stream.delays import find_delays


class DelaysProcedure(Procedure):
    name = "delays"
    title = "Find and apply per-channel delays"
    params = {
        "integration_s": Param(1.0, "s", "integration time", 0.01, 3600),
        "range_ps": Param(200_000, "ps", "search range ± around zero", 1000, 10_000_000),
        "apply": Param(True, "", "write the delays to the tagger and a calibration record"),
    }

    def execute(self, ctx: RunContext) -> dict[str, Any]:
        with restoring(ctx.lab, stages=()):
            return self._calibrate(ctx)

    def _calibrate(self, ctx: RunContext) -> dict[str, Any]:
        lab = ctx.lab
        tagger = single_tagger(lab)
        roles = role_channels(lab)
        channels = [roles[r] for r in sorted(roles)]
        ref = roles.get("alice.H", channels[0])
        light_on(lab)
        old = {ch: lab[tagger].delay(ch) for ch in channels}
        # Measure with the tagger's delays zeroed, so the result is the absolute cable skew.
        for ch in channels:
            lab[tagger].set_delay(ch, 0)
        ctx.progress(0.1, "integrating")
        m = integrate(ctx, self.integration_s, keep_chunk=True)  # the delay scan needs the tags
        ctx.progress(0.7, "cross-correlating")
        try:
            found, sigma = find_delays(m.chunk, channels, ref, range_ps=self.range_ps)
        except Exception:
            for ch, d in old.items():
                lab[tagger].set_delay(ch, d)
            raise
        delays = {ch: int(round(v)) for ch, v in found.items()}
        # Compensate with non-negative input delays: the latest channel gets 0.
        latest = max(delays.values())
        applied = {ch: latest - d for ch, d in delays.items()}
        if self.apply:
            for ch, d in applied.items():
                lab[tagger].set_delay(ch, d)
            lab.calibrations.add("delays", {tagger: {str(k): v for k, v in applied.items()}},
                                 source=str(ctx.runfile.path) if ctx.runfile else "")
        else:
            for ch, d in old.items():
                lab[tagger].set_delay(ch, d)
        delays = dict(sorted(delays.items()))  # channels in numeric order in results and summaries
        return {"reference_channel": ref, "delays_ps": {str(k): v for k, v in delays.items()},
                "peak_sigma": {str(k): (None if v == float("inf") else round(v, 1)) for k, v in sorted(sigma.items())},
                "applied_input_delays_ps": {str(k): v for k, v in sorted(applied.items())}, "applied": self.apply}

    def summary(self, r: dict[str, Any]) -> str:
        pairs = ", ".join(f"{k}:{v}" for k, v in sorted(r["delays_ps"].items(), key=lambda kv: int(kv[0])))
        return f"delays (ps, vs ch {r['reference_channel']}): {pairs}"
