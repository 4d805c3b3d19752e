import random
from collections import Counter

from logstore.storage.service import pick_ensemble


def _nodes(zones):
    return [{"nodeId": f"n{i}", "endpoint": f"h{i}:1", "zone": z} for i, z in enumerate(zones)]


def test_zone_spread_never_doubles_a_zone_while_another_is_empty():
    live = _nodes(["a", "a", "a", "b", "b", "c"])
    for seed in range(50):
        picked = pick_ensemble(live, 3, "zone-spread", random.Random(seed))
        assert Counter(n["zone"] for n in picked) == Counter({"a": 1, "b": 1, "c": 1})
    picked = pick_ensemble(_nodes(["a", "a", "b"]), 3, "zone-spread", random.Random(1))
    assert sorted(n["zone"] for n in picked) == ["a", "a", "b"]


def test_random_picks_distinct_nodes():
    live = _nodes(["a"] * 5)
    for seed in range(20):
        picked = pick_ensemble(live, 3, "random", random.Random(seed))
        assert len({n["nodeId"] for n in picked}) == 3
