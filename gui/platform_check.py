"""Can Qt open a window here? Checked before the QApplication exists, so `qlab gui` can say which system packages
are missing instead of Qt's misleading "xcb-cursor0 is needed" abort.

No Qt import: the check loads the X11 platform plugin's libraries with ``ctypes`` (what Qt's dlopen needs) and
lists the sonames that fail, mapped to their Debian/Ubuntu packages.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass, field

# soname -> Debian/Ubuntu package: the libraries Qt 6's xcb platform plugin (libqxcb.so and libQt6XcbQpa)
# loads. On a Debian 12 container with PySide6 6.11 the two that were missing were libxcb-icccm4 and
# libxcb-keysyms1; the others are usually present with any X11 desktop but are missing from minimal images.
XCB_LIBRARIES: dict[str, str] = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libEGL.so.1": "libegl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libdbus-1.so.3": "libdbus-1-3",
}
HEADLESS = {"offscreen", "minimal", "vnc", "linuxfb", "eglfs"}
HEADLESS_HINT = ("Without a display: `qlab gui --offscreen` (QT_QPA_PLATFORM=offscreen; nothing is shown), or a "
                 "virtual display: `xvfb-run -a qlab gui` (apt-get install xvfb).")


@dataclass
class PlatformReport:
    """``ok`` False means Qt would abort; ``message`` says why and what to install."""

    platform: str
    ok: bool
    missing_libraries: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    message: str = ""


def _loads(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
        return True
    except OSError:
        return False


def check_qt_platform(env: dict[str, str] | None = None) -> PlatformReport:
    """Check the platform Qt will use (``QT_QPA_PLATFORM``, else xcb on X11, wayland, ...) can load."""
    env = dict(os.environ if env is None else env)
    requested = env.get("QT_QPA_PLATFORM", "").split(":")[0].strip().lower()
    if requested in HEADLESS:
        return PlatformReport(requested, True)
    if requested.startswith("wayland") or (not requested and env.get("WAYLAND_DISPLAY") and not env.get("DISPLAY")):
        return PlatformReport(requested or "wayland", True)  # Qt reports its own wayland errors clearly
    if os.name != "posix" or env.get("QT_QPA_PLATFORM_PLUGIN_PATH"):
        return PlatformReport(requested or "native", True)
    if not env.get("DISPLAY"):
        return PlatformReport("xcb", False, message=f"no display: DISPLAY is not set. {HEADLESS_HINT}")
    missing = [so for so in XCB_LIBRARIES if not _loads(so)]
    if not missing:
        return PlatformReport("xcb", True)
    packages = [XCB_LIBRARIES[so] for so in missing]
    message = (f"Qt's X11 (xcb) platform plugin cannot load: missing {', '.join(missing)}.\n"
               f"On Debian/Ubuntu: sudo apt-get install -y {' '.join(packages)}\n{HEADLESS_HINT}")
    return PlatformReport("xcb", False, missing, packages, message)


def qt_platform_ready(program: str, offscreen: bool = False) -> bool:
    """Before any Qt window: select the offscreen platform if asked, then check the platform can load; when it
    cannot, print what to install (prefixed with ``program``) to stderr and return False."""
    if offscreen:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    report = check_qt_platform()
    if not report.ok:
        print(f"{program}: {report.message}", file=sys.stderr)
    return report.ok
