"""Annotation machinery on small inputs with known answers: rules, conflict resolution,
agreement computed by hand, Label Studio's formats checked with label-studio-sdk, topics."""

from __future__ import annotations

from collections import Counter

import pytest
from label_studio_sdk.label_interface import LabelInterface

from lifecycle.labels import labelling
from lifecycle.spec import LabelDef, Rule

pytestmark = pytest.mark.unit
GUIDE = [LabelDef(name="pos", description="satisfied"), LabelDef(name="neg")]


def test_rules_label_count_coverage_and_abstain_on_conflict() -> None:
    rules = [Rule(name="refund", label="neg", keywords=["退货", "refund"]),
             Rule(name="love", label="pos", regex=r"喜欢|love(d)?")]
    texts = ["想退货", "很喜欢", "喜欢但退货了", "Refund please", "一般", None]
    existing = [None, "pos", None, "pos", None, None]
    labels, deciders, stats = labelling.apply_rules(texts, rules, existing)
    assert labels == ["neg", "pos", None, "neg", None, None]
    assert deciders == ["refund", "love", None, "refund", None, None]
    refund, love = stats
    assert (refund.matched, refund.conflicts, love.matched, love.conflicts) == (3, 1, 2, 1)
    assert refund.coverage == pytest.approx(3 / 6)
    assert (refund.agrees, refund.disagrees, refund.accuracy) == (0, 1, 0.0)
    assert (love.agrees, love.disagrees, love.accuracy) == (1, 0, 1.0)


@pytest.mark.parametrize(("votes", "policy", "tie", "expected"), [
    ({"a": 2, "b": 1}, "majority", "drop", ("a", "majority", 0.6667)),
    ({"a": 1, "b": 1}, "majority", "drop", (None, "tie_dropped", 0.5)),
    ({"a": 1, "b": 1}, "majority", "people", ("b", "tie_people", 0.5)),
    ({"a": 1, "b": 1}, "majority", "first", ("b", "tie_kept", 0.5)),
    ({"a": 3, "b": 1}, "drop", "drop", (None, "drop", 0.0)),
    ({"a": 3, "b": 1}, "people", "drop", ("b", "people", 0.25)),
])
def test_conflicts_resolve_per_the_policy(votes: dict[str, int], policy: str, tie: str,
                                          expected: tuple[str | None, str, float]) -> None:
    r = labelling.resolve(Counter(votes), policy, tie, current="b")
    assert (r.label, r.outcome, r.confidence) == expected


def test_cohen_kappa_equals_the_hand_computation() -> None:
    a = ["y", "y", "y", "y", "y", "n", "n", "n", "n", "n"]
    b = ["y", "y", "y", "n", "n", "n", "n", "n", "n", "y"]
    # by hand: observed agreement 7/10; a says y 5/10, b says y 4/10, so chance agreement is
    # 0.5 * 0.4 + 0.5 * 0.6 = 0.5; kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    assert labelling.cohen_kappa(a, b) == pytest.approx(0.4)
    ratings = {f"t{i}": {"ana": x, "bo": y} for i, (x, y) in enumerate(zip(a, b, strict=True))}
    ratings["t10"] = {"ana": "y"}  # rated once: not part of agreement
    got = labelling.agreement(ratings)
    assert (got["method"], got["overall"], got["items_with_several"]) == ("cohen", 0.4, 10)
    assert got["per_label"] == {"n": 0.4, "y": 0.4}  # two labels: each against the rest
    assert got["unanimous_share"] == 0.7


def test_fleiss_kappa_matches_the_published_example() -> None:
    # Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories -> 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
             [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
             [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    cats = ["1", "2", "3", "4", "5"]
    items = [[c for c, n in zip(cats, row, strict=True) for _ in range(n)] for row in table]
    assert labelling.fleiss_kappa(items, cats) == pytest.approx(0.210, abs=5e-4)
    three = {f"t{i}": {f"r{j}": lab for j, lab in enumerate(row[:3])}
             for i, row in enumerate(items)}
    assert labelling.agreement(three)["method"] == "fleiss"


def _export() -> list[dict]:  # type: ignore[type-arg]
    """A Label Studio JSON export: three annotators, users as ids or objects, a cancelled
    annotation, and a task Granary did not export."""
    def ann(i: int, who: object, labels: list[str], cancelled: bool = False) -> dict:  # type: ignore[type-arg]
        return {"id": i, "completed_by": who, "was_cancelled": cancelled, "ground_truth": False,
                "lead_time": 3.5, "created_at": "2026-11-28T08:00:00.000000Z", "task": 1,
                "project": 3, "result": [] if cancelled else [
                    {"id": f"r{i}", "from_name": "label", "to_name": "text", "type": "choices",
                     "origin": "manual", "value": {"choices": labels}}]}
    return [
        {"id": 1, "data": {"text": "很好", "granary_id": "a"}, "meta": {}, "drafts": [],
         "annotations": [ann(1, 1, ["pos"]), ann(2, {"id": 2, "email": "bo@x"}, ["pos"]),
                         ann(3, 3, ["neg"]), ann(4, 4, [], cancelled=True)],
         "predictions": [], "total_annotations": 3, "cancelled_annotations": 1},
        {"id": 2, "data": {"text": "很差", "granary_id": "b"},
         "annotations": [ann(5, 1, ["neg"])]},
        {"id": 3, "data": {"text": "not ours"}, "annotations": [ann(6, 1, ["pos"])]},
    ]


def test_label_studio_export_keeps_every_label_and_annotator() -> None:
    got, problems = labelling.read_export(_export())
    assert [(c.record_id, c.annotator, c.labels) for c in got] == [
        ("a", "1", ["pos"]), ("a", "bo@x", ["pos"]), ("a", "3", ["neg"]), ("b", "1", ["neg"])]
    assert len(problems) == 1 and "task 3 has no data.granary_id" in problems[0]
    config = LabelInterface(labelling.labelling_config(GUIDE, "single_label"))
    for task in _export()[:2]:
        for a in task["annotations"]:
            if not a["was_cancelled"]:
                assert config.validate_annotation(a)


def test_tasks_with_predictions_fit_the_labelling_config() -> None:
    config_xml = labelling.labelling_config(GUIDE, "single_label")
    assert 'hint="satisfied"' in config_xml
    config = LabelInterface(config_xml)
    tasks = labelling.tasks([{"id": "a", "text": "很好", "suggested": "pos", "confidence": 0.7},
                             {"id": "b", "text": "一般", "suggested": None}], "text", "m1")
    assert tasks[0]["predictions"][0]["score"] == 0.7 and "predictions" not in tasks[1]
    for t in tasks:
        assert config.validate_task({"data": t["data"]})
        assert all(config.validate_prediction(p) for p in t.get("predictions", []))
    wrong = {**tasks[0]["predictions"][0], "result": [
        {**tasks[0]["predictions"][0]["result"][0], "value": {"choices": ["meh"]}}]}
    assert not config.validate_prediction(wrong)


def test_span_and_multi_label_configs_and_their_answers() -> None:
    spans = LabelInterface(labelling.labelling_config(
        [LabelDef(name="PER"), LabelDef(name="ORG")], "spans"))
    ner = {"id": 1, "completed_by": 1, "result": [
        {"id": "s1", "from_name": "label", "to_name": "text", "type": "labels",
         "value": {"start": 0, "end": 2, "text": "张三", "labels": ["PER"]}}]}
    assert spans.validate_annotation(ner)
    got, _ = labelling.read_export([{"id": 1, "data": {"text": "张三在阿里", "granary_id": "x"},
                                     "annotations": [ner]}])
    assert got[0].spans == [{"start": 0, "end": 2, "text": "张三", "labels": ["PER"]}]
    multi = labelling.labelling_config(GUIDE, "multi_label")
    assert 'choice="multiple"' in multi and LabelInterface(multi)
    qa = LabelInterface(labelling.labelling_config([], "qa"))
    answer = {"id": 2, "completed_by": 5, "result": [
        {"id": "q1", "from_name": "label", "to_name": "text", "type": "textarea",
         "value": {"text": ["北京"]}}]}
    assert qa.validate_annotation(answer)
    got, _ = labelling.read_export([{"id": 2, "data": {"text": "中国的首都是?",
                                                       "granary_id": "q"},
                                     "annotations": [answer]}])
    assert (got[0].record_id, got[0].labels) == ("q", ["北京"])


def test_topics_separate_two_vocabularies() -> None:
    phones = [f"手机屏幕电池续航{i}很长,充电快,信号好" for i in range(30)]
    food = [f"米饭面条饺子{i}好吃,味道香,分量足" for i in range(30)]
    assigned, described = labelling.topics(phones + food, k=2, seed=0)
    assert len(set(assigned[:30])) == 1 and len(set(assigned[30:])) == 1
    assert assigned[0] != assigned[30]
    assert sorted(t["records"] for t in described) == [30, 30]
    assert all(len(t["terms"]) == 6 for t in described)


def test_the_wait_for_people_fails_or_goes_on_after_its_timeout() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from granary.people import WaitForPeople

    upstream = {"manifest_uri": "s3://w/m", "label_studio": {"project": 4, "ids": ["a", "b"]}}
    late = {"status": "timeout", "done": 1, "total": 2, "error": ""}

    def sensor(on_timeout: str) -> WaitForPeople:
        return WaitForPeople(task_id=f"wait_{on_timeout}", upstream=upstream, conn_id="ls",
                             min_share=1.0, poke_seconds=5, timeout_minutes=30,
                             on_timeout=on_timeout)

    with pytest.raises(AirflowFailException, match=r"labelled 1 of 2 tasks .* project 4 "
                                                   r"within 30 minutes \(needed 100%\)"):
        sensor("fail").execute_complete({}, late)
    assert sensor("continue").execute_complete({}, late)["people"] == late
    nothing = WaitForPeople(task_id="w", upstream={"label_studio": {}}, conn_id="ls",
                            min_share=1.0, poke_seconds=5, timeout_minutes=1,
                            on_timeout="fail").execute({})
    assert nothing["people"] == {"status": "nothing sent"}


def test_project_titles_fit_label_studio_and_stay_apart() -> None:
    """Label Studio refuses project titles over 50 characters (seen on the real server,
    tests/integration/test_label_studio_live.py): a dataset name may be 64."""
    from pydantic import ValidationError

    from lifecycle.annotate.labelstudio import project_title
    from lifecycle.spec import LabelStudioLink

    assert project_title("tagged_reviews") == "Granary: tagged_reviews"
    assert project_title("a" * 41) == "Granary: " + "a" * 41  # exactly 50: kept whole
    long_a, long_b = "a" * 63 + "x", "a" * 63 + "y"
    assert len(project_title(long_a)) == len(project_title(long_b)) == 50
    assert project_title(long_a) != project_title(long_b)
    assert project_title(long_a).startswith("Granary: aaaa")
    with pytest.raises(ValidationError, match="at most 50 characters"):
        LabelStudioLink(connection="ls", project="p" * 51)


# ---- bounding boxes ------------------------------------------------------------------------
def test_box_iou_matching_and_agreement_by_hand() -> None:
    a = labelling.Box("car", 10, 10, 20, 20)
    b = labelling.Box("car", 15, 10, 20, 20)  # overlap 15 x 20 = 300; union 800 - 300 = 500
    assert labelling.iou(a, b) == pytest.approx(300 / 500)
    assert labelling.iou(a, labelling.Box("car", 50, 50, 5, 5)) == 0.0
    far = labelling.Box("car", 22, 10, 20, 20)  # overlap 8 x 20 = 160: IoU 160 / 640 = 0.25
    person = labelling.Box("person", 10, 10, 20, 20)
    # one to one, same label only, at IoU >= 0.5: a-b matches, the person never does
    assert labelling.match([a, person], [far, b], 0.5) == [(0, 1)]
    assert labelling.box_f1([a, person], [b], 0.5) == pytest.approx(2 * 1 / 3)
    assert labelling.box_f1([], [], 0.5) == 1.0


def test_box_consensus_keeps_what_a_majority_drew_and_averages_it() -> None:
    car = labelling.Box("car", 10, 10, 20, 20)
    found = labelling.consensus({
        "ann": [car, labelling.Box("dog", 60, 60, 10, 10)],
        "bo": [labelling.Box("car", 12, 10, 20, 20)],
        "cy": [labelling.Box("car", 11, 13, 20, 23)]}, 0.5)
    [kept] = found.boxes
    assert (kept.label, kept.x, kept.y, kept.width, kept.height) == ("car", 11, 11, 20, 21)
    assert found.disputed == [{"label": "dog", "drawn_by": 1, "of": 3}]
    # pairwise F1: ann-bo 2/3, ann-cy 2/3, bo-cy 1
    assert found.agreement == pytest.approx(round((2 / 3 + 2 / 3 + 1) / 3, 4))
    # two annotators, one saw nothing: no box has a majority
    alone = labelling.consensus({"ann": [car], "bo": []}, 0.5)
    assert alone.boxes == [] and alone.disputed[0]["drawn_by"] == 1
    assert kept.pixels(200, 100) == {"label": "car", "x": 22.0, "y": 11.0, "width": 40.0,
                                     "height": 21.0}


def test_image_configs_and_tasks_fit_label_studio() -> None:
    boxes = LabelInterface(labelling.labelling_config(GUIDE, "boxes", modality="image"))
    region = {"from_name": "label", "to_name": "image", "type": "rectanglelabels",
              "value": {"x": 1, "y": 2, "width": 30, "height": 40, "rotation": 0,
                        "rectanglelabels": ["pos"]}}
    assert boxes.validate_region(region)
    classify = labelling.labelling_config(GUIDE, "single_label", modality="image")
    tasks = labelling.tasks([{"id": "r1", "link": "https://s3.example/a.png", "file_name": "a.png",
                              "suggested": "neg", "confidence": 0.6}], "link", "m",
                            object_name="image")
    assert tasks[0]["data"] == {"image": "https://s3.example/a.png", "granary_id": "r1",
                                "file_name": "a.png"}
    assert LabelInterface(classify).validate_prediction(tasks[0]["predictions"][0])
    got, _ = labelling.read_export([{"id": 1, "data": tasks[0]["data"], "annotations": [
        {"completed_by": 7, "result": [region]}]}])
    assert got[0].boxes == [labelling.Box("pos", 1, 2, 30, 40)] and got[0].labels == ["pos"]
