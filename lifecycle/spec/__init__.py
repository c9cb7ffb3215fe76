"""The dataset spec: one YAML file per dataset in ``datasets/``, validated as a pydantic model.

Unknown keys are errors, never ignored. Every error names the file, the field and the line,
and says what would be accepted. The documentation of every key is in ``docs/spec.md``.

The model is in parts: each stage's section in its own package (lifecycle/collect/spec.py:
the sources; preprocess/spec.py: the operators; annotate/spec.py; synthesize/spec.py;
evaluate/spec.py: quality; publish/spec.py: formats, splits and access), the shared keys here
(base.py: the base model and the stages' names; licence.py: owners and licences; schema.py:
the fields; refresh.py: refresh and retention), and model.py's DatasetSpec composing them.
Loading a spec and reporting its problems is lifecycle/spec/load.py. Every public name of
these modules (``DatasetSpec``, ``load_spec``, ``parse_spec``, ``discover``, ``check_spec``,
``SpecError``, the sections' models, ...) is importable from here.

The names are imported on first use: a stage's spec module imports this package's shared
modules, and DatasetSpec imports the stages' spec modules, so importing them here up front
would be a cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE: dict[str, tuple[str, ...]] = {
    "lifecycle.spec.base": ("STAGES", "NAME_RE", "FieldProblem", "_Model"),
    "lifecycle.spec.licence": ("LegalBasis", "Licence", "NO_LICENCE", "Owner", "SourceLicence"),
    "lifecycle.spec.schema": ("FieldSpec", "Schema"),
    "lifecycle.spec.refresh": ("Refresh", "Retention"),
    "lifecycle.spec.model": ("DatasetSpec", "Problem"),
    "lifecycle.spec.load": (
        "SHOWN_PROBLEMS", "LoadedSpec", "SpecError", "SpecProblem", "check_spec", "discover",
        "load_spec", "parse_spec"),
    "lifecycle.collect.spec": (
        "Collect", "DELIMITED_KEYS", "DatasetSource", "FileFormat", "FilesSource", "HttpSource",
        "Pagination", "S3Source", "Sidecar", "Source", "SqlSource"),
    "lifecycle.preprocess.spec": (
        "Dedup", "FieldRule", "Filters", "ImageOps", "LanguageFilter", "NearDedup", "Normalise",
        "Pii", "PiiAction", "Preprocess", "Step"),
    "lifecycle.annotate.spec": (
        "Annotate", "Conflicts", "LabelDef", "LabelErrorAction", "LabelStudioLink",
        "ModelLabelling", "People", "Rule", "Topics"),
    "lifecycle.synthesize.spec": (
        "Accept", "EditOp", "ImageAugmentCfg", "LLMCfg", "SynthTarget", "Synthesize",
        "TextAugmentCfg"),
    "lifecycle.evaluate.spec": (
        "Balance", "Dependency", "Dimension", "Drift", "Expectation", "Gate", "LabelErrors",
        "Profile", "Quality", "Timeliness", "parse_duration"),
    "lifecycle.publish.spec": ("Access", "Format", "Publish", "Splits"),
}
_MODULE = {name: module for module, names in _WHERE.items() for name in names}

if TYPE_CHECKING:
    from lifecycle.annotate.spec import Annotate as Annotate
    from lifecycle.annotate.spec import Conflicts as Conflicts
    from lifecycle.annotate.spec import LabelDef as LabelDef
    from lifecycle.annotate.spec import LabelErrorAction as LabelErrorAction
    from lifecycle.annotate.spec import LabelStudioLink as LabelStudioLink
    from lifecycle.annotate.spec import ModelLabelling as ModelLabelling
    from lifecycle.annotate.spec import People as People
    from lifecycle.annotate.spec import Rule as Rule
    from lifecycle.annotate.spec import Topics as Topics
    from lifecycle.collect.spec import DELIMITED_KEYS as DELIMITED_KEYS
    from lifecycle.collect.spec import Collect as Collect
    from lifecycle.collect.spec import DatasetSource as DatasetSource
    from lifecycle.collect.spec import FileFormat as FileFormat
    from lifecycle.collect.spec import FilesSource as FilesSource
    from lifecycle.collect.spec import HttpSource as HttpSource
    from lifecycle.collect.spec import Pagination as Pagination
    from lifecycle.collect.spec import S3Source as S3Source
    from lifecycle.collect.spec import Sidecar as Sidecar
    from lifecycle.collect.spec import Source as Source
    from lifecycle.collect.spec import SqlSource as SqlSource
    from lifecycle.evaluate.spec import Balance as Balance
    from lifecycle.evaluate.spec import Dependency as Dependency
    from lifecycle.evaluate.spec import Dimension as Dimension
    from lifecycle.evaluate.spec import Drift as Drift
    from lifecycle.evaluate.spec import Expectation as Expectation
    from lifecycle.evaluate.spec import Gate as Gate
    from lifecycle.evaluate.spec import LabelErrors as LabelErrors
    from lifecycle.evaluate.spec import Profile as Profile
    from lifecycle.evaluate.spec import Quality as Quality
    from lifecycle.evaluate.spec import Timeliness as Timeliness
    from lifecycle.evaluate.spec import parse_duration as parse_duration
    from lifecycle.preprocess.spec import Dedup as Dedup
    from lifecycle.preprocess.spec import FieldRule as FieldRule
    from lifecycle.preprocess.spec import Filters as Filters
    from lifecycle.preprocess.spec import ImageOps as ImageOps
    from lifecycle.preprocess.spec import LanguageFilter as LanguageFilter
    from lifecycle.preprocess.spec import NearDedup as NearDedup
    from lifecycle.preprocess.spec import Normalise as Normalise
    from lifecycle.preprocess.spec import Pii as Pii
    from lifecycle.preprocess.spec import PiiAction as PiiAction
    from lifecycle.preprocess.spec import Preprocess as Preprocess
    from lifecycle.preprocess.spec import Step as Step
    from lifecycle.publish.spec import Access as Access
    from lifecycle.publish.spec import Format as Format
    from lifecycle.publish.spec import Publish as Publish
    from lifecycle.publish.spec import Splits as Splits
    from lifecycle.spec.base import NAME_RE as NAME_RE
    from lifecycle.spec.base import STAGES as STAGES
    from lifecycle.spec.base import FieldProblem as FieldProblem
    from lifecycle.spec.base import _Model as _Model
    from lifecycle.spec.licence import NO_LICENCE as NO_LICENCE
    from lifecycle.spec.licence import LegalBasis as LegalBasis
    from lifecycle.spec.licence import Licence as Licence
    from lifecycle.spec.licence import Owner as Owner
    from lifecycle.spec.licence import SourceLicence as SourceLicence
    from lifecycle.spec.load import SHOWN_PROBLEMS as SHOWN_PROBLEMS
    from lifecycle.spec.load import LoadedSpec as LoadedSpec
    from lifecycle.spec.load import SpecError as SpecError
    from lifecycle.spec.load import SpecProblem as SpecProblem
    from lifecycle.spec.load import check_spec as check_spec
    from lifecycle.spec.load import discover as discover
    from lifecycle.spec.load import load_spec as load_spec
    from lifecycle.spec.load import parse_spec as parse_spec
    from lifecycle.spec.model import DatasetSpec as DatasetSpec
    from lifecycle.spec.model import Problem as Problem
    from lifecycle.spec.refresh import Refresh as Refresh
    from lifecycle.spec.refresh import Retention as Retention
    from lifecycle.spec.schema import FieldSpec as FieldSpec
    from lifecycle.spec.schema import Schema as Schema
    from lifecycle.synthesize.spec import Accept as Accept
    from lifecycle.synthesize.spec import EditOp as EditOp
    from lifecycle.synthesize.spec import ImageAugmentCfg as ImageAugmentCfg
    from lifecycle.synthesize.spec import LLMCfg as LLMCfg
    from lifecycle.synthesize.spec import Synthesize as Synthesize
    from lifecycle.synthesize.spec import SynthTarget as SynthTarget
    from lifecycle.synthesize.spec import TextAugmentCfg as TextAugmentCfg


def __getattr__(name: str) -> Any:
    module = _MODULE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
