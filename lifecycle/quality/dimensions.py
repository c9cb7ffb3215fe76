"""Dataset-level quality dimensions (after GB/T 36344-2018, plus what AI datasets need), the
score and the grade. Every dimension is a number in [0, 1] computed from measured evidence, or
not measured (with the reason) and then left out of the score and the grade; the formulas are
documented here and in docs/quality.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from lifecycle.quality import keyparts, tallies
from lifecycle.quality.cells import CellCounts, CellFailures
from lifecycle.quality.tallies import FUTURE_TOLERANCE, Tally
from lifecycle.spec import DatasetSpec
from lifecycle.text import pii

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
    # the failed cells (lifecycle/quality/cells.py), when evaluation measured them: conformity,
    # accuracy and consistency then count records with a failed cell of their kind
    cells: CellFailures | CellCounts | None = None
    # their counts for the report when counted per shard and combined (cellparts.combine)
    cell_counts: dict[str, Any] | None = None


def conformity(checks: list[dict[str, Any]],
               cells: CellFailures | CellCounts | None = None) -> float:
    """With the failed cells: (1 - records with a failed conformity cell / n) x (the share
    of the table-level expectations that succeeded: row count, columns, aggregates, any
    whose rows GX does not list). Without: the share of the suite's expectations that
    succeeded."""
    if cells is None:
        return sum(c["success"] for c in checks) / len(checks) if checks else 1.0
    table = [c for c in checks if not c.get("per_row")]
    share = sum(c["success"] for c in table) / len(table) if table else 1.0
    # an integer count divided once: as the mask's mean, to the last bit
    rows = cells.failing("conformity") / cells.n if cells.n else 0.0
    return (1 - rows) * share


def completeness(spec: DatasetSpec, df: pd.DataFrame | Tally) -> float:
    """Share of records whose required fields are all filled (null, an empty string and the
    spec's null markers are missing). ``df``: the records, or their tally."""
    t = _tally(spec, df)
    return 1.0 if t.empty else 1 - t.incomplete / t.rows


def accuracy(spec: DatasetSpec, df: pd.DataFrame | None, label_error_rate: float = 0.0,
             cells: CellFailures | CellCounts | None = None,
             repeated: int | None = None) -> float:
    """1 - (the share of records with a failed accuracy cell: out of range, not unique, or
    a text repeating an earlier record's, i.e. a residual duplicate) - (the estimated share
    of wrong labels), floored at 0. Without the failed cells, residual duplicates only:
    ``repeated`` of ``len(df)`` records when given (keyparts.repeated_rows), else counted
    in ``df``."""
    if cells is not None and cells.n:
        return max(0.0, float(1 - cells.failing("accuracy") / cells.n - label_error_rate))
    text = spec.schema_.text_field if spec.modality != "image" else "image_sha256"
    if df is None or df.empty or text not in df:
        return max(0.0, 1 - label_error_rate)
    if repeated is None:
        repeated = len(keyparts.repeated_rows([df[text]])[0])
    return max(0.0, float(1 - repeated / len(df) - label_error_rate))


def consistency(df: pd.DataFrame | int, checks: list[dict[str, Any]], conflicts: int,
                cells: CellFailures | CellCounts | None = None) -> float:
    """1 - (duplicate groups whose labels disagreed + records with a failed consistency
    cell: a value outside its set, a violated dependency) per record. Without the failed
    cells, the values outside their set counted by the in-set checks. ``df``: the records,
    or their number."""
    n = df if isinstance(df, int) else len(df)
    if not n:
        return 1.0
    if cells is not None and cells.n:
        outside = cells.failing("consistency")
    else:
        outside = sum(int(c.get("unexpected_count") or 0) for c in checks
                      if c["expectation"] == "expect_column_values_to_be_in_set")
    return max(0.0, 1 - (conflicts + outside) / n)


def _tally(spec: DatasetSpec, df: pd.DataFrame | Tally,
           now: datetime | None = None) -> Tally:
    """The tally the formulas read: given, or measured on the records (against ``now``)."""
    if isinstance(df, Tally):
        if now is not None and df.at != now:
            raise ValueError(f"a tally measured at {df.at} is read at {now}: measure it "
                             "against the same now")
        return df
    return tallies.measure(spec, df, now)


def future_times(spec: DatasetSpec, df: pd.DataFrame | Tally, now: datetime) -> int:
    """Records whose own time is later than ``now`` + FUTURE_TOLERANCE (ignored by
    timeliness: a wrong clock or a typo, not freshness; the report warns of them)."""
    return _tally(spec, df, now).future


def timeliness(spec: DatasetSpec, df: pd.DataFrame | Tally, now: datetime) -> float | str:
    """How fresh the newest record is: 1 when its time (``quality.timeliness.field``) is
    within the expected freshness (``quality.timeliness.max_age``, else the schedule's period;
    a cron expression counts as daily), else max_age / age. Times later than now +
    FUTURE_TOLERANCE are ignored (``future_times``). A reason (str) when not measured:
    no freshness is expected, or no field holds the records' own time (``collected_at`` is
    when Granary fetched a record, not how old it is at its source)."""
    cfg = spec.quality.timeliness
    expected = cfg.max_age or (PERIODS.get(spec.schedule, timedelta(days=1))
                               if spec.schedule is not None else None)
    if expected is None:
        return ("no freshness is expected: set quality.timeliness.max_age, or a schedule "
                "(its period is the expected freshness)")
    if cfg.field is None:
        return ("no record time: name the field holding each record's own time in "
                "quality.timeliness.field (collected_at is when Granary fetched a record, "
                "not its age at the source)")
    t = _tally(spec, df, now)
    if t.empty or not t.timed:
        return f"no records with the field {cfg.field!r}"
    at = now.astimezone(UTC)
    newest = t.newest
    if newest is None:
        return (f"no value of {cfg.field!r} reads as a time at or before now "
                f"(+{FUTURE_TOLERANCE})")
    age = at - newest.to_pydatetime()
    return 1.0 if age <= expected else expected / age


ACCESSIBILITY_AT_RELEASE = ("measured on the release when it is published: every file "
                            "through a presigned link, the data file through dvc get, the "
                            "card and the Croissant file validated")


def accessibility(checks: list[dict[str, Any]]) -> float | str:
    """The release's checks that passed (lifecycle/publish/reachable.py: each file downloaded
    through a
    presigned link with its sha256, the data file through ``dvc get``, the card and the
    Croissant file validated) / the checks measured: a check met only by transient errors
    (network, timeouts, 5xx) is not measured and counts neither way. A reason (str) when no
    check was measured."""
    measured = [c for c in checks if c.get("status", "passed" if c["ok"] else "failed")
                != "not_measured"]
    if not measured:
        why = "; ".join(f"{c['check']} {c['file']}: {c.get('problem')}" for c in checks)
        return f"no check of the release could be made: {why or 'no checks'}"[:1000]
    return sum(bool(c["ok"]) for c in measured) / len(measured)


def label_shares(spec: DatasetSpec, df: pd.DataFrame | Tally) -> pd.Series:
    """Each label's share of the labelled records: the allowed labels (0 for those absent)
    and any other label seen; empty without labelled records (tallies.shares)."""
    return tallies.shares(spec, _tally(spec, df))


def entropy(spec: DatasetSpec, shares: pd.Series) -> float:
    """Normalised entropy of the label distribution, H / ln K, K the number of allowed labels
    (or labels seen): 1 for an even distribution, 0 for one label; 1 when K <= 1."""
    k = len(spec.label_values or shares[shares > 0])
    p = shares[shares > 0]
    if k <= 1 or p.empty:
        return 1.0
    return float(-(p * p.map(math.log)).sum() / math.log(k))


def balance(spec: DatasetSpec, df: pd.DataFrame | Tally) -> float | str:
    """How far the labels are from what this task calls balanced (``quality.balance``):
    ``{target: {label: share}}``: 1 - total variation distance, 1 - sum |p_l - t_l| / 2 over
    every label; ``{min_share: x}``: the worst label's min(1, p_l / x). ``natural`` (the
    default): not scored, the distribution is the data's truth (reported, drift-checked).
    A reason (str) when not measured."""
    mode = spec.quality.balance
    shares = label_shares(spec, df)
    if mode.natural:
        return ("balance: natural: the label distribution is the data's truth for this task; "
                "reported with its entropy and drift-checked, not scored")
    if shares.empty:
        return "no labelled records"
    if mode.target is not None:
        labels = list(dict.fromkeys([*mode.target, *shares.index]))
        p = shares.reindex(labels, fill_value=0.0)
        t = pd.Series(mode.target, dtype=float).reindex(labels, fill_value=0.0)
        return float(1 - (p - t).abs().sum() / 2)
    assert mode.min_share is not None
    return float((shares / mode.min_share).clip(upper=1.0).min())


def balance_report(spec: DatasetSpec, df: pd.DataFrame | Tally) -> dict[str, Any]:
    """What the report shows of the balance whatever the mode: the mode, each label's share
    and the normalised entropy."""
    mode = spec.quality.balance
    shares = label_shares(spec, df)
    return {"mode": mode.describe(),
            "shares": {str(k): round(float(v), 6) for k, v in shares.items()},
            "entropy": round(entropy(spec, shares), 4) if not shares.empty else None}


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


def safety(spec: DatasetSpec, df: pd.DataFrame | Tally,
           found: tuple[int, dict[str, int]] | None = None) -> float:
    """1 - the share of records whose text still holds personal data of a type the spec
    does not keep (what masking missed). ``found``: residual_pii's answer, if known. It
    measures only the types the detectors support for the dataset's languages:
    ``pii_coverage`` says which, and warns about a language none covers."""
    rows = df.rows if isinstance(df, Tally) else len(df)
    if not rows:
        return 1.0
    if found is None:
        if isinstance(df, Tally):
            raise ValueError("safety of a tally needs the residual personal data found")
        found = residual_pii(spec, df)
    return 1 - found[0] / rows


def diversity(redundant_share: float) -> float:
    """1 - the share of records that repeat another's content closely: records beyond the
    first of each near-duplicate group (MinHash, Jaccard >= publish.splits.threshold, looser
    than near-dedup's) / n. Templated near-copies lower it; distinct records keep it at 1."""
    return 1 - redundant_share


def leakage(share: float) -> float:
    """1 - the share of records in a near-duplicate group that spans two splits (1 without
    splits)."""
    return 1 - share


def assess(spec: DatasetSpec, df: pd.DataFrame | Tally, evidence: Evidence,
           now: datetime) -> tuple[dict[str, float], dict[str, str]]:
    """The measured dimensions, and each dimension not measured with the reason; a dimension
    not measured is left out of the score and the grade (and of the dimensions dict every
    consumer iterates). Accessibility is measured on the release, by publishing. ``df``: the
    records, or their tally (measured against ``now``; combined from parts: tallies.py),
    which then needs the failed cells and the residual personal data in ``evidence``."""
    checks = evidence.checks
    cells = evidence.cells
    t = _tally(spec, df, now)
    frame = df if isinstance(df, pd.DataFrame) else None
    if frame is None and t.rows and (cells is None or evidence.residual_pii is None):
        raise ValueError("dimensions from a tally need the failed cells and the residual "
                         "personal data in the evidence (they are not in a tally)")
    values: dict[str, float | str] = {
        "conformity": conformity(checks, cells), "completeness": completeness(spec, t),
        "accuracy": accuracy(spec, frame, evidence.label_error_rate, cells),
        "consistency": consistency(t.rows, checks, evidence.conflicts, cells),
        "timeliness": timeliness(spec, t, now),
        "accessibility": ACCESSIBILITY_AT_RELEASE, "balance": balance(spec, t),
        "safety": safety(spec, frame if frame is not None else t, evidence.residual_pii),
        "diversity": diversity(evidence.redundant_share),
        "leakage": leakage(evidence.leakage_share)}
    if spec.modality == "image":
        values.update(images(spec, t, evidence))
    return ({k: round(float(v), 4) for k, v in values.items() if not isinstance(v, str)},
            {k: v for k, v in values.items() if isinstance(v, str)})


def dimensions(spec: DatasetSpec, df: pd.DataFrame | Tally, evidence: Evidence,
               now: datetime) -> dict[str, float]:
    """The measured dimensions (assess without the reasons for those not measured)."""
    return assess(spec, df, evidence, now)[0]


def images(spec: DatasetSpec, df: pd.DataFrame | Tally,
           evidence: Evidence) -> dict[str, float]:
    """Image datasets: ``decodable`` = 1 - the share of collected files that could not be
    decoded; ``resolution`` = the share of images whose shorter side reaches
    ``quality.min_image_side``; ``safety`` = 1 - the share still carrying metadata (EXIF,
    GPS positions, XMP, text chunks)."""
    t = _tally(spec, df)
    return {"decodable": 1 - evidence.undecodable_share,
            "resolution": t.resolved / t.sized if t.sized else 1.0,
            "safety": 1 - evidence.with_metadata_share}


def warnings(spec: DatasetSpec, df: pd.DataFrame | Tally, not_measured: dict[str, str],
             now: datetime) -> list[str]:
    """What the report warns of about the grade itself: a dimension ``quality.gating`` lists
    that this run did not measure (it gates nothing this time; accessibility is measured by
    publishing), and record times in the future, which timeliness ignored."""
    found = [f"{dim} is listed in quality.gating but was not measured in this run, so it "
             f"gates nothing here: {not_measured[dim]}"
             for dim in spec.quality.gating or [] if dim in not_measured
             and dim != "accessibility"]
    future = future_times(spec, df, now)
    if future:
        found.append(f"{future} records have a {spec.quality.timeliness.field} later than "
                     f"now + {FUTURE_TOLERANCE}; timeliness ignored them (a wrong clock or "
                     "time zone at the source?)")
    return found


def grade_of(value: float) -> str:
    return next(g for g, floor in GRADES if value >= floor)


def gating(spec: DatasetSpec, dims: dict[str, float]) -> list[str]:
    """The measured dimensions the weakest-dimension rule applies to: ``quality.gating``
    (default every scored dimension), plus any the spec sets a requirement for (balance with
    a target or min_share, timeliness with max_age)."""
    listed = spec.quality.gating
    if listed is None:
        return list(dims)
    required = set(listed)
    if not spec.quality.balance.natural:
        required.add("balance")
    if spec.quality.timeliness.max_age is not None:
        required.add("timeliness")
    return [k for k in dims if k in required]


def score_and_grade(dims: dict[str, float], weights: dict[str, float],
                    gating: list[str] | None = None) -> tuple[float, str]:
    """Weighted mean of the measured dimensions (weight 1 unless the spec says), and the
    grade: the lower of the score's grade and the weakest gating dimension's (``gating``;
    None: every dimension), so no average hides a damaged dimension the task cares about."""
    total = sum(weights.get(k, 1.0) for k in dims)
    score = sum(v * weights.get(k, 1.0) for k, v in dims.items()) / total if total else 1.0
    gated = [v for k, v in dims.items() if gating is None or k in gating]
    worst = min(gated, default=1.0)
    grade = max(grade_of(score), grade_of(worst))  # "D" > "A": the worse of the two
    return round(score, 4), grade


def rules_hash(spec: Any) -> str:
    """A fingerprint of what a grade depends on besides the records: the quality section
    (but ``profile``: proposed rules are advice, not applied), the schema, and the null
    markers evaluation reads as missing (``quality.null_values`` and the sources'). A
    published version evaluated under another fingerprint is re-evaluated by the
    maintenance run, and a refresh carries its base's checks only under the same one."""
    import hashlib
    import json

    from lifecycle.quality.cells import null_markers

    rules = {"quality": spec.quality.model_dump(mode="json", exclude={"profile"}),
             "schema": spec.schema_.model_dump(mode="json"),
             "null_markers": sorted(null_markers(spec))}
    return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()
