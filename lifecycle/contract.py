"""The stage contract: every stage is ``plan -> map over units -> reduce``, declared here once.

A stage is a sequence of :class:`Part`\\ s. ``plan`` lists the units of work (sources and
groups of files, shards), a ``map`` part runs once per unit (a mapped task in the lifecycle
DAG, so a CeleryExecutor spreads the units over workers), a ``global`` part sees every mapped
result at once (preprocessing's deduplication across shards), and the ``reduce`` part, always
the last, combines the partial results into the stage's :class:`~lifecycle.context.StageResult`.
A stage with nothing to fan out yet has a reduce part only: its one unit is its whole input.

From :data:`STAGE_DEFS` the DAG factory (granary/dagfactory.py) builds each stage's task
group (a task per part, named by the part) and the runtime (granary/runtime.py) runs the same
parts one after another in one process (the refresh DAG's task before publishing, the tests
and benchmarks). Adding a part to a stage is one line here and its function in the stage's
package.

A part's function is named by ``"module:function"`` and imported when it runs, so parsing a DAG
imports none of the stages' heavy dependencies. Its arguments are the run's
:class:`~lifecycle.context.StageContext`, then its unit (a map part), then the results of the
parts named in ``takes`` in that order; ``"upstream"`` there is the previous stage's
:class:`~lifecycle.context.StageResult`, and every reduce returns one.
Units and partial results cross task boundaries as XComs and are mapped over by Airflow's
dynamic task mapping, which expands lists of JSON values, so they are typed dicts
(:class:`typing.TypedDict`, checked by mypy, plain JSON on the wire) declared beside their
stage's parts (lifecycle/collect/units.py, lifecycle/preprocess/units.py); every unit is a
:class:`Unit`, with ``index`` and ``label`` (what the Airflow UI shows for the mapped task).
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any, Literal, TypedDict

if TYPE_CHECKING:
    from lifecycle.context import StageContext, StageResult

Kind = Literal["plan", "map", "global", "reduce"]
UPSTREAM = "upstream"  # in ``takes``: the previous stage's result


class Unit(TypedDict):
    """What every unit of work has: its place in the plan and its label in the Airflow UI."""

    index: int  # -1: a placeholder (nothing to do: an earlier run's output is reused)
    label: str


@dataclass(frozen=True)
class Part:
    """One step of a stage: a task of its group in the lifecycle DAG."""

    name: str  # the task's id within the stage's group
    call: str  # "module:function", imported when the part runs
    kind: Kind
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
    # the parts take the previous stage's result; collection starts from the spec's sources
    needs_upstream: bool = True
    # the spec may route records to people: these parts, a second sequence ending in a reduce,
    # run after the wait on the first reduce's result (what people answered read first); their
    # "upstream" is that result
    people: Stage | None = None
    # a spec the parts cannot take runs ``whole`` instead: ``refuses`` ("module:function",
    # imported when asked) gives the reason for a spec, or None when the parts take it
    whole: Stage | None = None
    refuses: str | None = None
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
            if p.kind == "map" and p.over not in names[:i]:
                raise ValueError(f"stage {self.name}: map part {p.name} maps over "
                                 f"{p.over!r}, not an earlier part of the stage")
            if unknown := set(p.takes) - earlier:
                raise ValueError(f"stage {self.name}: part {p.name} takes {sorted(unknown)}, "
                                 "not earlier parts")
            self._by_name[p.name] = p
        second = self.people
        if second is not None:
            if second.people is not None:
                raise ValueError(f"stage {self.name}: the people pass has no people pass")
            if same := set(names) & {p.name for p in second.parts}:
                raise ValueError(f"stage {self.name}: the people pass's parts {sorted(same)} "
                                 "repeat the first pass's (they are tasks of one group)")

    def part(self, name: str) -> Part:
        """The part ``name`` of the stage, else of its people pass, else of its whole (what
        a spec its parts refuse runs)."""
        if name in self._by_name:
            return self._by_name[name]
        for other in (self.people, self.whole):
            if other is not None:
                with suppress(KeyError):
                    return other.part(name)
        raise KeyError(f"stage {self.name} has no part {name!r}")

    @property
    def reduce(self) -> Part:
        return self.parts[-1]

    @property
    def fans_out(self) -> bool:
        return any(p.kind == "map" for p in self.parts)


def _stage(name: str, *parts: Part, **kw: Any) -> Stage:
    return Stage(name, parts, **kw)


COLLECT = "lifecycle.collect"
PREPROCESS = "lifecycle.preprocess"
SYNTHESIZE = "lifecycle.synthesize.parts"
PUBLISH = "lifecycle.publish"

ANNOTATE = "lifecycle.annotate"


def _annotate_parts() -> Stage:
    """Annotation's parts, and the same parts again for the people pass (named ``finish_*``,
    its plan reading the first pass's input and pulling what people answered)."""
    parts = (
        # one unit per preprocessed shard (the people pass: Label Studio's answers pulled)
        Part("plan", f"{ANNOTATE}.parts:plan", "plan", takes=(UPSTREAM,)),
        # one shard's people, source and rules labels, and its sample of labelled texts
        Part("label", f"{ANNOTATE}.parts:label", "map", over="plan"),
        # the model fitted once on the merged sample (sample_per_label a label)
        Part("train", f"{ANNOTATE}.parts:train", "global", takes=("label",)),
        # the duplicate groups' votes, from the preprocess merges table alone
        Part("votes", f"{ANNOTATE}.parts:votes", "global", takes=("plan",)),
        # one shard labelled by the model, its groups' conflicts decided
        Part("apply", f"{ANNOTATE}.parts:apply", "map", over="label",
             takes=("train", "votes")),
        # likely label errors over every applied shard (confident learning, once)
        Part("check", f"{ANNOTATE}.checkparts:check", "global", takes=("apply",)),
        # one shard's findings acted on, flags and suggestions set: its output
        Part("flag", f"{ANNOTATE}.checkparts:flag", "map", over="apply", takes=("check",)),
        # conservation, the report, the tasks for people (sent to Label Studio), the manifest
        Part("merge", f"{ANNOTATE}.checkparts:merge", "reduce",
             takes=("plan", "label", "train", "votes", "apply", "check", "flag")))

    def again(name: str) -> str:
        return "finish" if name == "merge" else name if name == UPSTREAM else f"finish_{name}"

    people = tuple(Part(again(p.name), f"{ANNOTATE}.parts:replan" if p.kind == "plan"
                        else p.call, p.kind, over=p.over and again(p.over),
                        takes=tuple(again(t) for t in p.takes)) for p in parts)
    return _stage("annotate", *parts, people=_stage("annotate", *people))


EVALUATE = "lifecycle.evaluate"

# evaluation in one task over the whole table, for the specs the parts do not evaluate yet
# (lifecycle.evaluate.scope)
SINGLE_EVALUATE = _stage(
    "evaluate", Part("validate", f"{EVALUATE}.stage:run", "reduce", takes=(UPSTREAM,)))


def _evaluate_parts() -> Stage:
    return _stage(
        "evaluate",
        # one unit per input shard, with the whole candidate's dtypes
        Part("plan", f"{EVALUATE}.parts:plan", "plan", takes=(UPSTREAM,)),
        # one shard: its GX result (work bucket), tally, residual personal data, usable labels
        Part("measure", f"{EVALUATE}.parts:measure", "map", over="plan"),
        # the whole suite's result from the shards' and the key partials; residual duplicates
        Part("checks", f"{EVALUATE}.globalparts:checks", "global", takes=("plan", "measure")),
        # the split groups, splits and leakage over ids, texts and labels
        Part("groups", f"{EVALUATE}.globalparts:groups", "global", takes=("plan",)),
        # the label check on its sample drawn from the shards' counts
        Part("labels", f"{EVALUATE}.globalparts:labels", "global", takes=("plan", "measure")),
        # one shard's failed cells counted, its records with their splits written
        Part("finish", f"{EVALUATE}.parts:finish", "map", over="plan",
             takes=("checks", "groups")),
        # the grade, report, Data Docs, manifest, catalog and gate from the partials
        Part("grade", f"{EVALUATE}.gradeparts:grade", "reduce",
             takes=(UPSTREAM, "plan", "measure", "checks", "groups", "labels", "finish")),
        whole=SINGLE_EVALUATE, refuses=f"{EVALUATE}.scope:refusal")


# today's preprocessing with one global deduplication: the stage for the specs the
# partitioned parts refuse (lifecycle/preprocess/scope.py: near_dedup listed
# before exact_dedup), its deduplicate unbounded in memory
WHOLE_PREPROCESS = _stage(
    "preprocess",
    # one unit per collected shard (for a refresh: the delta's shards)
    Part("plan", f"{PREPROCESS}.clean:plan", "plan", takes=(UPSTREAM,)),
    # one shard normalised, filtered and masked; its dedup keys and signatures written
    Part("clean", f"{PREPROCESS}.clean:clean", "map", over="plan"),
    # exact and near duplicates decided across every shard
    Part("deduplicate", f"{PREPROCESS}.dedup:deduplicate", "global", takes=("clean",)),
    # the decisions applied to one shard
    Part("apply", f"{PREPROCESS}.apply:apply", "map", over="clean", takes=("deduplicate",)),
    # the shards combined into the stage's output, conservation checked
    Part("merge", f"{PREPROCESS}.merge:merge", "reduce",
         takes=(UPSTREAM, "apply", "deduplicate")))

# preprocessing with its deduplication partitioned (issue 31, docs/design/partitioned-dedup.md):
# every part bounded in memory; the specs scope.py refuses run WHOLE_PREPROCESS (see declared)
PARTITIONED = _stage(
    "preprocess",
    # the clean units, each told how many partitions the deduplication uses
    Part("plan", f"{PREPROCESS}.partition:plan", "plan", takes=(UPSTREAM,)),
    # as the stage's clean, plus each record's card and the unit's exact-key routes
    Part("clean", f"{PREPROCESS}.clean:clean", "map", over="plan"),
    # one unit per shard of the base version's dedup index (a full run: a placeholder)
    Part("published", f"{PREPROCESS}.partition:published", "plan", takes=("plan",)),
    # one base-index shard's cards and routes, as a clean unit's
    Part("scatter", f"{PREPROCESS}.partition:scatter", "map", over="published"),
    # the partitions
    Part("partition", f"{PREPROCESS}.partition:partition", "plan", takes=("plan",)),
    # one partition's records published before, then its exact duplicates
    Part("exact", f"{PREPROCESS}.exactparts:exact", "map", over="partition",
         takes=("clean", "scatter")),
    # one clean unit's records left after the exact decisions, dealt by LSH bucket
    Part("sift", f"{PREPROCESS}.nearparts:sift", "map", over="clean",
         takes=("exact", "scatter")),
    # one partition's LSH buckets paired (the cap, published records first)
    Part("pairs", f"{PREPROCESS}.nearparts:pairs", "map", over="partition",
         takes=("sift", "scatter")),
    # one partition's candidate pairs each once, estimated: the likely ones and their forest
    Part("verify", f"{PREPROCESS}.nearparts:verify", "map", over="partition",
         takes=("pairs", "clean", "scatter")),
    # the likely pairs' connected components (union-find over the forests)
    Part("components", f"{PREPROCESS}.starparts:components", "global", takes=("verify",)),
    # one partition's likely pairs dealt to the partitions clustering their components
    Part("regroup", f"{PREPROCESS}.starparts:regroup", "map", over="partition",
         takes=("verify", "components")),
    # one partition's components clustered as stars, verified lazily
    Part("stars", f"{PREPROCESS}.starparts:stars", "map", over="partition",
         takes=("regroup", "clean", "scatter")),
    # the decisions combined: counts, label conflicts, largest groups, split links
    Part("cluster", f"{PREPROCESS}.cluster:cluster", "global",
         takes=("exact", "sift", "pairs", "verify", "components", "stars", "clean",
                "scatter")),
    # the decisions applied to one shard: its merges per reason and its kept index written
    Part("apply", f"{PREPROCESS}.apply:apply_unit", "map", over="clean",
         takes=("exact", "cluster")),
    # the shards combined into the stage's output, conservation checked
    Part("merge", f"{PREPROCESS}.merge:merge_units", "reduce",
         takes=(UPSTREAM, "apply", "cluster")),
    whole=WHOLE_PREPROCESS, refuses=f"{PREPROCESS}.scope:refusal")


# each stage's parts, in the order they run (a comment says what each does; the tasks'
# descriptions in the Airflow UI come from lineage.naming.stage_description)
STAGE_DEFS: dict[str, Stage] = {s.name: s for s in (
    _stage("collect",
           # the units of work: each source, or each group of its files
           Part("plan", f"{COLLECT}.plan:plan", "plan"),
           # one unit fetched, landed unchanged in the raw bucket and parsed into records
           Part("fetch", f"{COLLECT}.fetch:fetch_unit", "map", over="plan"),
           # the units' records and quarantines combined, conservation checked
           Part("merge", f"{COLLECT}.merge:merge", "reduce", takes=("fetch",)),
           needs_upstream=False),
    PARTITIONED,
    # annotation as parts (docs/design/partitioned-annotate.md); with people in Label Studio
    # the same parts again after the wait, named finish_*, their reduce `finish`
    _annotate_parts(),
    _stage("synthesize",
           # one unit per annotated shard (synthesis off, or a refresh: one, passing through)
           Part("plan", f"{SYNTHESIZE}:plan", "plan", takes=(UPSTREAM,)),
           # one shard's real records marked real, counted per label and sampled
           Part("mark", f"{SYNTHESIZE}:mark", "map", over="plan"),
           # the samples merged (sample_per_label a label), the plan from every shard's counts
           Part("sample", f"{SYNTHESIZE}:merge_samples", "global", takes=("mark",)),
           # the candidates asked, in chunks of at most chunk_size (one: every label's)
           Part("chunk", f"{SYNTHESIZE}:chunk", "plan", takes=("sample",)),
           # one chunk's candidates made from the sample, with its own random stream
           Part("generate", f"{SYNTHESIZE}:generate", "map", over="chunk", takes=("sample",)),
           # one shard's records outside the sample checked against every chunk's candidates
           Part("screen", f"{SYNTHESIZE}:screen", "map", over="plan",
                takes=("sample", "generate")),
           # one chunk's candidates decided, accepted up to its quota, written
           Part("decide", f"{SYNTHESIZE}:decide", "map", over="chunk",
                takes=("sample", "generate", "screen")),
           # the chunks' counts and refs combined; the marked and synthetic shards listed
           Part("merge", f"{SYNTHESIZE}:merge", "reduce",
                takes=(UPSTREAM, "mark", "sample", "generate", "decide"))),
    # evaluation as parts over the input shards (docs/design/partitioned-evaluate.md); a
    # spec the parts cannot evaluate yet runs SINGLE_EVALUATE (see declared), and a refresh
    # or a dataset with a published version the single task inside `grade`
    _evaluate_parts(),
    _stage("publish",
           # units of whole release parts of the evaluated records (none: nothing to write)
           Part("plan", f"{PUBLISH}.parts:plan", "plan", takes=(UPSTREAM,)),
           # one unit's parts encoded in the staging area, or the previous version's reused
           Part("write", f"{PUBLISH}.parts:write", "map", over="plan"),
           # the version of the refs: manifest, card, Croissant, DVC tag, release folder,
           # catalog, lineage
           Part("release", f"{PUBLISH}.stage:release", "reduce",
                takes=(UPSTREAM, "plan", "write"))),
)}
ORDER: tuple[str, ...] = tuple(STAGE_DEFS)


def declared(stage: str, spec: Any) -> Stage:
    """``stage``'s declaration for ``spec``, what the DAG factory builds and the runtime runs:
    :data:`STAGE_DEFS`', or its ``whole`` for a spec its parts refuse (preprocessing's: what
    lifecycle/preprocess/scope.py lists, :data:`WHOLE_PREPROCESS`;
    evaluation's what lifecycle/evaluate/scope.py lists, :data:`SINGLE_EVALUATE`)."""
    parts = STAGE_DEFS[stage]
    if parts.whole is not None and parts.refuses is not None:
        module, _, name = parts.refuses.partition(":")
        if getattr(import_module(module), name)(spec) is not None:
            return parts.whole
    return parts


# evaluation as parts is STAGE_DEFS["evaluate"] (issue 31, docs/design/partitioned-evaluate.md)
PARTITIONED_EVALUATE = STAGE_DEFS["evaluate"]


def run_in_process(stage: Stage, ctx: StageContext, upstream: StageResult | None = None
                   ) -> StageResult:
    """Every part of ``stage`` in this process, in order (the map parts over their units one
    after another), as the lifecycle DAG runs them as tasks; returns the reduce's result."""
    result: StageResult = run_parts(stage, ctx, upstream)[stage.reduce.name]
    return result


def run_parts(stage: Stage, ctx: StageContext, upstream: StageResult | None = None
              ) -> dict[str, Any]:
    """:func:`run_in_process`, returning every part's result by part name."""
    results: dict[str, Any] = {UPSTREAM: upstream}
    for part in stage.parts:
        fn = part.function()
        extra = [results[t] for t in part.takes]
        if part.kind == "map":
            units = results[part.over] if part.over else []
            results[part.name] = [fn(ctx, unit, *extra) for unit in units]
        else:
            results[part.name] = fn(ctx, *extra)
    return results
