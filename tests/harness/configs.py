"""Tiny configurations: models of a few thousand parameters that build in milliseconds."""

from __future__ import annotations

from transformers import BartConfig, BertConfig, DPRConfig, T5Config

HIDDEN = 16  # question-encoder hidden size == retrieval_vector_size of the tiny passages
QUESTION_VOCAB = 30522  # the MiniLM WordPiece vocabulary
GENERATOR_VOCAB = 1000  # the BPE / Unigram vocabularies trained by tests.harness.tokenizers


def tiny_dpr_config() -> DPRConfig:
    return DPRConfig(
        vocab_size=QUESTION_VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
        projection_dim=0,
    )


def tiny_bert_config() -> BertConfig:
    return BertConfig(
        vocab_size=QUESTION_VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
    )


def tiny_bart_config(vocab_size: int = GENERATOR_VOCAB) -> BartConfig:
    return BartConfig(
        vocab_size=vocab_size,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=128,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=2,
        forced_bos_token_id=None,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )


def tiny_t5_config(vocab_size: int = GENERATOR_VOCAB) -> T5Config:
    return T5Config(
        vocab_size=vocab_size,
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


QUESTION_ENCODERS = {"dpr": tiny_dpr_config, "bert": tiny_bert_config}
GENERATORS = {"bart": tiny_bart_config, "t5": tiny_t5_config}
# The combinations the suite runs: (question encoder, generator)
COMBINATIONS = [("dpr", "bart"), ("dpr", "t5"), ("bert", "bart")]


def tiny_rag_config(question_encoder: str = "dpr", generator: str = "bart", **kwargs):
    from rag_core import RagConfig

    gen = GENERATORS[generator]()
    defaults = dict(
        n_docs=3,
        max_combined_length=48,
        retrieval_vector_size=HIDDEN,
        retrieval_batch_size=4,
        index_name="custom",
    )
    defaults.update(kwargs)
    return RagConfig.from_question_encoder_generator_configs(QUESTION_ENCODERS[question_encoder](), gen, **defaults)
