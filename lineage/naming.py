"""The one place that names OpenLineage jobs and datasets (per the OpenLineage naming spec:
an S3 object is namespace ``s3://<bucket>``, name = its key or prefix)."""

from __future__ import annotations


def s3_dataset(bucket: str, key: str) -> tuple[str, str]:
    return f"s3://{bucket}", key.strip("/")


def job_name(dag_id: str, task_id: str) -> str:
    return f"{dag_id}.{task_id}"


def dag_id(dataset: str) -> str:
    """The lifecycle DAG of a dataset."""
    return f"granary_{dataset}"
