"""The stage contract (lifecycle/contract.py): every declared part resolves to a function that
takes what the declaration says it takes, a malformed declaration is refused, the parts run in
process in the declared data flow, and the DAGs' tasks are the declared parts."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from lifecycle.contract import (
    ORDER,
    STAGE_DEFS,
    UPSTREAM,
    WHOLE_PREPROCESS,
    Part,
    Stage,
    declared,
    run_in_process,
)
from lifecycle.spec import STAGES

pytestmark = pytest.mark.unit


def test_the_contract_declares_every_stage_in_the_spec_order() -> None:
    assert ORDER == STAGES
    # preprocessing's deduplication partitioned; the global deduplicate only in its whole,
    # whose parts a task finds by name too (runtime.run_part)
    pre = STAGE_DEFS["preprocess"]
    assert "deduplicate" not in [p.name for p in pre.parts] and pre.whole is WHOLE_PREPROCESS
    assert pre.part("deduplicate") is WHOLE_PREPROCESS.part("deduplicate")
    assert pre.part("apply").call.endswith(":apply_unit")  # the stage's own first
    with pytest.raises(KeyError, match="no part 'nowhere'"):
        pre.part("nowhere")


def test_only_near_dedup_before_exact_dedup_runs_the_global_deduplicate() -> None:
    from lifecycle.spec import load_spec

    root = Path(__file__).resolve().parents[2] / "datasets"
    texts, images = (load_spec(root / f"{n}.yaml").spec
                     for n in ("zh_shopping_reviews", "digit_images"))
    assert declared("preprocess", texts) is STAGE_DEFS["preprocess"]
    assert "near_dedup" in images.preprocess.steps
    assert declared("preprocess", images) is STAGE_DEFS["preprocess"]  # imageparts
    exact_only = images.model_copy(update={"preprocess": images.preprocess.model_copy(
        update={"steps": ["normalise", "exact_dedup"]})})
    assert declared("preprocess", exact_only) is STAGE_DEFS["preprocess"]
    near_first = texts.model_copy(update={"preprocess": texts.preprocess.model_copy(
        update={"steps": ["normalise", "near_dedup", "exact_dedup"]})})
    assert declared("preprocess", near_first) is WHOLE_PREPROCESS
    # a table's near duplicates are the parts' (clean makes its keys as a text's)
    table = texts.model_copy(update={"modality": "table"})
    assert "near_dedup" in table.preprocess.steps
    assert declared("preprocess", table) is STAGE_DEFS["preprocess"]


@pytest.mark.parametrize("stage", STAGES)
def test_every_part_resolves_to_a_function_taking_its_declared_inputs(stage: str) -> None:
    every = [STAGE_DEFS[stage], *([STAGE_DEFS[stage].whole] if STAGE_DEFS[stage].whole else [])]
    for part in (p for s in every for p in (*s.parts, *(s.people.parts if s.people else ()))):
        params = list(inspect.signature(part.function()).parameters.values())
        given = 1 + (part.kind == "map") + len(part.takes)  # ctx, the unit, what it takes
        required = [p for p in params if p.default is inspect.Parameter.empty
                    and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        assert len(required) <= given <= len(params), (stage, part.name, params)


def _p(name: str, kind: Any, over: str | None = None, *takes: str) -> Part:
    return Part(name, f"{__name__}:_{name}", kind, over=over, takes=takes)


@pytest.mark.parametrize(("parts", "says"), [
    ((), "exactly one reduce"),
    ((_p("a", "reduce"), _p("b", "reduce")), "exactly one reduce"),
    ((_p("a", "reduce"), _p("b", "plan")), "exactly one reduce"),
    ((_p("a", "plan"), _p("a", "reduce")), "repeat"),
    ((_p("a", "map", "nowhere"), _p("b", "reduce")), "maps over 'nowhere'"),
    ((_p("a", "map", UPSTREAM), _p("b", "reduce")), "maps over 'upstream'"),
    ((_p("a", "plan"), _p("b", "reduce", None, "later")), "takes ['later']"),
])
def test_a_malformed_declaration_is_refused(parts: tuple[Part, ...], says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("[", r"\[").replace("]", r"\]")):
        Stage("broken", parts)


CALLS: list[tuple[str, Any]] = []


def _plan(ctx: Any, upstream: Any) -> list[dict[str, Any]]:
    CALLS.append(("plan", upstream))
    return [{"index": i, "label": f"unit {i}", "n": n} for i, n in enumerate(upstream)]


def _clean(ctx: Any, unit: dict[str, Any]) -> dict[str, Any]:
    CALLS.append(("clean", unit["index"]))
    return {**unit, "n": unit["n"] * 10}


def _decide(ctx: Any, cleaned: list[dict[str, Any]]) -> int:
    CALLS.append(("decide", len(cleaned)))
    return max(u["n"] for u in cleaned)


def _apply(ctx: Any, unit: dict[str, Any], top: int) -> int:
    CALLS.append(("apply", unit["index"]))
    return top - unit["n"]


def _merge(ctx: Any, upstream: Any, applied: list[int], top: int) -> dict[str, Any]:
    CALLS.append(("merge", ctx))
    return {"upstream": upstream, "applied": applied, "top": top}


def test_a_people_pass_is_a_sequence_of_its_own_whose_tasks_do_not_repeat_the_first() -> None:
    first = (_p("a", "plan"), _p("b", "reduce", None, "a"))
    ok = Stage("ok", first, people=Stage("ok", (_p("c", "plan", None, UPSTREAM),
                                                _p("d", "reduce", None, "c"))))
    assert ok.part("d").name == "d" and ok.part("a").name == "a"
    with pytest.raises(ValueError, match=r"parts \['b'\] repeat"):
        Stage("broken", first, people=Stage("broken", (_p("b", "reduce", None, UPSTREAM),)))
    with pytest.raises(ValueError, match="no people pass"):
        Stage("broken", first, people=ok)


def test_annotation_runs_as_parts_for_a_spec_the_parts_label_and_whole_for_the_others(
        repo: Path) -> None:
    """contract.declared: the parts for every spec (text with a label field or topics,
    images), with their people pass; evaluate's single task for images."""
    from lifecycle.contract import SINGLE_EVALUATE, declared
    from lifecycle.spec import load_spec

    text = load_spec(repo / "datasets" / "zh_shopping_reviews.yaml").spec
    images = load_spec(repo / "datasets" / "digit_images.yaml").spec
    parts = declared("annotate", text)
    assert parts is STAGE_DEFS["annotate"] and parts.fans_out
    assert parts.people is not None and parts.people.reduce.name == "finish"
    assert [p.name for p in parts.people.parts] == [
        "finish_plan", "finish_label", "finish_train", "finish_votes", "finish_apply",
        "finish_check", "finish_flag", "finish"]
    assert declared("annotate", images) is parts
    topics_on = text.annotate.topics.model_copy(update={"enabled": True})
    for topics in ({"annotate": text.annotate.model_copy(update={"topics": topics_on})},
                   {"schema_": text.schema_.model_copy(update={"label_field": None})}):
        assert declared("annotate", text.model_copy(update=topics)) is parts
    assert declared("evaluate", images) is SINGLE_EVALUATE


def test_run_in_process_follows_the_declared_data_flow() -> None:
    stage = Stage("toy", (
        _p("plan", "plan", None, UPSTREAM), _p("clean", "map", "plan"),
        _p("decide", "global", None, "clean"), _p("apply", "map", "clean", "decide"),
        _p("merge", "reduce", None, UPSTREAM, "apply", "decide")))
    CALLS.clear()
    out = run_in_process(stage, "ctx", [1, 3, 2])
    assert out == {"upstream": [1, 3, 2], "applied": [20, 0, 10], "top": 30}
    assert CALLS == [("plan", [1, 3, 2]), ("clean", 0), ("clean", 1), ("clean", 2),
                     ("decide", 3), ("apply", 0), ("apply", 1), ("apply", 2), ("merge", "ctx")]


def test_the_lifecycle_dag_has_a_task_per_declared_part(repo: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(repo / "dags"))
    dag = bag.dags["granary_zh_shopping_reviews"]
    tasks = {t for t in dag.task_ids if "." in t}
    declared = {f"{s.name}.{p.name}" for s in STAGE_DEFS.values() for p in s.parts}
    assert tasks == declared
    refresh = bag.dags["granary_zh_shopping_reviews_refresh"]
    assert set(refresh.task_ids) == {"collect_to_evaluate", "publish", "end"}


def test_a_process_that_imports_only_the_people_trigger_finds_airflows_connections() -> None:
    """The triggerer runs WaitForPeople's trigger in a process that never imports the
    runtime: the lifecycle's connection lookup must be Airflow's there too."""
    import json
    import os
    import subprocess
    import sys

    code = ("import granary.people\n"
            "from lifecycle.annotate import labelstudio\n"
            "print(labelstudio.server('granary_ls').url)\n")
    env = {**os.environ, "AIRFLOW_CONN_GRANARY_LS": json.dumps(
        {"conn_type": "http", "host": "http://label-studio:8080", "password": "t0ken"})}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "http://label-studio:8080"
