"""Credentials written into URLs, hidden wherever text is stored or sent.

A URL may carry its credentials in its user-info part: ``scheme://user:password@host``, or a
token alone, ``https://ghp_x@github.com/o/r.git`` (git hosts' access tokens), or
``https://oauth2:token@host``. The whole user-info part is replaced: a user name is often the
token itself. Used by the settings' ``mask`` (failures stored in the catalog and shown by the
CLI and the pages) and by the lineage transport's transformer (stack traces the Airflow
provider puts in events).
"""

from __future__ import annotations

import re

HIDDEN = "***"

# scheme://<user-info>@ : the user-info ends at the first @ and holds no slash, space, query,
# fragment or quote (so the @ of an e-mail address in a query string is not taken for it)
URL_CREDENTIALS = re.compile(r"\b([a-z][a-z0-9+.-]*://)([^/\s@?#'\"<>]+)@", re.IGNORECASE)


def hide_url_credentials(text: str) -> str:
    """``text`` with the user-info part of every URL in it replaced by ``***``."""
    return URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{HIDDEN}@", text)


def url_credentials(url: str) -> list[str]:
    """The secrets written in ``url``: the user-info, and its password alone when it has one
    (a password also appears without its user, in a driver's message)."""
    m = URL_CREDENTIALS.search(url)
    if m is None:
        return []
    info = m.group(2)
    password = info.partition(":")[2]
    return [info, password] if password else [info]
