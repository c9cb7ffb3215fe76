"""What a Celery worker started by the local stack reports as the hostname of the tasks it
runs (Airflow's ``core.hostname_callable``): its name and the machine's, e.g.
``worker2@build-host``, so the UI and the API show which worker ran each task instance even
when several workers share one machine."""

from __future__ import annotations

import os
import socket


def worker_hostname() -> str:
    name = os.environ.get("GRANARY_WORKER_NAME")
    host = socket.getfqdn()
    return f"{name}@{host}" if name else host
