# Production image: Airflow 3 with Granary's pinned requirements and the granary package.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}
USER root
RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*
USER airflow
COPY --chown=airflow:root requirements.txt constraints.txt /opt/granary/
RUN pip install --no-cache-dir -r /opt/granary/requirements.txt -c /opt/granary/constraints.txt
COPY --chown=airflow:root . /opt/granary
RUN pip install --no-cache-dir --no-deps -e /opt/granary
