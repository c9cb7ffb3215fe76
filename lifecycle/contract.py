"""The stage contract: every stage is ``plan -> map over units -> reduce``, declared here once.

A stage is a sequence of :class:`Part`\\ s. ``plan`` lists the units of work (sources and
groups of files, shards), a ``map`` part runs once per unit (a mapped task in the lifecycle
DAG, so a CeleryExecutor spreads the units over workers), a ``global`` part sees every mapped
result at once (preprocessing's deduplication across shards), and the ``reduce`` part, always
the last, combines the partial results into the stage's :class:`~lifecycle.context.StageResult`.
A stage with nothing to fan out yet has a reduce part only: its one unit is its whole input.

From :data:`STAGE_DEFS` the DAG factory (granary/dagfactory.py) builds each stage's task group (a
task per part, named by the part) and the runtime (granary/runtime.py) runs the same parts one
after another in one process (the refresh DAG's task, the CLI). Adding a part to a stage is one
line here and its function in the stage's package.

A part's function is named by ``"module:function"`` and imported when it runs, so parsing a DAG
imports none of the stages' heavy dependencies. Its arguments are the run's
:class:`~lifecycle.context.StageContext`, then its unit (a map part), then the results of the
parts named in ``takes`` in that order; ``"upstream"`` there is the previous stage's result.
Units and partial results are small JSON-able dicts (they cross task boundaries as XComs); a
unit always has ``index`` and ``label`` (what the Airflow UI shows for the mapped task).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Literal

Kind = Literal["plan", "map", "global", "reduce"]
UPSTREAM = "upstream"  # in ``takes``: the previous stage's result


@dataclass(frozen=True)
class Part:
    """One step of a stage: a task of its group in the lifecycle DAG."""

    name: str  # the task's id within the stage's group
    call: str  # "module:function", imported when the part runs
    kind: Kind
    doc: str  # what the step does (the task's description in the Airflow UI)
    over: str | None = None  # a map part: the part whose list of units it maps over
    takes: tuple[str, ...] = ()  # parts (or "upstream") whose results follow ctx (and unit)

    def function(self) -> Any:
        module, _, name = self.call.partition(":")
        return getattr(import_module(module), name)


@dataclass(frozen=True)
class Stage:
    """A stage's parts in the order they run; the last is its reduce."""

    name: str
    parts: tuple[Part, ...]
    description: str
    units: str = "one unit: the whole input"  # what the stage fans out over
    # the parts take the previous stage's result; collection starts from the spec's sources
    needs_upstream: bool = True
    people: bool = False  # the spec may route records to people between two reduce passes
    _by_name: dict[str, Part] = field(default_factory=dict, init=False, repr=False,
                                      compare=False)

    def __post_init__(self) -> None:
        names = [p.name for p in self.parts]
        if len(set(names)) != len(names):
            raise ValueError(f"stage {self.name}: part names repeat: {names}")
        if not self.parts or self.parts[-1].kind != "reduce" or \
                sum(p.kind == "reduce" for p in self.parts) != 1:
            raise ValueError(f"stage {self.name}: exactly one reduce part, the last")
        for i, p in enumerate(self.parts):
            earlier = {UPSTREAM, *names[:i]}
            if p.kind == "map" and p.over not in earlier:
                raise ValueError(f"stage {self.name}: map part {p.name} maps over "
                                 f"{p.over!r}, not an earlier part")
            if unknown := set(p.takes) - earlier:
                raise ValueError(f"stage {self.name}: part {p.name} takes {sorted(unknown)}, "
                                 "not earlier parts")
            self._by_name[p.name] = p

    def part(self, name: str) -> Part:
        return self._by_name[name]

    @property
    def reduce(self) -> Part:
        return self.parts[-1]

    @property
    def fans_out(self) -> bool:
        return any(p.kind == "map" for p in self.parts)


def _stage(name: str, description: str, *parts: Part, **kw: Any) -> Stage:
    return Stage(name, parts, description, **kw)


COLLECT = "lifecycle.collect.stage"
PREPROCESS = "lifecycle.preprocess.stage"

STAGE_DEFS: dict[str, Stage] = {s.name: s for s in (
    _stage("collect", "every source fetched, landed unchanged in the raw bucket and parsed",
           Part("plan", f"{COLLECT}:plan", "plan",
                "the units of work: each source, or each group of its files"),
           Part("fetch", f"{COLLECT}:fetch_unit", "map",
                "one unit fetched, landed unchanged and parsed into records", over="plan"),
           Part("merge", f"{COLLECT}:merge", "reduce",
                "the units' records and quarantines combined, counts checked",
                takes=("fetch",)),
           units="sources and groups of files", needs_upstream=False),
    _stage("preprocess", "the spec's operators per shard, one deduplication across shards",
           Part("plan", f"{PREPROCESS}:plan", "plan", "the collected shards to clean",
                takes=(UPSTREAM,)),
           Part("clean", f"{PREPROCESS}:clean", "map",
                "one shard normalised, filtered and masked; its dedup keys written",
                over="plan"),
           Part("deduplicate", f"{PREPROCESS}:deduplicate", "global",
                "exact and near duplicates decided across every shard", takes=("clean",)),
           Part("apply", f"{PREPROCESS}:apply", "map",
                "the deduplication's decisions applied to one shard", over="clean",
                takes=("deduplicate",)),
           Part("merge", f"{PREPROCESS}:merge", "reduce",
                "the shards combined into the stage's output, counts checked",
                takes=(UPSTREAM, "apply", "deduplicate")),
           units="shards"),
    _stage("annotate", "labels with sources and confidence; likely errors found",
           Part("label", "lifecycle.annotate.stage:run", "reduce",
                "every record labelled, conflicts resolved, likely errors flagged",
                takes=(UPSTREAM,)),
           people=True),
    _stage("synthesize", "marked, explained and checked synthetic records",
           Part("generate", "lifecycle.synthesize.stage:run", "reduce",
                "synthetic records generated, checked and capped", takes=(UPSTREAM,))),
    _stage("evaluate", "splits, expectations, quality dimensions, grade and gate",
           Part("validate", "lifecycle.evaluate.stage:run", "reduce",
                "the candidate version split, validated, graded and gated",
                takes=(UPSTREAM,))),
    _stage("publish", "the version in the registry, the releases bucket and the catalog",
           Part("release", "lifecycle.publish.stage:run", "reduce",
                "the version's files written, tagged, copied and recorded",
                takes=(UPSTREAM,))),
)}
ORDER: tuple[str, ...] = tuple(STAGE_DEFS)


def run_in_process(stage: Stage, ctx: Any, upstream: Any = None) -> Any:
    """Every part of ``stage`` in this process, in order (the map parts over their units one
    after another), as the lifecycle DAG runs them as tasks; returns the reduce's result."""
    results: dict[str, Any] = {UPSTREAM: upstream}
    for part in stage.parts:
        fn = part.function()
        extra = [results[t] for t in part.takes]
        if part.kind == "map":
            units = results[part.over] if part.over else []
            results[part.name] = [fn(ctx, unit, *extra) for unit in units]
        else:
            results[part.name] = fn(ctx, *extra)
    return results[stage.reduce.name]
