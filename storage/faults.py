"""Named fault points: places in the pipeline where a test can kill the process on purpose.

``fault_point("publish.after_commit")`` does nothing unless the environment variable
``GRANARY_FAULT`` names that point; then, the N-th time the point is reached in this process,
it acts:

- ``GRANARY_FAULT=publish.after_commit`` kills the process with SIGKILL the first time (no
  cleanup, no ``finally``, no flush: what a power cut or the kernel's OOM killer does);
- ``GRANARY_FAULT=preprocess.shard_written@3``: the third time;
- ``GRANARY_FAULT=store.before_promote@2:raise``: raise :class:`FaultInjected` instead
  (an exception the code under test did not expect, through its error handling).

The reliability suite (tests/reliability/test_fault_points*.py) runs a stage with each point
set, checks that the process died by SIGKILL (a point that is never reached fails the test),
resumes the run as a user would and compares what was published with an uninterrupted run
(tests/outcome.py). docs/faults.md lists the points.

It lives in ``storage`` because that is the lowest layer: the object store, the registry, the
catalog and every stage can import it. Unset, a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "GRANARY_FAULT"
_reached: dict[str, int] = {}


class FaultInjected(RuntimeError):
    """Raised at a fault point set with the ``raise`` action."""


def parse(value: str) -> tuple[str, int, str]:
    """``name[@N][:action]`` -> (name, N, action); N defaults to 1, action to ``kill``."""
    rest, _, action = value.partition(":")
    name, _, nth = rest.partition("@")
    action = action or "kill"
    if action not in ("kill", "raise") or not name or (nth and not nth.isdigit()):
        raise ValueError(f"{ENV}={value!r}: expected NAME[@N][:kill|raise], e.g. "
                         "publish.after_commit@1:kill")
    return name, int(nth or 1), action


def fault_point(name: str) -> None:
    """Act here if ``GRANARY_FAULT`` names this point (see the module's docstring)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    target, nth, action = parse(wanted)
    if target != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] != nth:
        return
    if action == "raise":
        raise FaultInjected(f"fault injected at {name} (time {nth}, {ENV}={wanted})")
    os.kill(os.getpid(), signal.SIGKILL)
