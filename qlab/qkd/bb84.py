"""Decoy-state BB84 post-processing as two parties over the authenticated channel.

Bob holds his clicks per pulse slot (pulse index, basis, bit). Alice holds only the key of her transmitter's
random choices and recomputes basis, bit and intensity for the pulses Bob reports. Sifting: Bob sends pulse
indices and bases; Alice answers her bases and, after Bob has committed his, the intensities. From there
the pipeline is BBM92's (test bits, Cascade, verification, Toeplitz privacy amplification); the key length
is the decoy finite-key bound of Lim et al. 2014 on the per-intensity counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from qlab.qkd.bbm92 import QkdParams, _AliceSide, _BobSide
from qlab.qkd.channel import AuthenticatedChannel
from qlab.qkd.decoy import DecoyCounts, decoy_key_length

Choices = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


class Bb84Alice(_AliceSide):
    def __init__(self, choices: Choices, intensities: tuple[float, float, float],
                 probabilities: tuple[float, float, float], channel: AuthenticatedChannel, params: QkdParams):
        super().__init__(channel, params)
        self.choices = choices
        self.intensities, self.probabilities = intensities, probabilities
        self.bounds: Any = None

    def _sift(self) -> tuple[np.ndarray, np.ndarray]:
        hdr, payload = self.ch.recv("clicks")
        n = int(hdr["n"])
        index = np.frombuffer(payload[: 8 * n], np.int64)
        basis_bob = np.frombuffer(payload[8 * n:], np.uint8)
        self.basis, self.bit, self.cls = self.choices(index)
        self.ch.send("sift", {"n": n}, self.basis.tobytes() + self.cls.tobytes())
        same = np.flatnonzero(self.basis == basis_bob)
        self.test_positions = same[self.basis[same] == 1]
        return same[self.basis[same] == 0], self.test_positions

    def _secret_length(self, n: int, leak_bits: int) -> int:
        z_cls = self.cls[self.key_positions]
        x_cls = self.cls[self.test_positions]
        counts = DecoyCounts(self.intensities, self.probabilities,
                             tuple(int(np.count_nonzero(z_cls == k)) for k in range(3)),
                             tuple(int(np.count_nonzero(x_cls == k)) for k in range(3)),
                             tuple(int(np.count_nonzero(self.x_errors & (x_cls == k))) for k in range(3)))
        ell, self.bounds = decoy_key_length(counts, leak_bits, self.p.eps_sec, self.p.eps_cor)
        self.counts = counts
        return min(ell, n)


class Bb84Bob(_BobSide):
    def __init__(self, index: np.ndarray, basis: np.ndarray, bit: np.ndarray, channel: AuthenticatedChannel,
                 params: QkdParams):
        super().__init__(channel, params)
        self.index = np.asarray(index, np.int64)
        self.basis, self.bit = np.asarray(basis, np.uint8), np.asarray(bit, np.uint8)

    def _sift(self) -> tuple[np.ndarray, np.ndarray]:
        self.ch.send("clicks", {"n": int(self.index.size)}, self.index.tobytes() + self.basis.tobytes())
        hdr, payload = self.ch.recv("sift")
        n = int(hdr["n"])
        basis_alice = np.frombuffer(payload[:n], np.uint8)
        same = np.flatnonzero(self.basis == basis_alice)
        return same[self.basis[same] == 0], same[self.basis[same] == 1]
