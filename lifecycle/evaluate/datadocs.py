"""Great Expectations' Data Docs pages, rendered with a compiled-template cache.

GX makes a new Jinja environment for every page it renders, so each build compiles its
templates from source again: 0.10 s of a 0.12 s build (and about half of a refresh's
validation). These views are GX's own with Jinja's file-system bytecode cache (in the
user's private temporary folder, keyed by each template's source), so a task process after
the first loads the compiled templates instead; the pages are the same (bench/refresh.py
measures the build)."""

from __future__ import annotations

import logging
from typing import Any

from great_expectations.render.view.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
from jinja2 import FileSystemBytecodeCache

log = logging.getLogger(__name__)
_CACHE: FileSystemBytecodeCache | None = None
_UNAVAILABLE = False


def _cache() -> FileSystemBytecodeCache | None:
    """The shared cache, or None (pages compiled from source as GX does) when no private
    temporary folder can be made for it."""
    global _CACHE, _UNAVAILABLE
    if _CACHE is None and not _UNAVAILABLE:
        try:
            _CACHE = FileSystemBytecodeCache()
        except (OSError, RuntimeError) as e:  # Jinja refuses a folder others could write
            log.warning("Data Docs: no compiled-template cache (%s); compiling each time", e)
            _UNAVAILABLE = True
    return _CACHE


class CachedPageView(DefaultJinjaPageView):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env.bytecode_cache = _cache()


class CachedIndexPageView(DefaultJinjaIndexPageView):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env.bytecode_cache = _cache()


def site_config(folder: str) -> Any:
    """A Data Docs site in ``folder`` (GX's default sections and index) rendered by the
    cached views."""
    page = {"module_name": __name__, "class_name": CachedPageView.__name__}
    return {"class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": folder},
            "site_index_builder": {
                "class_name": "DefaultSiteIndexBuilder",
                "view": {"module_name": __name__, "class_name": CachedIndexPageView.__name__}},
            "site_section_builders": {section: {"view": page}
                                      for section in ("expectations", "validations",
                                                      "profiling")}}
