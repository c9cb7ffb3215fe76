"""New reviews for the refresh benchmarks (bench/refresh.py, bench/refresh_scheduler.py):
what a refresh finds appended to the sample's file."""

from __future__ import annotations

import random


def new_reviews(n: int, seed: int = 11, start: int = 0) -> list[str]:
    """``n`` distinct new reviews (words that say their sentiment, numbered from
    ``start``)."""
    rng = random.Random(seed)
    good = ["很好", "满意", "喜欢", "推荐", "超值", "好用", "漂亮", "舒服"]
    things = ["手机", "耳机", "衣服", "鞋子", "台灯", "水杯", "书包", "键盘", "屏幕", "包装"]
    return [f"第{i}次回购{rng.choice(things)}{rng.choice(good)}，{rng.choice(things)}"
            f"{rng.choice(good)}，订单{rng.randrange(10**9):09d}"
            for i in range(start, start + n)]
