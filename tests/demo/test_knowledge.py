"""The demo's knowledge base: the region split and the three worlds (pure Python, no model)."""

from __future__ import annotations

from collections import Counter

import pytest

pytest.importorskip("pycountry")

from demo.knowledge import build_knowledge, counterfactual_world, load_regions, world_map  # noqa: E402


@pytest.fixture(scope="module")
def kb():
    return build_knowledge(quick=False, seed=0)


def test_heldout_regions_never_appear_in_a_training_question(kb):
    heldout = {q.region for q in kb.heldout}
    train = {q.region for q in kb.train}
    assert heldout and train and not heldout & train
    # names of askable regions are unique, so no training question names a held-out region either
    heldout_names = {kb.regions[i].name for i in heldout}
    assert not any(kb.regions[q.region].name in heldout_names for q in kb.train)
    assert all(kb.regions[q.region].name in q.question for q in kb.train + kb.heldout)
    assert len(heldout) == 250 and len(kb.heldout) == 500


def test_heldout_split_is_spread_over_countries(kb):
    per_country = Counter(kb.regions[q.region].country_code for q in kb.heldout if q.kind == "country")
    # round robin: as many countries as possible, none asked about much more than another
    assert len(per_country) >= 120, len(per_country)
    assert max(per_country.values()) - min(per_country.values()) <= 1, per_country.most_common(3)
    # every country that has a held-out region keeps a training region
    train_countries = {kb.regions[q.region].country_code for q in kb.train}
    assert set(per_country) <= train_countries


def test_worlds_move_every_country_and_disagree_with_each_other(kb):
    real = {r.country_code for r in kb.regions}
    swap, train = world_map(kb.regions, kb.counterfactual), world_map(kb.regions, kb.training_world)
    assert set(swap) == set(train) == real
    assert all(swap[c] != c and train[c] != c and swap[c] != train[c] for c in real)
    for world in (kb.counterfactual, kb.training_world):
        assert len({r.code for r in world}) == len(world)  # codes stay unique
        assert [r.name for r in world] == [r.name for r in kb.regions]
        assert all(w.code.split("-", 1)[1] == r.code.split("-", 1)[1] for w, r in zip(world, kb.regions))


def test_answers_follow_the_world(kb):
    q = next(q for q in kb.heldout if q.kind == "code")
    assert kb.answer_in(kb.regions, q) == kb.regions[q.region].code
    assert kb.answer_in(kb.counterfactual, q) == kb.counterfactual[q.region].code != kb.regions[q.region].code


def test_a_world_needs_two_countries():
    one = [r for r in load_regions(("DE",))]
    with pytest.raises(ValueError, match="at least two countries"):
        counterfactual_world(one, seed=0)
