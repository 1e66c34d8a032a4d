"""Generator inputs from (passage, question) pairs, without re-tokenizing passages on every call.

The published RAG checkpoints were trained on the context string

    (prefix + title + title_sep + text + doc_sep + question).replace("  ", " ")

(title stripped of one pair of surrounding double quotes, `question` decoded from the question
ids with the question encoder's tokenizer, `skip_special_tokens=True`), tokenized by the generator
tokenizer and truncated to `max_combined_length`. The original rebuilt and re-tokenized every
string on every call and padded to `max_combined_length`.

`ContextAssembler` produces exactly the same ids from two pieces tokenized separately:

- the passage piece `prefix + title + title_sep + text`, tokenized once and cached per passage;
- the question piece `doc_sep + question`, tokenized once per question;

then joins `head + passage + question + tail` (the tokenizer's special tokens, learned from the
tokenizer itself), truncates the content as the tokenizer would, and pads to the longest row.

Why this is exact: the join point is a pre-tokenization boundary. The question piece starts with
a space followed by a non-space (default `doc_sep` " // "), and the passage piece must end with a
non-space character; byte-level BPE (BART, GPT-2), Metaspace/Unigram (T5) and WordPiece all split
before such a space and never merge across a split, and `.replace("  ", " ")` cannot act across
the join either. Rows where this does not hold (a passage ending in whitespace, the empty
passage of a missing neighbour, a `doc_sep` not starting with " " + non-space) fall back to
tokenizing the full string, for that row only. On first use the assembler also checks the
tokenizer on probe strings and falls back to strings for every row if the check fails (a
normalizer that strips leading spaces would, for instance), logging a warning once.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import compat
from .arguments import RagInputError, check_question_input_ids, check_retriever_options
from .errors import ContextInputError  # noqa: F401 (re-exported)
from .passage_cache import DEFAULT_CACHE_BYTES, DEFAULT_CACHE_SIZE, PassageCache  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

_PROBES = (
    ("Paris / Paris is the capital and most populous city of France.", " // what is the capital of france?"),
    ("\"Zürich\" / Zürich is a city; it's naïve to ask 1599-1601.", " // who wrote hamlet"),
    ("summarize: Berlin / Berlin is large", " // "),
)


# === The original string format (the reference, and the fallback) ===
def strip_title(title: str) -> str:
    """Remove one leading and one trailing double quote, as the original did (DPR titles are quoted)."""
    return title.removeprefix('"').removesuffix('"')


def passage_piece(title: str, text: str, prefix: Optional[str], title_sep: str) -> str:
    return ("" if prefix is None else prefix) + strip_title(title) + title_sep + text


def question_piece(question: str, doc_sep: str) -> str:
    return doc_sep + question


def context_string(title: str, text: str, question: str, prefix: Optional[str], title_sep: str, doc_sep: str) -> str:
    """The exact string the original fed its generator tokenizer for one (passage, question) pair."""
    return (passage_piece(title, text, prefix, title_sep) + question_piece(question, doc_sep)).replace("  ", " ")


def as_numpy(value: Any) -> Any:
    """A framework tensor (torch, TensorFlow, JAX, ...) as a numpy array, found by what it offers
    (`.detach()`, `.numpy()`, `__array__`) so that no framework is imported; lists stay lists."""
    if isinstance(value, (np.ndarray, list, tuple)):
        return value
    if hasattr(value, "detach"):  # torch: off the graph and onto the CPU first
        value = value.detach()
        if hasattr(value, "cpu"):
            value = value.cpu()
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    if hasattr(value, "__array__"):
        return np.asarray(value)
    return value


def invalid_doc_mask(doc_ids: Any) -> np.ndarray:
    """True where a retrieval slot holds no document (faiss found fewer than n_docs neighbours)."""
    return np.asarray(doc_ids) < 0


# === Assembly ===
class ContextAssembler:
    """Builds `context_input_ids` / `context_attention_mask` for a generator tokenizer.

    Example:
        >>> assembler = ContextAssembler(question_tok, generator_tok, " / ", " // ", 300)
        >>> questions = assembler.decode_questions(question_input_ids)
        >>> pieces = assembler.encode_passages(["Paris"], ["Paris is the capital of France."], prefix=None)
        >>> ids, mask = assembler.assemble(questions, pieces, n_docs=1)

    Passage pieces are cached in one `PassageCache` (`self.cache`) of at most `cache_bytes` bytes
    (default `DEFAULT_CACHE_BYTES`, 256 MiB), keyed by (prefix, doc id), least recently used
    evicted first; `cache_size`, when given, also caps the number of cached passages. Change the
    budget later with `assembler.cache_bytes = n`; read the counters with `cache_stats()`.

    The generator tokenizer may be changed (`add_tokens`, a new normalizer) between calls, not
    during one: the next call notices, drops the cached pieces and the join check, and computes
    a new `piece_fingerprint`.
    """

    def __init__(
        self,
        question_encoder_tokenizer,
        generator_tokenizer,
        title_sep: str,
        doc_sep: str,
        max_combined_length: int,
        cache_size: Optional[int] = DEFAULT_CACHE_SIZE,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        if generator_tokenizer is None:
            raise ValueError("ContextAssembler needs the generator's tokenizer")
        self.question_encoder_tokenizer = question_encoder_tokenizer
        self.generator_tokenizer = generator_tokenizer
        self.title_sep = title_sep
        self.doc_sep = doc_sep
        self.max_combined_length = int(max_combined_length)
        # HF fast tokenizers mutate their Rust state when truncation/padding settings change between
        # calls ("Already borrowed" under threads); every tokenizer call goes through this lock.
        self.lock = threading.RLock()
        self.cache = PassageCache(cache_bytes, cache_size)
        self._template: Optional[tuple[list[int], list[int]]] = None
        self._exact: Optional[bool] = None
        self._fingerprint: Optional[str] = None
        with self.lock:
            self._tokenizer_state = tokenizer_state(generator_tokenizer)
        self.tokenizer_version = 0  # counts changes of the generator tokenizer seen by `current_generation()`

    @classmethod
    def from_config(cls, config, question_encoder_tokenizer, generator_tokenizer, **kwargs) -> "ContextAssembler":
        return cls(
            question_encoder_tokenizer,
            generator_tokenizer,
            config.title_sep,
            config.doc_sep,
            config.max_combined_length,
            **kwargs,
        )

    # --- capability checks (once) ---
    @property
    def exact(self) -> bool:
        """Whether joining separately tokenized pieces reproduces the string path for this tokenizer."""
        if self._exact is None:
            with self.lock:
                if self._exact is None:
                    self._exact = self._check_exact()
        return self._exact

    def _check_exact(self) -> bool:
        sep = self.doc_sep.replace("  ", " ")
        if len(sep) < 2 or sep[0] != " " or sep[1].isspace():
            logger.info("doc_sep %r does not start with ' ' + non-space: contexts use the string path", self.doc_sep)
            return False
        tok = self.generator_tokenizer
        plain = tok("a b c", add_special_tokens=False)["input_ids"]
        full = tok("a b c", add_special_tokens=True)["input_ids"]
        template = None
        for i in range(len(full) - len(plain) + 1):
            if full[i : i + len(plain)] == plain:
                template = (list(full[:i]), list(full[i + len(plain) :]))
                break
        if template is None or len(template[0]) + len(template[1]) >= self.max_combined_length:
            logger.warning("could not place %s's special tokens: contexts use the string path", type(tok).__name__)
            return False
        self._template = template
        for p1, p2 in _PROBES:
            ids1 = np.asarray(tok(p1, add_special_tokens=False)["input_ids"], dtype=np.int64)
            ids2 = np.asarray(tok(p2, add_special_tokens=False)["input_ids"], dtype=np.int64)
            whole = tok(p1 + p2, add_special_tokens=True)["input_ids"]
            for length in (self.max_combined_length, len(whole) - 2, len(template[0]) + len(template[1]) + 3):
                if length <= len(template[0]) + len(template[1]):
                    continue
                expected = tok(p1 + p2, truncation=True, max_length=length)["input_ids"]
                if self._join(ids1, ids2, length).tolist() != list(expected):
                    logger.warning(
                        "%s does not tokenize (passage + question) as the join of its pieces: contexts use "
                        "the slower string path",
                        type(tok).__name__,
                    )
                    return False
        return True

    @property
    def piece_fingerprint(self) -> str:
        """Identifies the passage pieces this assembler makes (what decides the tokenizer's ids, and
        title_sep): stored ids must match it. The same before and after calls with truncation or padding."""
        with self.lock:
            self._refresh()
            if self._fingerprint is None:
                self._fingerprint = tokenizer_fingerprint(self.generator_tokenizer, extra=_piece_recipe(self.title_sep))
            return self._fingerprint

    # --- the cache ---
    def _refresh(self) -> None:
        """Forget what depended on the generator tokenizer if it changed since last seen (under the lock)."""
        state = tokenizer_state(self.generator_tokenizer)
        if state != self._tokenizer_state:
            logger.info("the generator tokenizer changed: cached passage pieces and its fingerprint are dropped")
            self._exact, self._fingerprint = None, None
            self.cache.clear()
            self._tokenizer_state = state
            self.tokenizer_version += 1

    def current_generation(self) -> int:
        """The cache generation a call should read and write (after dropping the cache if the tokenizer changed)."""
        with self.lock:
            self._refresh()
            return self.cache.generation

    @property
    def cache_bytes(self) -> int:
        """The passage cache's budget in bytes (settable; lowering it evicts at once)."""
        return self.cache.max_bytes

    @cache_bytes.setter
    def cache_bytes(self, value: int) -> None:
        self.cache.max_bytes = value

    @property
    def cache_size(self) -> Optional[int]:
        """The most passages the cache holds (None: only the byte budget counts); settable."""
        return self.cache.max_entries

    @cache_size.setter
    def cache_size(self, value: Optional[int]) -> None:
        self.cache.max_entries = value

    def cache_stats(self) -> dict:
        """Counters of the passage cache: hits, misses, evictions, entries, bytes, max_bytes, ..."""
        return self.cache.stats()

    def _join(self, ids1: np.ndarray, ids2: np.ndarray, max_length: int) -> np.ndarray:
        head, tail = self._template
        budget = max_length - len(head) - len(tail)
        n1, n2 = len(ids1), len(ids2)
        if n1 + n2 > budget:
            if self.generator_tokenizer.truncation_side == "left":
                k2 = min(n2, budget)
                k1 = budget - k2
                ids1, ids2 = ids1[n1 - k1 :], ids2[n2 - k2 :]
            else:
                k1 = min(n1, budget)
                ids1, ids2 = ids1[:k1], ids2[: budget - k1]
        return np.concatenate([np.asarray(head, dtype=np.int64), ids1, ids2, np.asarray(tail, dtype=np.int64)])

    # --- pieces ---
    def decode_questions(self, question_input_ids: Any) -> list[str]:
        """The question strings, decoded with the question encoder's tokenizer (special tokens dropped)."""
        if self.question_encoder_tokenizer is None:
            raise ContextInputError("this ContextAssembler has no question encoder tokenizer to decode questions with")
        question_input_ids = check_question_input_ids(as_numpy(question_input_ids), len(self.question_encoder_tokenizer))
        with self.lock:
            return self.question_encoder_tokenizer.batch_decode(question_input_ids, skip_special_tokens=True)

    def encode_passages(self, titles: Sequence[str], texts: Sequence[str], prefix: Optional[str]) -> list[tuple]:
        """One piece per passage: (ids int64 array, None) when joinable, (None, passage string) otherwise."""
        strings = [passage_piece(t, x, prefix, self.title_sep) for t, x in zip(titles, texts)]
        pieces: list = [None] * len(strings)
        joinable = [i for i, s in enumerate(strings) if s and not s[-1].isspace()] if self.exact else []
        if joinable:
            with self.lock:
                encoded = self.generator_tokenizer(
                    [strings[i].replace("  ", " ") for i in joinable], add_special_tokens=False
                )["input_ids"]
            for i, ids in zip(joinable, encoded):
                pieces[i] = (np.asarray(ids, dtype=np.int64), None)
        for i, piece in enumerate(pieces):
            if piece is None:
                pieces[i] = (None, strings[i])
        return pieces

    def cached_passages(
        self,
        doc_ids: np.ndarray,
        prefix: Optional[str],
        fetch: Callable,
        fetch_stored: Optional[Callable] = None,
        generation: Optional[int] = None,
    ) -> list[tuple]:
        """Pieces of passages by id, tokenized on first use; `fetch(ids) -> (titles, texts)` reads misses.

        `fetch_stored(ids) -> [ids array or None]` reads pieces stored beside the passages at index
        time (see `rag_core.build_index`); used for the default prefix only, and only when the
        caller checked that they were made by this tokenizer. Ids < 0 (missing neighbours) are the
        empty passage and are never fetched.

        `generation`: the cache generation (`current_generation()`) taken when the caller chose
        the index that `fetch` reads; when the cache was cleared since (the index was replaced),
        the pieces are made from `fetch` and neither read from nor stored in the cache. Default:
        the current generation.
        """
        if generation is None:
            generation = self.current_generation()
        keys = [int(k) for k in np.asarray(doc_ids).reshape(-1)]
        unique = sorted(set(keys))
        cached = self.cache.get_many([(prefix, k) for k in unique], generation)
        found = {k: cached[(prefix, k)] for k in unique if (prefix, k) in cached}
        missing = [k for k in unique if k not in found]
        if missing:
            pieces = {}
            if fetch_stored is not None and not prefix and self.exact:
                real = [k for k in missing if k >= 0]
                if real:
                    for k, ids in zip(real, fetch_stored(np.asarray(real, dtype=np.int64))):
                        if ids is not None:
                            pieces[k] = (ids, None)
            rest = [k for k in missing if k not in pieces]
            real = [k for k in rest if k >= 0]
            titles, texts = fetch(np.asarray(real, dtype=np.int64)) if real else ([], [])
            by_key = dict(zip(real, zip(titles, texts)))
            empty = ("", "")
            encoded = self.encode_passages(
                [by_key.get(k, empty)[0] for k in rest], [by_key.get(k, empty)[1] for k in rest], prefix
            )
            pieces.update(zip(rest, encoded))
            pieces = [pieces[k] for k in missing]
            found.update(zip(missing, pieces))
            self.cache.put_many((((prefix, k), piece) for k, piece in zip(missing, pieces)), generation)
        return [found[k] for k in keys]

    def clear_cache(self) -> int:
        """Drop every cached piece; calls that began before read and store nothing. Returns the new generation."""
        return self.cache.clear()

    # --- assembly ---
    def assemble(self, questions: Sequence[str], pieces: Sequence[tuple], n_docs: int) -> tuple[np.ndarray, np.ndarray]:
        """Join passage pieces (len(questions) * n_docs, question-major) with their questions.

        Returns `(context_input_ids, context_attention_mask)`, int64 (rows, longest row).
        """
        if len(pieces) != len(questions) * n_docs:
            raise ContextInputError(f"{len(pieces)} passages for {len(questions)} questions x {n_docs} docs")
        tok = self.generator_tokenizer
        if tok.pad_token_id is None:
            raise ContextInputError(f"the generator tokenizer {type(tok).__name__} has no pad token; set one")
        question_strings = [question_piece(q, self.doc_sep).replace("  ", " ") for q in questions]
        rows: list = [None] * len(pieces)
        fallback = [i for i, (ids, _) in enumerate(pieces) if ids is None]
        with self.lock:
            if len(fallback) < len(pieces):
                question_ids = [
                    np.asarray(ids, dtype=np.int64)
                    for ids in tok(question_strings, add_special_tokens=False)["input_ids"]
                ]
            if fallback:
                strings = [(pieces[i][1] + question_strings[i // n_docs]).replace("  ", " ") for i in fallback]
                encoded = tok(strings, truncation=True, max_length=self.max_combined_length)["input_ids"]
                for i, ids in zip(fallback, encoded):
                    rows[i] = np.asarray(ids, dtype=np.int64)
        for i, (ids, _) in enumerate(pieces):
            if ids is not None:
                rows[i] = self._join(ids, question_ids[i // n_docs], self.max_combined_length)
        return pad_rows(rows, tok.pad_token_id, tok.padding_side)

    def reference(self, questions: Sequence[str], titles: Sequence[str], texts: Sequence[str], n_docs: int, prefix):
        """The string path: the original's strings, tokenized whole (padded to the longest)."""
        strings = [
            context_string(titles[i], texts[i], questions[i // n_docs], prefix, self.title_sep, self.doc_sep)
            for i in range(len(titles))
        ]
        with self.lock:
            encoded = self.generator_tokenizer(strings, truncation=True, max_length=self.max_combined_length)["input_ids"]
        return pad_rows(
            [np.asarray(e, dtype=np.int64) for e in encoded],
            self.generator_tokenizer.pad_token_id,
            self.generator_tokenizer.padding_side,
        )


# Parts of a fast tokenizer's definition that decide the ids of `tokenizer(text, add_special_tokens=False)`.
# Left out: "truncation" and "padding" (set and reset by every call that truncates or pads), the
# decoder (decoding only) and the post-processor (special tokens, which passage pieces do not hold).
_ID_DECIDING_PARTS = ("model", "normalizer", "pre_tokenizer", "added_tokens")
# Flags of slow tokenizers that are not about the ids.
_NOT_ID_FLAGS = frozenset({"clean_up_tokenization_spaces", "use_fast", "verbose"})


def _piece_recipe(title_sep: str) -> str:
    """How a passage piece is made, besides the tokenizer: the default (empty) prefix, title_sep, the
    space collapsing, no special tokens. Stored pieces are used only for the default prefix."""
    return f"passage-piece v2: prefix=None title_sep={title_sep!r} replace('  ', ' ') add_special_tokens=False"


def tokenizer_fingerprint(tokenizer, extra: str = "") -> str:
    """A hash of what decides the ids a tokenizer gives a text: its model (vocabulary, merges),
    normalizer, pre-tokenizer, added and special tokens; never its truncation or padding state,
    which the tokenizer changes with every call that truncates or pads. `extra` is hashed too."""
    import hashlib

    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        kept = {part: definition.get(part) for part in _ID_DECIDING_PARTS}
        digest.update(json.dumps(kept, sort_keys=True, ensure_ascii=False).encode())
    else:  # slow tokenizers: the vocabulary (added tokens included), the added tokens' options, the flags
        digest.update(repr(sorted(tokenizer.get_vocab().items())).encode())
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        digest.update(repr(sorted((i, str(t), repr(t)) for i, t in added.items())).encode())
        flags = {k: v for k, v in getattr(tokenizer, "init_kwargs", {}).items() if isinstance(v, bool) and k not in _NOT_ID_FLAGS}
        digest.update(repr(sorted(flags.items())).encode())
    digest.update(repr(sorted((k, str(v)) for k, v in getattr(tokenizer, "special_tokens_map", {}).items())).encode())
    digest.update(extra.encode())
    return digest.hexdigest()


def _component_state(component: Any) -> Any:
    if component is None:
        return None
    try:
        return component.__getstate__()
    except Exception:  # a component that cannot serialize itself: its type and repr
        return f"{type(component).__name__}:{component!r}"


def tokenizer_state(tokenizer) -> tuple:
    """A cheap summary (a few microseconds: it is taken on every call) of what usually changes in a
    tokenizer in use: its vocabulary size with added tokens (`add_tokens`, `add_special_tokens`),
    its normalizer and pre-tokenizer, the backend object itself. When it changes,
    `tokenizer_fingerprint` is recomputed. Not its truncation or padding state. Call it under the
    lock that guards the tokenizer's other calls."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return (type(tokenizer).__name__, len(tokenizer))
    return (
        type(tokenizer).__name__,
        id(backend),
        backend.get_vocab_size(with_added_tokens=True),
        _component_state(backend.normalizer),
        _component_state(backend.pre_tokenizer),
    )


def stored_passage_ids(generator_tokenizer, titles: Sequence[str], texts: Sequence[str], title_sep: str = " / "):
    """Passage pieces to store beside the passages: int32 ids per passage, None where not joinable.

    Returns (pieces, fingerprint); a retriever uses them only when its fingerprint is the same.
    """
    assembler = ContextAssembler(None, generator_tokenizer, title_sep, " // ", 512)
    pieces = assembler.encode_passages(titles, texts, None)
    return [None if ids is None else ids.astype(np.int32) for ids, _ in pieces], assembler.piece_fingerprint


def pad_rows(rows: Sequence[np.ndarray], pad_id: int, side: str = "right") -> tuple[np.ndarray, np.ndarray]:
    """Stack int rows into (n, longest) ids and an attention mask, padding on `side`."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max()) if len(rows) else 0
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        n = len(row)
        start = width - n if side == "left" else 0
        ids[i, start : start + n] = row
        mask[i, start : start + n] = 1
    return ids, mask


# === Bring your own passages ===
def normalize_passages(passages: Any, batch_size: int) -> tuple[list[str], list[str], int]:
    """Flatten per-question passages (strings, (title, text) pairs or {"title", "text"} dicts).

    A plain string is a passage with an empty title. Returns (titles, texts, n_docs), question-major.
    """
    if isinstance(passages, (str, bytes)) or not isinstance(passages, Sequence):
        raise ContextInputError("passages must be a list (one entry per question) of lists of passages")
    if len(passages) != batch_size:
        raise ContextInputError(f"passages holds {len(passages)} lists but there are {batch_size} questions")
    counts = {len(p) if isinstance(p, Sequence) and not isinstance(p, str) else -1 for p in passages}
    if -1 in counts:
        raise ContextInputError("each entry of passages must be a list of passages for that question (not a string)")
    if len(counts) != 1:
        raise ContextInputError(f"every question needs the same number of passages, got counts {sorted(counts)}")
    n_docs = counts.pop()
    if n_docs == 0:
        raise ContextInputError("every question needs at least one passage")
    titles, texts = [], []
    for q, question_passages in enumerate(passages):
        for j, passage in enumerate(question_passages):
            if isinstance(passage, str):
                title, text = "", passage
            elif isinstance(passage, dict) and "text" in passage:
                title, text = passage.get("title", "") or "", passage["text"]
            elif isinstance(passage, Sequence) and len(passage) == 2:
                title, text = passage
            else:
                raise ContextInputError(
                    f"passage [{q}][{j}] must be a string, a (title, text) pair or a dict with 'text', got {passage!r:.80}"
                )
            if not isinstance(title, str) or not isinstance(text, str):
                raise ContextInputError(f"passage [{q}][{j}]: title and text must be strings")
            titles.append(title)
            texts.append(text)
    return titles, texts, n_docs


def check_doc_scores(doc_scores: Any, batch_size: int, n_docs: int) -> np.ndarray:
    if doc_scores is None:
        return np.zeros((batch_size, n_docs), dtype=np.float32)  # uniform p(z|x) after the softmax
    if hasattr(doc_scores, "detach") or type(doc_scores).__module__.startswith("tensorflow"):
        raise ContextInputError("doc_scores must be a numpy array or nested lists, not a framework tensor")
    try:
        scores = np.asarray(doc_scores, dtype=np.float32)
    except (ValueError, TypeError) as err:  # ragged lists, strings
        raise ContextInputError(f"doc_scores must be a ({batch_size}, {n_docs}) array of numbers: {err}") from None
    if scores.shape != (batch_size, n_docs):
        raise ContextInputError(f"doc_scores must have shape (batch_size, n_docs) = ({batch_size}, {n_docs}), got {scores.shape}")
    if not np.isfinite(scores).all():
        raise ContextInputError("doc_scores hold NaN or infinite values")
    return scores


def contexts_from_passages(
    config,
    question_encoder_tokenizer,
    generator_tokenizer,
    question_input_ids: Any,
    passages: Any,
    doc_scores: Any = None,
    prefix: Optional[str] = None,
    return_tensors: Optional[str] = None,
    assembler: Optional[ContextAssembler] = None,
):
    """Model inputs from passages you retrieved yourself (BM25, Elasticsearch, a vector database).

    `passages[i]` lists question i's passages (strings, or (title, text) pairs); every question
    has the same number. `doc_scores` (batch, n) are the retrieval scores (zeros, i.e. uniform,
    when absent). Returns a `BatchEncoding` with `context_input_ids`, `context_attention_mask`
    ((batch * n, longest) int64) and `doc_scores` ((batch, n) float32), in the original's format.

    Example:
        >>> batch = contexts_from_passages(config, q_tok, g_tok, q_ids, [["Paris is in France."]])
        >>> model(context_input_ids=batch["context_input_ids"], ..., doc_scores=batch["doc_scores"])
    """
    check_retriever_options(prefix=prefix, return_tensors=return_tensors, error=ContextInputError)
    if assembler is None:
        assembler = ContextAssembler.from_config(config, question_encoder_tokenizer, generator_tokenizer)
    questions = assembler.decode_questions(question_input_ids)
    titles, texts, n_docs = normalize_passages(passages, len(questions))
    scores = check_doc_scores(doc_scores, len(questions), n_docs)
    prefix = prefix if prefix is not None else getattr(config.generator, "prefix", None)
    ids, mask = assembler.assemble(questions, assembler.encode_passages(titles, texts, prefix), n_docs)
    data = {"context_input_ids": ids, "context_attention_mask": mask, "doc_scores": scores}
    return compat.batch_encoding(data, return_tensors)
