"""Frameworks imported without phoning home (issue 16: a server never phones home, never forks).

``import openvino`` imports OpenVINO's model converter (``openvino.tools.ovc``), which sends
a usage event to Google Analytics through the ``openvino_telemetry`` package: a thread-pool
thread forks a ``multiprocessing`` child for the HTTPS request (a DNS query first) and waits
up to 3 s for it, and the import writes a client id and a usage counter under ``~/intel``.
In a threaded server, that fork copies a process whose other threads may hold locks, and a
child that outlives the wait is killed and left unreaped (a zombie).

``openvino_telemetry`` has no switch of its own besides its consent file
(``~/intel/openvino_telemetry``, which its ``opt_in_out --opt_out`` writes, sending an
opt-out event as it does) and ``CI=true`` in ``os.environ``, which declines for every tool
that passes ``disable_in_ci``, as OpenVINO's import does. wasinn sets ``CI=true`` only while
OpenVINO imports: pytest (and this project's conftest) read ``CI`` too, and a process-wide
setting would change them. The
telemetry singleton keeps the answer it got at import, so later uses of OpenVINO in the
process stay quiet; only the converter (``openvino.convert_model``, which wasinn never calls)
asks again. A consent file that says yes is overridden all the same (the fork is the
problem, not only the data); a program that wants OpenVINO's telemetry imports openvino
before wasinn does, and wasinn then leaves it as it is.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

CI_ENV = "CI"
_lock = threading.RLock()  # reentrant: an import inside the block may enter it again


@contextlib.contextmanager
def openvino_telemetry_off() -> Iterator[None]:
    """Import OpenVINO inside this block: its telemetry then declines, as it does in CI."""
    with _lock:
        if "openvino" in sys.modules:  # imported already (by wasinn, or by the host program)
            yield
            return
        previous = os.environ.get(CI_ENV)
        os.environ[CI_ENV] = "true"
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(CI_ENV, None)
            else:
                os.environ[CI_ENV] = previous
