"""The one place that names OpenLineage jobs and datasets, and Airflow DAGs and Assets.

Datasets follow the OpenLineage naming spec: an S3 object or prefix is namespace
``s3://<bucket>`` and name = its key (or prefix, without a trailing slash); every name is a
real object or prefix (a published version: its release folder ``<dataset>/v<N>`` in the
releases bucket, storage/keys.py). Jobs are named ``<dag id>.<task id>`` inside a
configurable namespace (default ``granary``). A dataset's releases are the Airflow Asset
``granary://datasets/<dataset>``, one Asset event per new version (its number in the extra).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath
from urllib.parse import urlsplit, urlunsplit

from storage import keys

DEFAULT_NAMESPACE = "granary"


@dataclass(frozen=True)
class DatasetName:
    namespace: str
    name: str

    @property
    def uri(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def node_id(self) -> str:
        """The lineage graph's id for this dataset (``dataset:<namespace>:<name>``)."""
        return f"dataset:{self.namespace}:{self.name}"


def s3_dataset(bucket: str, key: str) -> DatasetName:
    return DatasetName(f"s3://{bucket}", key.strip("/"))


def release_folder(releases_bucket: str, dataset: str, version: int) -> DatasetName:
    """A published version: its release folder ``<dataset>/v<N>`` in the releases bucket
    (``.uri`` is ``s3://<bucket>/<dataset>/v<N>``; a file's is that and ``/<file>``)."""
    return s3_dataset(releases_bucket, keys.release_prefix(dataset, version))


def from_uri(uri: str) -> DatasetName:
    """``s3://bucket/key`` -> its OpenLineage dataset name."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    return s3_dataset(bucket, key)


def dag_id(dataset: str) -> str:
    """The lifecycle DAG of a dataset."""
    return f"granary_{dataset}"


def refresh_dag_id(dataset: str) -> str:
    """The refresh DAG of a dataset: what its schedule and its upstreams' releases run."""
    return f"granary_{dataset}_refresh"


def job_name(dag: str, task_id: str) -> str:
    return f"{dag}.{task_id}"


def stage_description(title: str, stage: str, step: str | None = None) -> str:
    """What a stage's job is, in its OpenLineage ``documentation`` facet: the Airflow task's
    ``doc_md`` (where the provider takes it from) and the description of a stage run inside
    a task running several (granary.emit)."""
    described = f"{stage} stage of {title}"
    return f"{described}: {step}" if step else described


def registry_name(url: str) -> str:
    """The DVC registry as events name it: a remote git URL without any credentials in it; a
    local repository (a path that means something on one machine only) by its folder name."""
    parts = urlsplit(url)
    if parts.scheme and parts.netloc:
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    if re.match(r"^[\w.-]+@[\w.-]+:", url):  # scp-like ssh: git@host:org/repo.git
        return url
    return PurePath(url.rstrip("/\\")).name or url


def job_node_id(namespace: str, name: str) -> str:
    return f"job:{namespace}:{name}"


def parse_node_id(node_id: str) -> tuple[str, str, str]:
    """``dataset:s3://bucket:key`` -> (``dataset``, ``s3://bucket``, ``key``).

    Namespaces may hold ``://`` (and so colons): a namespace with a scheme ends at the first
    colon after its authority; one without ends at the first colon.
    """
    kind, _, rest = node_id.partition(":")
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/]*(?::\d+(?=:))?):(.*)$", rest)
    if m:
        return kind, m.group(1), m.group(2)
    namespace, _, name = rest.partition(":")
    return kind, namespace, name


def owner(kind: str, name: str) -> str | None:
    """The Granary dataset a lineage job or dataset belongs to, from its name: a job
    ``granary_<dataset>[.<task>]``; an object key ``<dataset>/...`` (raw data, work outputs,
    release folders ``<dataset>/v<N>``) or ``datasets/<dataset>`` (the registry, as events sent
    before the releases bucket named a version). None for anything else (an outside source)."""
    if kind == "job":
        head = name.split(".", 1)[0]
        return head[len("granary_"):] if head.startswith("granary_") else None
    parts = name.strip("/").split("/")
    if parts[0] == "datasets" and len(parts) > 1:
        return parts[1]
    return parts[0] or None


def release_asset_uri(dataset: str) -> str:
    """The Airflow Asset a dataset's publishing updates (one event per new version)."""
    return f"granary://datasets/{dataset}"

