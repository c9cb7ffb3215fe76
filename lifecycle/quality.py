"""Dataset-level quality dimensions (after GB/T 36344-2018, plus what AI datasets need), the
score and the grade. Every dimension is a number in [0, 1] computed from measured evidence;
the formulas are documented here and in docs/quality.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from lifecycle import pii
from lifecycle.spec import DatasetSpec

GRADES = (("A", 0.95), ("B", 0.90), ("C", 0.80), ("D", 0.0))
PERIODS = {"@hourly": timedelta(hours=1), "@daily": timedelta(days=1),
           "@weekly": timedelta(days=7), "@monthly": timedelta(days=31),
           "@yearly": timedelta(days=366), "@annually": timedelta(days=366)}


@dataclass
class Evidence:
    """What the evaluation measured besides the records themselves."""

    checks: list[dict[str, Any]] = field(default_factory=list)  # GX results, summarised
    conflicts: int = 0            # duplicate groups whose labels disagreed (preprocessing)
    label_error_rate: float = 0.0  # estimated share of wrong labels (confident learning)
    leakage_share: float = 0.0    # share of records with a near-duplicate in another split
    redundant_share: float = 0.0  # records beyond the first of each near-duplicate group / n
    undecodable_share: float = 0.0  # images: collected files that could not be decoded
    with_metadata_share: float = 0.0  # images: published images still carrying metadata
    # records still holding personal data and the count per type (residual_pii), when the
    # evaluation already counted them: the report and the safety dimension share one pass
    residual_pii: tuple[int, dict[str, int]] | None = None


def _missing(series: pd.Series) -> pd.Series:
    return series.isna() | (series.astype("string").str.len() == 0)


def conformity(checks: list[dict[str, Any]]) -> float:
    """Share of the Great Expectations suite's expectations that succeeded."""
    return sum(c["success"] for c in checks) / len(checks) if checks else 1.0


def completeness(spec: DatasetSpec, df: pd.DataFrame) -> float:
    """Share of records whose required fields are all filled (null or empty is missing)."""
    required = [f.name for f in spec.schema_.fields if f.required and f.name in df]
    if df.empty or not required:
        return 1.0
    missing = pd.concat([_missing(df[f]) for f in required], axis=1).any(axis=1)
    return float(1 - missing.mean())


def accuracy(spec: DatasetSpec, df: pd.DataFrame, label_error_rate: float = 0.0) -> float:
    """1 - (the share of records whose text repeats an earlier record's, i.e. residual
    duplicates) - (the estimated share of wrong labels), floored at 0."""
    text = spec.schema_.text_field if spec.modality != "image" else "image_sha256"
    if df.empty or text not in df:
        return max(0.0, 1 - label_error_rate)
    return max(0.0, float(1 - df[text].duplicated().mean() - label_error_rate))


def consistency(df: pd.DataFrame, checks: list[dict[str, Any]], conflicts: int) -> float:
    """1 - (duplicate groups whose labels disagreed + values outside their allowed set)
    per record."""
    if df.empty:
        return 1.0
    outside = sum(int(c.get("unexpected_count") or 0) for c in checks
                  if c["expectation"] == "expect_column_values_to_be_in_set")
    return max(0.0, 1 - (conflicts + outside) / len(df))


def timeliness(spec: DatasetSpec, df: pd.DataFrame, now: datetime) -> float:
    """1 when the newest record was collected within one refresh period (the schedule; a
    cron expression counts as daily), else period / age; 1 for datasets without schedule."""
    if spec.schedule is None or df.empty or "collected_at" not in df:
        return 1.0
    period = PERIODS.get(spec.schedule, timedelta(days=1))
    newest = pd.to_datetime(df["collected_at"], utc=True, errors="coerce").max()
    if pd.isna(newest):
        return 0.0
    age = now.astimezone(UTC) - newest.to_pydatetime()
    return 1.0 if age <= period else period / age


def accessibility(spec: DatasetSpec) -> float:
    """Mean of: a dataset licence, every source licensed (none accepted without one), at
    least two release formats, a description for the card."""
    parts = [spec.licence.id.strip().lower() not in ("", "noassertion", "unknown"),
             all(s.licence is not None for s in spec.sources),
             len(spec.publish.formats) >= 2, bool(spec.description.strip())]
    return sum(parts) / len(parts)


def balance(spec: DatasetSpec, df: pd.DataFrame) -> float:
    """Normalised entropy of the label distribution, H / log(K), K the number of allowed
    labels (or labels seen); 1 without labels."""
    label = spec.schema_.label_field
    if label is None or df.empty or label not in df:
        return 1.0
    counts = df[label].dropna().value_counts()
    k = len(spec.label_values or counts)
    if k <= 1:
        return 1.0
    p = counts / counts.sum()
    return float(-(p * p.map(math.log)).sum() / math.log(k))


def watched_pii(spec: DatasetSpec) -> tuple[str, ...]:
    """The personal-data types the spec does not keep (its pii action is not ``keep``)."""
    actions = spec.preprocess.pii.actions()
    return tuple(e for e in pii.ENTITIES if actions[e] != "keep")


def residual_pii(spec: DatasetSpec, df: pd.DataFrame) -> tuple[int, dict[str, int]]:
    """Records whose text still holds personal data of a type the spec does not keep, and
    how many of each type were found."""
    text = spec.schema_.text_field
    watched = watched_pii(spec)
    if df.empty or text not in df or not watched:
        return 0, {}
    records, per_type = 0, dict.fromkeys(watched, 0)
    regions = pii.regions_for(spec.language, spec.preprocess.pii.regions)
    for t in df[text]:
        found = pii.detect(t, watched, regions) if isinstance(t, str) else []
        records += bool(found)
        for f in found:
            per_type[f.entity] += 1
    return records, {k: v for k, v in per_type.items() if v}


def pii_coverage(spec: DatasetSpec, detected: dict[str, int] | None = None) -> dict[str, Any]:
    """What ``safety`` measured: the personal-data types it watches (``watched``), per
    language of the dataset (the spec's ``language`` and those the language filter found
    and allows, ``detected``: preprocess report ``languages``) the types detected in its
    text and the phone regions searched, and a warning for every language with no detector
    of its own (only e-mails, IPs, URLs, IBANs, cards and +international phone numbers are
    found in it) or whose national-format phone numbers are searched in no region."""
    regions = pii.regions_for(spec.language, spec.preprocess.pii.regions)
    # the filter counted every record it looked at; those of a language it does not allow
    # were set aside, so only the allowed ones reach the data
    lf = spec.preprocess.filters.language
    allowed = {pii.language_code(x) for x in lf.allowed} if lf is not None else None
    seen = [*spec.language, *(k for k, n in (detected or {}).items()
                              if n and k != "unknown" and (allowed is None or k in allowed))]
    per_language = pii.coverage(seen, regions)
    warnings = []
    for lang, cov in per_language.items():
        if lang not in pii.LANGUAGE_TYPES and not cov["phone_regions"]:
            warnings.append(f"no personal-data detector covers language '{lang}': in its text "
                            f"only {', '.join(pii.UNIVERSAL)} are found; names, national "
                            "identifiers and national-format phone numbers are not measured")
        elif not cov["phone_regions"]:
            warnings.append(f"language '{lang}': no phone region of it is searched "
                            f"(preprocess.pii.regions {list(regions)}): only numbers in "
                            "international format are found")
    if not per_language:
        warnings.append("the spec lists no language: personal data is searched with the "
                        f"detectors of zh and en and phone regions {list(regions)}")
    return {"watched": list(watched_pii(spec)), "phone_regions": list(regions),
            "languages": per_language, "warnings": warnings}


def safety(spec: DatasetSpec, df: pd.DataFrame,
           found: tuple[int, dict[str, int]] | None = None) -> float:
    """1 - the share of records whose text still holds personal data of a type the spec
    does not keep (what masking missed). ``found``: residual_pii's answer, if known. It
    measures only the types the detectors support for the dataset's languages:
    ``pii_coverage`` says which, and warns about a language none covers."""
    if df.empty:
        return 1.0
    return 1 - (found or residual_pii(spec, df))[0] / len(df)


def diversity(redundant_share: float) -> float:
    """1 - the share of records that repeat another's content closely: records beyond the
    first of each near-duplicate group (MinHash, Jaccard >= publish.splits.threshold, looser
    than near-dedup's) / n. Templated near-copies lower it; distinct records keep it at 1."""
    return 1 - redundant_share


def leakage(share: float) -> float:
    """1 - the share of records in a near-duplicate group that spans two splits (1 without
    splits)."""
    return 1 - share


def dimensions(spec: DatasetSpec, df: pd.DataFrame, evidence: Evidence,
               now: datetime) -> dict[str, float]:
    checks = evidence.checks
    values = {"conformity": conformity(checks), "completeness": completeness(spec, df),
              "accuracy": accuracy(spec, df, evidence.label_error_rate),
              "consistency": consistency(df, checks, evidence.conflicts),
              "timeliness": timeliness(spec, now=now, df=df),
              "accessibility": accessibility(spec), "balance": balance(spec, df),
              "safety": safety(spec, df, evidence.residual_pii),
              "diversity": diversity(evidence.redundant_share),
              "leakage": leakage(evidence.leakage_share)}
    if spec.modality == "image":
        values.update(images(spec, df, evidence))
    return {k: round(float(v), 4) for k, v in values.items()}


def images(spec: DatasetSpec, df: pd.DataFrame, evidence: Evidence) -> dict[str, float]:
    """Image datasets: ``decodable`` = 1 - the share of collected files that could not be
    decoded; ``resolution`` = the share of images whose shorter side reaches
    ``quality.min_image_side``; ``safety`` = 1 - the share still carrying metadata (EXIF,
    GPS positions, XMP, text chunks)."""
    side = (df[["width", "height"]].min(axis=1) if {"width", "height"} <= set(df.columns)
            else pd.Series(dtype=float))
    return {"decodable": 1 - evidence.undecodable_share,
            "resolution": float((side >= spec.quality.min_image_side).mean()) if len(side)
            else 1.0,
            "safety": 1 - evidence.with_metadata_share}


def grade_of(value: float) -> str:
    return next(g for g, floor in GRADES if value >= floor)


def score_and_grade(dims: dict[str, float], weights: dict[str, float]) -> tuple[float, str]:
    """Weighted mean of the dimensions (weight 1 unless the spec says), and the grade: the
    lower of the score's grade and the weakest dimension's, so no average hides a damaged
    dimension."""
    total = sum(weights.get(k, 1.0) for k in dims)
    score = sum(v * weights.get(k, 1.0) for k, v in dims.items()) / total if total else 1.0
    worst = min(dims.values()) if dims else 1.0
    grade = max(grade_of(score), grade_of(worst))  # "D" > "A": the worse of the two
    return round(score, 4), grade


def rules_hash(spec: Any) -> str:
    """A fingerprint of what a grade depends on besides the records: the quality section
    and the schema. A published version evaluated under another fingerprint is re-evaluated
    by the maintenance run."""
    import hashlib
    import json

    rules = {"quality": spec.quality.model_dump(mode="json"),
             "schema": spec.schema_.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()
