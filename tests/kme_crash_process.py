"""A KME that stops between reservation and delivery (for the kill -9 test): once the peer KME acknowledged a
reservation, it writes the key_IDs to MARKER and sleeps until killed.

Usage: python tests/kme_crash_process.py KME_YAML MARKER READY_FILE
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from qlab.kme.config import load_kme_config
from qlab.kme.service import KmeService


def main() -> None:
    cfg_path, marker, ready = sys.argv[1:4]
    svc = KmeService(load_kme_config(cfg_path))

    def stall(key_ids: list[str]) -> None:
        Path(marker).write_text(json.dumps(key_ids))
        time.sleep(120)  # the test kills this process with SIGKILL long before

    svc.manager.before_delivery = stall
    svc.start()
    Path(ready).write_text("ready")
    time.sleep(120)
    svc.stop()


if __name__ == "__main__":
    main()
