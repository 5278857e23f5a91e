"""A network node (``qlab node NAME ... --kme``) whose KME can be made to stop between reservation and delivery
(for the kill -9 test on the network): once TRIGGER exists, the next reservation the peer KME acknowledged
writes its key_IDs to MARKER and the request thread sleeps until the process is killed.

Usage: python tests/kme_node_crash_process.py TRIGGER MARKER NODE_ARGS...
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from qlab.kme.manager import KeyManager
from qlab.network.cli import main as network_main


def main() -> int:
    trigger, marker, node_args = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    original_init = KeyManager.__init__

    def stall(key_ids: list[str]) -> None:
        if trigger.exists():
            marker.write_text(json.dumps(key_ids))
            time.sleep(120)  # the test kills this process with SIGKILL long before

    def init(self: KeyManager, *args: object, **kwargs: object) -> None:
        original_init(self, *args, **kwargs)
        self.before_delivery = stall

    KeyManager.__init__ = init  # type: ignore[method-assign]
    return network_main(node_args)


if __name__ == "__main__":
    sys.exit(main())
