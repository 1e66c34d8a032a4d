"""The demo's knowledge: ISO 3166-2 subdivisions from `pycountry`, as passages and questions.

Every subdivision becomes one passage,

    "Bayern is a state of Germany. Its ISO 3166-2 code is DE-BY."

and, when its name is unambiguous, two questions: "Which country is Bayern in?" -> "Germany" and
"What is the code of Bayern?" -> "DE-BY". (Not "What is the ISO code of ...": with the word "ISO"
MiniLM ranks the asked region's passage first for 88% of the held-out code questions, without it
for 95%; 76% vs 94% in the counterfactual world. Measured for this demo, on held-out questions
before the development split existed; kept since, not re-tuned.) Regions (not questions) are
split three ways, round robin over the countries (`heldout_split`): test regions, development
regions and training regions, so a test or development question is about a region that no training
question mentions: the only way to answer it is to read the retrieved passage. Every choice made
while looking at results (recipe, settings) is judged on the development questions; the test
questions are asked once, at the end of a run.

The counterfactual world keeps every region but moves it to another country, consistently: a fixed
derangement of the countries maps country A to country B != A, and region "A-XX" of A becomes
region "B-XX" of B. Since the map is a permutation, codes stay unique in the new world. A second
such world (`training_world`, another derangement that disagrees with the first on every country)
is for training only: asked there too, the generator learns to answer from the passage.

Pure Python: no framework, no model. `build_knowledge(quick=..., seed=...)` is the entry point.

    >>> kb = build_knowledge(quick=True, seed=0)
    >>> kb.passages[0]["title"] + TITLE_SEP + kb.passages[0]["text"] == kb.regions[0].text
    True
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field, replace

# The slice used by `--quick`: a few countries with a few hundred regions between them.
QUICK_COUNTRIES = ("DE", "JP", "US", "CA", "BR", "IN", "MX", "AU", "ES", "AR", "NG", "CN")
HELDOUT_REGIONS = {False: 250, True: 48}  # test regions (two questions each), by `quick`
DEV_REGIONS = {False: 125, True: 24}  # development regions (two questions each), by `quick`

# pycountry's official names put the key word first ("Korea, Republic of"); questions read better
# with the usual order. Only these rewrites; everything else is pycountry's `common_name` or `name`.
_COUNTRY_NAMES = {
    "CD": "Democratic Republic of the Congo",
    "FM": "Micronesia",
    "KR": "South Korea",
    "PS": "Palestine",
    "SH": "Saint Helena, Ascension and Tristan da Cunha",
    "VG": "British Virgin Islands",
    "VI": "U.S. Virgin Islands",
    "IR": "Iran",
    "MD": "Moldova",
    "TW": "Taiwan",
}
# Countries read with "the" in a sentence ("a state of the United States"); the answer stays bare.
_WITH_THE = {"BS", "GM", "KM", "MV", "NL", "PH", "VA"}
_WITH_THE_WORDS = ("United ", "Republic", "Islands", "Emirates", "Federation", "Democratic")


@dataclass(frozen=True)
class Region:
    """One ISO 3166-2 subdivision."""

    code: str  # "DE-BY"
    name: str  # "Bayern" (pycountry's name without a bracketed alternative)
    kind: str  # "state" (pycountry's type, lower-cased)
    country: str  # "Germany"
    country_code: str  # "DE"

    @property
    def text(self) -> str:
        """The passage as one sentence: "Bayern is a state of Germany. Its ISO 3166-2 code is DE-BY." """
        return f"{self.name} {self.predicate}"

    @property
    def predicate(self) -> str:
        """The passage after the name ("is a state of Germany. Its ISO 3166-2 code is DE-BY.")."""
        vowel = self.kind[:1] in "aeio" or (self.kind.startswith("u") and not self.kind.startswith("uni"))
        article = "an" if vowel else "a"
        the = self.country_code in _WITH_THE or any(w in self.country for w in _WITH_THE_WORDS)
        country = f"the {self.country}" if the else self.country
        return f"is {article} {self.kind} of {country}. Its ISO 3166-2 code is {self.code}."


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    region: int  # index into `KnowledgeBase.regions`
    kind: str  # "country" or "code"


@dataclass
class KnowledgeBase:
    regions: list[Region]
    train: list[Question]
    test: list[Question]  # asked once, at the end: the reported result
    dev: list[Question] = field(default_factory=list)  # for every choice made while looking at results
    counterfactual: list[Region] = field(default_factory=list)  # same order as `regions`
    # A second counterfactual world, for training only (counterfactual augmentation): the training
    # questions are asked in it too, with its passages and answers, so that the generator learns
    # to answer from the passage rather than from what a region's name suggests. It moves every
    # country somewhere else than `counterfactual` does, so the hot swap's facts stay unseen.
    training_world: list[Region] = field(default_factory=list)

    @property
    def passages(self) -> list[dict]:
        return passages_of(self.regions)

    @property
    def counterfactual_passages(self) -> list[dict]:
        return passages_of(self.counterfactual)

    @property
    def training_world_passages(self) -> list[dict]:
        return passages_of(self.training_world)

    def answer_in(self, world: list[Region], question: Question) -> str:
        """The answer to `question` in `world` (the real regions or the counterfactual ones)."""
        region = world[question.region]
        return region.country if question.kind == "country" else region.code


# Title and text are joined by a space, both when the index embeds a passage (the builder reads
# `title + " " + text`) and when the retriever writes the generator's context
# (`title + title_sep + text`, with `RagConfig(title_sep=TITLE_SEP)`): each reads the sentence
# "Bayern is a state of Germany. ...", with no repeated name to embed or to read.
TITLE_SEP = " "


def passages_of(regions: list[Region]) -> list[dict]:
    """Passages in the layout of the library's index builder: `title` (the name) and `text`."""
    return [{"title": r.name, "text": r.predicate} for r in regions]


def _country_name(alpha_2: str) -> str:
    import pycountry

    if alpha_2 in _COUNTRY_NAMES:
        return _COUNTRY_NAMES[alpha_2]
    country = pycountry.countries.get(alpha_2=alpha_2)
    return getattr(country, "common_name", None) or country.name


def _clean_name(name: str) -> str:
    # "Cardiff [Caerdydd GB-CRD]" -> "Cardiff": the bracket holds an alternative name (and
    # sometimes another code, which would leak an answer into the question).
    return re.sub(r"\s*\[.*?\]\s*$", "", name).strip()


def _name_key(name: str) -> str:
    """What the uncased question encoder sees of a name: lower case, accents stripped."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def load_regions(countries: tuple[str, ...] | None = None) -> list[Region]:
    """All subdivisions (or those of `countries`), sorted by code so the order never depends on pycountry's."""
    import pycountry

    regions = [
        Region(
            code=s.code,
            name=_clean_name(s.name),
            kind=s.type.lower(),
            country=_country_name(s.country_code),
            country_code=s.country_code,
        )
        for s in pycountry.subdivisions
        if countries is None or s.country_code in countries
    ]
    return sorted(regions, key=lambda r: r.code)


def questions_for(index: int, region: Region) -> list[Question]:
    return [
        Question(f"Which country is {region.name} in?", region.country, index, "country"),
        Question(f"What is the code of {region.name}?", region.code, index, "code"),
    ]


def country_map(regions: list[Region], seed: int, avoid: dict | None = None) -> dict:
    """A derangement of the countries (country A -> country B != A), drawn with `seed`.

    With `avoid` (another such map), also B != avoid[A] for every A: the training world and the
    evaluation world never agree on where a country's regions go.
    """
    codes = sorted({r.country_code for r in regions})
    if len(codes) < 2 or (avoid is not None and len(codes) < 3):
        raise ValueError("a counterfactual world needs regions of at least two countries (three with `avoid`)")
    rng = random.Random(seed)
    for _ in range(10_000):
        shuffled = codes[:]
        rng.shuffle(shuffled)
        # A cyclic shift of a shuffled list is a derangement: nobody keeps their country.
        target = {a: b for a, b in zip(shuffled, shuffled[1:] + shuffled[:1])}
        if avoid is None or all(target[a] != avoid.get(a) for a in codes):
            return target
    raise RuntimeError("no derangement found that avoids the given map")


def counterfactual_world(regions: list[Region], seed: int, avoid: dict | None = None) -> list[Region]:
    """Every region moved to another country by one fixed derangement of the countries (`country_map`)."""
    target = country_map(regions, seed, avoid)
    names = {r.country_code: r.country for r in regions}
    moved = []
    for r in regions:
        new = target[r.country_code]
        moved.append(replace(r, country_code=new, country=names[new], code=new + r.code[len(r.country_code) :]))
    assert len({r.code for r in moved}) == len(moved), "counterfactual codes must stay unique"
    return moved


def world_map(regions: list[Region], world: list[Region]) -> dict:
    """The country map that turned `regions` into `world`."""
    return {r.country_code: w.country_code for r, w in zip(regions, world)}


def heldout_split(regions: list[Region], askable: list[int], n_heldout: int, seed: int) -> tuple[list[int], list[int]]:
    """`n_heldout` askable regions drawn evenly across countries (round robin), and the rest.

    A uniform draw would be dominated by the few countries with hundreds of subdivisions (Slovenia
    212 municipalities, France 100+ departments): the evaluation would mostly ask about them, and
    a model could score by guessing those countries from how a name sounds. Round robin over a
    shuffled list of countries asks about as many countries as it can, each about equally often.
    """
    rng = random.Random(seed)
    by_country: dict[str, list[int]] = {}
    for i in askable:
        by_country.setdefault(regions[i].country_code, []).append(i)
    countries = sorted(by_country)
    rng.shuffle(countries)
    for c in countries:
        rng.shuffle(by_country[c])
    heldout: list[int] = []
    rank = 0
    while len(heldout) < n_heldout and any(len(v) > rank + 1 for v in by_country.values()):
        # keep at least one askable region of every country for training
        for c in countries:
            if len(heldout) < n_heldout and len(by_country[c]) > rank + 1:
                heldout.append(by_country[c][rank])
        rank += 1
    held = set(heldout)
    return sorted(heldout), sorted(i for i in askable if i not in held)


def build_knowledge(quick: bool = False, seed: int = 0, heldout_regions: int | None = None,
                    dev_regions: int | None = None) -> KnowledgeBase:
    """Passages for every region; questions for the regions whose name is unambiguous; a region split
    into test, development and training regions (test first, then development from what is left,
    both round robin over the countries, every country keeping a training region).

    Names shared by several regions ("Saint George", "La Rioja", and "Córdoba"/"Cordoba" once the
    uncased encoder strips accents) keep their passages but get no question: the question could
    not say which region it means. Two counterfactual worlds: `counterfactual` for the hot swap
    and `training_world` for training (see `KnowledgeBase`), which disagree on every country.
    """
    regions = load_regions(QUICK_COUNTRIES if quick else None)
    counts = Counter(_name_key(r.name) for r in regions)
    askable = [i for i, r in enumerate(regions) if counts[_name_key(r.name)] == 1]
    n_heldout = HELDOUT_REGIONS[quick] if heldout_regions is None else heldout_regions
    n_dev = DEV_REGIONS[quick] if dev_regions is None else dev_regions
    test_ids, rest = heldout_split(regions, askable, n_heldout, seed)
    dev_ids, train_ids = heldout_split(regions, rest, n_dev, seed + 1)
    train = [q for i in train_ids for q in questions_for(i, regions[i])]
    dev = [q for i in dev_ids for q in questions_for(i, regions[i])]
    test = [q for i in test_ids for q in questions_for(i, regions[i])]
    counterfactual = counterfactual_world(regions, seed)
    training_world = counterfactual_world(regions, seed + 1, avoid=world_map(regions, counterfactual))
    return KnowledgeBase(
        regions=regions, train=train, dev=dev, test=test, counterfactual=counterfactual, training_world=training_world
    )
