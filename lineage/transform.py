"""Keep this machine's folders out of every OpenLineage event Airflow sends.

The Airflow provider writes absolute paths into the facets it builds: the DAG file's location
(``airflow`` and ``airflowDagRun`` run facets, ``dag.fileloc``) and, when a task fails, the
stack trace (``errorMessage``), whose frames name the checkout, the virtual environment and
the home directory. Events leave the machine (the lineage store, any OpenLineage consumer), and
those paths mean nothing elsewhere while telling how this one is laid out.

:class:`RelativePathTransformer` is an OpenLineage ``transform`` transport's transformer (the
client's own hook for rewriting events before they are sent): every string in an event has
the folders it knows replaced by a short relative form -- the checkout by nothing
(``dags/granary_lifecycle.py``), installed packages by ``site-packages``, the standard library
by ``python``, the home directory by ``~``, and any folder given in ``roots`` by its label.
Only a path that begins a word is one: ``s3://granary-work/home/airflow/x`` (an object key)
and ``https://host/opt/granary/x`` (a URL's path) stay as they are.
It also hides the credentials written in any URL (a failed ``git push`` to
``https://<token>@host/...`` puts the token in the stack trace): lineage/redact.py.
:func:`transport` wraps a transport configuration in it; the local stack, docker-compose and
the tests configure Airflow's transport that way.
"""

from __future__ import annotations

import re
import sysconfig
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attr
from openlineage.client.transport.transform import EventTransformer

from lineage.redact import hide_url_credentials

CHECKOUT = Path(__file__).resolve().parents[1]
TRANSFORMER = f"{__name__}.RelativePathTransformer"


def default_roots() -> dict[str, str]:
    """Folder -> the label that replaces it: installed packages, the standard library, the
    checkout, the home directory (the longest match wins, so a virtual environment inside the
    checkout reads ``site-packages/...``)."""
    roots = {str(Path.home()): "~", str(CHECKOUT): ""}
    for name in ("stdlib", "platstdlib"):
        roots[sysconfig.get_path(name)] = "python"
    for name in ("purelib", "platlib"):
        roots[sysconfig.get_path(name)] = "site-packages"
    return {k: v for k, v in roots.items() if k and k != "/"}


def relativiser(roots: Mapping[str, str]) -> Callable[[str], str]:
    """A function that rewrites every path under one of ``roots`` in a text: the root and its
    slash become the label and a slash (nothing, for an empty label)."""
    ordered = sorted({str(Path(r)) for r in roots}, key=len, reverse=True)
    labels = {str(Path(r)): label for r, label in roots.items()}
    # a root begins where a path can begin: not right after a character a name or a host
    # would end with (``s3://bucket/home/...`` and ``https://host/opt/...`` are object keys
    # and URL paths, not this machine's folders); it ends at a slash, at the end of the text
    # or before a character a path name would not continue with (quote, space, colon...),
    # never inside a longer folder name
    pattern = re.compile(r"(?<![\w.\-\]])(" + "|".join(re.escape(r) for r in ordered)
                         + r")(/|(?![\w.-]))")

    def rewrite(text: str) -> str:
        def label(m: re.Match[str]) -> str:
            name = labels[m.group(1)]
            if m.group(2) == "/":
                return f"{name}/" if name else ""
            return name or "."

        return pattern.sub(label, text)

    return rewrite


class RelativePathTransformer(EventTransformer):
    """Rewrites the paths under known folders, and hides URL credentials, in every string of
    an event (see the module).
    ``properties["roots"]``: more folders and their labels
    (``{"/srv/granary": "GRANARY_HOME"}``)."""

    def __init__(self, properties: dict[str, Any]) -> None:
        super().__init__(properties)
        roots = default_roots()
        roots.update({str(k): str(v) for k, v in (properties.get("roots") or {}).items()})
        relative = relativiser(roots)
        self._rewrite = lambda text: hide_url_credentials(relative(text))

    def transform(self, event: Any) -> Any:
        return _rewrite(event, self._rewrite)


def _rewrite(value: Any, fix: Callable[[str], str]) -> Any:
    """``value`` with ``fix`` applied to every string in it: attrs objects (events, facets)
    and dicts are changed in place, lists rebuilt; anything else (enums, numbers) as it is."""
    if type(value) is str:
        return fix(value)
    if isinstance(value, dict):
        for key, item in value.items():
            value[key] = _rewrite(item, fix)
        return value
    if isinstance(value, list):
        return [_rewrite(item, fix) for item in value]
    if isinstance(value, tuple):
        return tuple(_rewrite(item, fix) for item in value)
    if attr.has(type(value)):
        for f in attr.fields(type(value)):
            item = getattr(value, f.name)
            fixed = _rewrite(item, fix)
            if fixed is not item:
                object.__setattr__(value, f.name, fixed)  # frozen facets too
        return value
    return value


def transport(inner: Mapping[str, Any], roots: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The OpenLineage transport configuration that sends through ``inner`` (http, file...)
    every event rewritten by :class:`RelativePathTransformer`."""
    return {"type": "transform", "transformer_class": TRANSFORMER,
            "transformer_properties": {"roots": dict(roots or {})}, "transport": dict(inner)}
