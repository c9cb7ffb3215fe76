"""Input for the refresh benchmarks (bench/refresh.py, bench/refresh_scheduler.py): the
sample's reviews cycled to a size, and the new reviews a refresh finds appended."""

from __future__ import annotations

import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cycled_sample(inbox: Path, datasets: Path, n: int) -> list[Path]:
    """The sample's reviews cycled to ``n`` lines (half positive, half negative) and the
    sample spec with its gate lowered to D (cycled copies are not the sample's quality)."""
    import yaml

    from bench.run import corpus

    folder = inbox / "zh_shopping_reviews"
    folder.mkdir(parents=True, exist_ok=True)
    texts = corpus(n)
    (folder / "pos.txt").write_text("\n".join(texts[: n // 2]) + "\n", encoding="utf-8")
    (folder / "neg.txt").write_text("\n".join(texts[n // 2:]) + "\n", encoding="utf-8")
    spec = yaml.safe_load((ROOT / "datasets" / "zh_shopping_reviews.yaml").read_text("utf-8"))
    spec.setdefault("quality", {}).setdefault("gate", {})["min_grade"] = "D"
    datasets.mkdir(parents=True, exist_ok=True)
    (datasets / "zh_shopping_reviews.yaml").write_text(
        yaml.safe_dump(spec, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return [folder / "neg.txt", folder / "pos.txt"]


def new_reviews(n: int, seed: int = 11, start: int = 0) -> list[str]:
    """``n`` distinct new reviews (words that say their sentiment, numbered from
    ``start``)."""
    rng = random.Random(seed)
    good = ["很好", "满意", "喜欢", "推荐", "超值", "好用", "漂亮", "舒服"]
    things = ["手机", "耳机", "衣服", "鞋子", "台灯", "水杯", "书包", "键盘", "屏幕", "包装"]
    return [f"第{i}次回购{rng.choice(things)}{rng.choice(good)}，{rng.choice(things)}"
            f"{rng.choice(good)}，订单{rng.randrange(10**9):09d}"
            for i in range(start, start + n)]
