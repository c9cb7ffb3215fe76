"""What a source connector fetches: a *payload*, one piece of raw data kept unchanged on local
disk (a file, an object, an HTTP response body, a chunk of query rows), which collection lands
in the raw bucket before it parses anything (lifecycle/collect/sources.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Payload:
    name: str        # relative path, object key, page URL or chunk name (shown in errors)
    path: Path       # local copy of the bytes, unchanged
    ext: str         # extension of the raw object
    fmt: str         # format the readers parse it as
    uri: str         # where it came from
    locator: str     # what identifies a row's place ('' = rows are identified by content)
    meta: dict[str, Any] = field(default_factory=dict)  # headers, query, ETag...
    records_path: str = ""
