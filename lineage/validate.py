"""Validate OpenLineage run events without network access.

The core event is checked field by field against the 2-0-2 spec (event type, time, run id as
UUID, job and dataset identity, producer and schema URLs). Each facet is checked by its
``_schemaURL``: facets of the OpenLineage spec by structuring them into openlineage-python's
classes (which are generated from the spec), Granary's own facets against the JSON schemas in
``lineage/schemas``. Facets of other producers only need ``_producer`` and ``_schemaURL``.
"""

from __future__ import annotations

import enum
import functools
import importlib
import json
import pkgutil
import typing
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

import attr

from lineage.facets import SCHEMA_DIR

EVENT_TYPES = {"START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"}


class EventError(ValueError):
    """An event that is not valid OpenLineage; the message names the field."""


def _uri(value: Any, where: str) -> None:
    if not isinstance(value, str) or not urlparse(value).scheme:
        raise EventError(f"{where}: expected a URI, got {value!r}")


def _text(value: Any, where: str) -> None:
    if not isinstance(value, str) or not value:
        raise EventError(f"{where}: expected a non-empty string, got {value!r}")


def validate_event(event: Any) -> dict[str, Any]:
    """Check a run event; return it unchanged, or raise :class:`EventError` naming the field."""
    if not isinstance(event, dict):
        raise EventError("event: expected a JSON object")
    if "eventType" in event and event["eventType"] not in EVENT_TYPES:
        raise EventError(f"eventType: {event['eventType']!r} is not one of "
                         f"{', '.join(sorted(EVENT_TYPES))}")
    time = event.get("eventTime")
    try:
        if not isinstance(time, str) or "t" not in time.lower():
            raise ValueError
        datetime.fromisoformat(time.replace("Z", "+00:00"))
    except ValueError as e:
        raise EventError(f"eventTime: expected an ISO 8601 date-time, got {time!r}") from e
    _uri(event.get("producer"), "producer")
    _uri(event.get("schemaURL"), "schemaURL")
    run = event.get("run")
    if not isinstance(run, dict):
        raise EventError("run: required object is missing")
    try:
        uuid.UUID(str(run.get("runId")))
    except ValueError as e:
        raise EventError(f"run.runId: {run.get('runId')!r} is not a UUID") from e
    job = event.get("job")
    if not isinstance(job, dict):
        raise EventError("job: required object is missing")
    _text(job.get("namespace"), "job.namespace")
    _text(job.get("name"), "job.name")
    _facets(run.get("facets"), "run.facets")
    _facets(job.get("facets"), "job.facets")
    for side in ("inputs", "outputs"):
        datasets = event.get(side, [])
        if not isinstance(datasets, list):
            raise EventError(f"{side}: expected a list")
        for i, ds in enumerate(datasets):
            where = f"{side}[{i}]"
            if not isinstance(ds, dict):
                raise EventError(f"{where}: expected an object")
            _text(ds.get("namespace"), f"{where}.namespace")
            _text(ds.get("name"), f"{where}.name")
            _facets(ds.get("facets"), f"{where}.facets")
            _facets(ds.get("inputFacets" if side == "inputs" else "outputFacets"),
                    f"{where}.{'inputFacets' if side == 'inputs' else 'outputFacets'}")
    return event


def _facets(facets: Any, where: str) -> None:
    if facets is None:
        return
    if not isinstance(facets, dict):
        raise EventError(f"{where}: expected an object")
    for key, facet in facets.items():
        validate_facet(facet, f"{where}.{key}")


def validate_facet(facet: Any, where: str) -> None:
    if not isinstance(facet, dict):
        raise EventError(f"{where}: a facet must be an object")
    _uri(facet.get("_producer"), f"{where}._producer")
    url = str(facet.get("_schemaURL"))
    _uri(facet.get("_schemaURL"), f"{where}._schemaURL")
    name = url.partition("#/$defs/")[2]
    if name.startswith("Granary"):
        _granary_facet(facet, name, where)
    elif urlparse(url).netloc == "openlineage.io":
        cls = _spec_classes().get(name)
        if cls is None:
            raise EventError(f"{where}: unknown OpenLineage facet {name!r}")
        _structure(cls, facet, where)


# ---- facets of the OpenLineage spec, through openlineage-python's generated classes ---------
@functools.cache
def _spec_classes() -> dict[str, type]:
    import openlineage.client.generated as generated

    found: dict[str, type] = {}
    for mod in pkgutil.iter_modules(generated.__path__):
        module = importlib.import_module(f"{generated.__name__}.{mod.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and attr.has(obj) and hasattr(obj, "_get_schema"):
                found[obj.__name__] = obj
    return found


def _structure(cls: type, data: Any, where: str) -> None:
    if not isinstance(data, dict):
        raise EventError(f"{where}: expected an object for {cls.__name__}")
    attr.resolve_types(cls)
    for f in attr.fields(cls):
        key = f.name
        if key in ("_producer", "_schemaURL", "_deleted"):
            continue
        if key not in data:
            if f.default is attr.NOTHING:
                raise EventError(f"{where}.{key}: required by {cls.__name__}")
            continue
        _check_type(f.type, data[key], f"{where}.{key}")


def _check_type(tp: Any, value: Any, where: str) -> None:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        errors = []
        for arg in args:
            try:
                _check_type(arg, value, where)
                return
            except EventError as e:
                errors.append(str(e))
        raise EventError(errors[0] if errors else f"{where}: bad value")
    if tp is type(None):
        if value is not None:
            raise EventError(f"{where}: expected null")
        return
    if origin is list:
        if not isinstance(value, list):
            raise EventError(f"{where}: expected a list")
        for i, item in enumerate(value):
            _check_type(args[0] if args else Any, item, f"{where}[{i}]")
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise EventError(f"{where}: expected an object")
        for k, item in value.items():
            _check_type(args[1] if len(args) > 1 else Any, item, f"{where}.{k}")
        return
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if value not in {m.value for m in tp}:
            raise EventError(f"{where}: {value!r} is not one of {[m.value for m in tp]}")
        return
    if isinstance(tp, type) and attr.has(tp):
        _structure(tp, value, where)
        return
    expected: Any = {str: str, int: int, float: (int, float), bool: bool}.get(tp)
    if expected is not None:
        if isinstance(value, bool) and tp is not bool:
            raise EventError(f"{where}: expected {tp.__name__}, got a boolean")
        if not isinstance(value, expected):
            raise EventError(f"{where}: expected {tp.__name__}, got {value!r}")


# ---- Granary's own facets, against the project's JSON schemas --------------------------------
@functools.cache
def _granary_schema(name: str) -> dict[str, Any]:
    path = SCHEMA_DIR / f"{name}.json"
    if not path.exists():
        raise EventError(f"unknown Granary facet {name!r}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _granary_facet(facet: dict[str, Any], name: str, where: str) -> None:
    from jsonschema import Draft202012Validator

    schema = _granary_schema(name)
    validator = Draft202012Validator({**schema, "$ref": f"#/$defs/{name}"})
    error = next(iter(validator.iter_errors(facet)), None)
    if error is not None:
        path = ".".join(str(p) for p in error.absolute_path)
        raise EventError(f"{where}{'.' + path if path else ''}: {error.message}")
