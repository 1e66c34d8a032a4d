"""The PyTorch <-> TensorFlow weight mapping of RAG checkpoints: an explicit table, numpy only.

Each row maps one PyTorch state-dict name to one TensorFlow (Keras) weight name with a transform.
Rows are grouped in sections; a section with a `repeat` is expanded once per layer (`{i}` in the
names). The expansion for a concrete config (`rag_entries`, `question_encoder_entries`) is the
complete list of weights the TF model holds, in the order Keras creates them, so the same list
drives conversion both ways, the check that every weight is mapped exactly once, and writing
`tf_model.h5` in Keras' own layout (`rag_core.convert`).

Names on the TF side, as Keras stores them in `tf_model.h5` (group, then weight name):

- nested weights carry the model instance as their first component, which loaders drop:
  `tf_rag_token_for_generation/rag/generator/model/encoder/layers.0/fc1/kernel:0`. We key them
  without it: `rag/generator/model/encoder/layers.0/fc1/kernel:0`.
- two weights are created outside the model's name scope and are stored under a fixed name:
  BART's `final_logits_bias:0` (a bias layer created at the top level) and T5's shared embedding
  `shared/shared/embeddings:0` (built in an absolute name scope). Their key is that fixed name.
- BART's shared embedding is built under the model's `load_weight_prefix`
  (`<instance>_1/rag/generator/model.shared/embeddings:0`); only the first component differs.

Tied weights: PyTorch holds BART's `model.shared`, `model.encoder.embed_tokens`,
`model.decoder.embed_tokens` and `lm_head` (T5's `shared`, `encoder.embed_tokens`,
`decoder.embed_tokens` and, with tied embeddings, `lm_head`) as one tensor, and
`save_pretrained` stores it once. TF holds one variable. The aliases are rows too (`ALIAS`): read
when present and checked equal to the tensor they alias, never written (what `save_pretrained`
writes), so PT -> TF -> PT gives back the same file.

No torch and no tensorflow here: names, shapes and numpy arrays only.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from .errors import WeightConversionError  # noqa: F401 (re-exported)

# === Transforms ===
# PyTorch `nn.Linear.weight` is (out, in); a Keras `Dense.kernel` is (in, out).
IDENTITY = "identity"
TRANSPOSE = "transpose"
# A PyTorch name that aliases another row's tensor (tied embeddings): not a TF weight of its own.
ALIAS = "alias"

# How the TF weight name is stored (see the module docstring).
NESTED = "nested"  # <instance>/<prefix><name>
PREFIXED = "prefixed"  # <instance>_1/<prefix><name> (BART's shared embedding, built under load_weight_prefix)
FIXED = "fixed"  # <name>, whatever the model and its prefix

# PyTorch buffers that some checkpoints carry and no TF model holds: recomputed, never converted.
IGNORED_PT_BUFFERS = (re.compile(r"(^|\.)embeddings\.position_ids$"),)


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: PyTorch name, TF name, transform, PyTorch shape (config expressions)."""

    pt: str
    tf: Optional[str]
    transform: str
    shape: tuple[str, ...]
    scope: str = NESTED
    alias_of: Optional[str] = None  # for ALIAS rows: the PyTorch name of the tensor they alias


@dataclasses.dataclass(frozen=True)
class Section:
    rows: tuple[Row, ...]
    repeat: Optional[str] = None  # config expression giving the number of layers, `{i}` in the names
    start: int = 0
    when: Optional[Callable[[Any], bool]] = None


@dataclasses.dataclass(frozen=True)
class Entry:
    """A row expanded for one config: full names, the h5 layer group, the expected PyTorch shape."""

    pt: str
    tf: Optional[str]  # None for an ALIAS
    transform: str
    pt_shape: tuple[int, ...]
    group: Optional[str] = None
    scope: str = NESTED
    alias_of: Optional[str] = None

    @property
    def tf_shape(self) -> tuple[int, ...]:
        return self.pt_shape[::-1] if self.transform == TRANSPOSE else self.pt_shape


def _dense(pt: str, tf: str, out: str, inp: str, bias: bool = True) -> tuple[Row, ...]:
    rows = (Row(f"{pt}.weight", f"{tf}/kernel:0", TRANSPOSE, (out, inp)),)
    if bias:
        rows += (Row(f"{pt}.bias", f"{tf}/bias:0", IDENTITY, (out,)),)
    return rows


def _layer_norm(pt: str, tf: str, dim: str) -> tuple[Row, ...]:
    return (Row(f"{pt}.weight", f"{tf}/gamma:0", IDENTITY, (dim,)), Row(f"{pt}.bias", f"{tf}/beta:0", IDENTITY, (dim,)))


# === The table: BERT (and DPR's BERT) ===
H = "hidden_size"
BERT_EMBEDDINGS = (
    Row("embeddings.word_embeddings.weight", "embeddings/word_embeddings/weight:0", IDENTITY, ("vocab_size", H)),
    Row(
        "embeddings.token_type_embeddings.weight",
        "embeddings/token_type_embeddings/embeddings:0",
        IDENTITY,
        ("type_vocab_size", H),
    ),
    Row(
        "embeddings.position_embeddings.weight",
        "embeddings/position_embeddings/embeddings:0",
        IDENTITY,
        ("max_position_embeddings", H),
    ),
    *_layer_norm("embeddings.LayerNorm", "embeddings/LayerNorm", H),
)
_BL, _TL = "encoder.layer.{i}", "encoder/layer_._{i}"
BERT_LAYER = (
    *_dense(f"{_BL}.attention.self.query", f"{_TL}/attention/self/query", H, H),
    *_dense(f"{_BL}.attention.self.key", f"{_TL}/attention/self/key", H, H),
    *_dense(f"{_BL}.attention.self.value", f"{_TL}/attention/self/value", H, H),
    *_dense(f"{_BL}.attention.output.dense", f"{_TL}/attention/output/dense", H, H),
    *_layer_norm(f"{_BL}.attention.output.LayerNorm", f"{_TL}/attention/output/LayerNorm", H),
    *_dense(f"{_BL}.intermediate.dense", f"{_TL}/intermediate/dense", "intermediate_size", H),
    *_dense(f"{_BL}.output.dense", f"{_TL}/output/dense", H, "intermediate_size"),
    *_layer_norm(f"{_BL}.output.LayerNorm", f"{_TL}/output/LayerNorm", H),
)
BERT_POOLER = _dense("pooler.dense", "pooler/dense", H, H)


def _bert_sections(pooler: bool) -> tuple[Section, ...]:
    sections = (Section(BERT_EMBEDDINGS), Section(BERT_LAYER, repeat="num_hidden_layers"))
    return sections + ((Section(BERT_POOLER),) if pooler else ())


# === The table: BART ===
D = "d_model"
BART_SHARED = (
    Row("model.shared.weight", "model.shared/embeddings:0", IDENTITY, ("vocab_size", D), scope=PREFIXED),
    Row("model.encoder.embed_tokens.weight", None, ALIAS, ("vocab_size", D), alias_of="model.shared.weight"),
    Row("model.decoder.embed_tokens.weight", None, ALIAS, ("vocab_size", D), alias_of="model.shared.weight"),
    # TF BART always computes logits with the shared embedding: an untied lm_head has no TF home.
    Row("lm_head.weight", None, ALIAS, ("vocab_size", D), alias_of="model.shared.weight"),
)


def _bart_attention(pt: str, tf: str) -> tuple[Row, ...]:
    # Keras creates k, q, v, out in this order (PyTorch: k, v, q, out); order matters only in the h5
    return sum((_dense(f"{pt}.{p}", f"{tf}/{p}", D, D) for p in ("k_proj", "q_proj", "v_proj", "out_proj")), ())


def _bart_stack(side: str) -> tuple[Section, ...]:
    pt, tf = f"model.{side}", f"model/{side}"
    ffn = f"{side}_ffn_dim"
    layer = (
        *_bart_attention(f"{pt}.layers.{{i}}.self_attn", f"{tf}/layers.{{i}}/self_attn"),
        *_layer_norm(f"{pt}.layers.{{i}}.self_attn_layer_norm", f"{tf}/layers.{{i}}/self_attn_layer_norm", D),
    )
    if side == "decoder":
        layer += (
            *_bart_attention(f"{pt}.layers.{{i}}.encoder_attn", f"{tf}/layers.{{i}}/encoder_attn"),
            *_layer_norm(f"{pt}.layers.{{i}}.encoder_attn_layer_norm", f"{tf}/layers.{{i}}/encoder_attn_layer_norm", D),
        )
    layer += (
        *_dense(f"{pt}.layers.{{i}}.fc1", f"{tf}/layers.{{i}}/fc1", ffn, D),
        *_dense(f"{pt}.layers.{{i}}.fc2", f"{tf}/layers.{{i}}/fc2", D, ffn),
        *_layer_norm(f"{pt}.layers.{{i}}.final_layer_norm", f"{tf}/layers.{{i}}/final_layer_norm", D),
    )
    return (
        # BART's learned positions carry an offset of 2 (a fairseq legacy)
        Section((Row(f"{pt}.embed_positions.weight", f"{tf}/embed_positions/embeddings:0", IDENTITY,
                     ("max_position_embeddings + 2", D)),)),
        Section(layer, repeat=f"{side}_layers"),
        Section(_layer_norm(f"{pt}.layernorm_embedding", f"{tf}/layernorm_embedding", D)),
    )


BART_SECTIONS = (
    Section(BART_SHARED),
    *_bart_stack("encoder"),
    *_bart_stack("decoder"),
    Section((Row("final_logits_bias", "final_logits_bias:0", IDENTITY, ("1", "vocab_size"), scope=FIXED),)),
)


# === The table: T5 ===
INNER = "num_heads * d_kv"


def _t5_attention(pt: str, tf: str, relative_bias: bool) -> tuple[Row, ...]:
    rows = ()
    if relative_bias:  # only the first block of each stack holds the relative position buckets
        rows += (Row(f"{pt}.relative_attention_bias.weight", f"{tf}/relative_attention_bias/embeddings:0", IDENTITY,
                     ("relative_attention_num_buckets", "num_heads")),)
    rows += tuple(_dense(f"{pt}.{p}", f"{tf}/{p}", INNER, D, bias=False)[0] for p in ("q", "k", "v"))
    return rows + (_dense(f"{pt}.o", f"{tf}/o", D, INNER, bias=False)[0],)


def _t5_feed_forward(pt: str, tf: str, gated: bool) -> tuple[Row, ...]:
    wis = ("wi_0", "wi_1") if gated else ("wi",)
    rows = tuple(_dense(f"{pt}.DenseReluDense.{w}", f"{tf}/DenseReluDense/{w}", "d_ff", D, bias=False)[0] for w in wis)
    rows += (_dense(f"{pt}.DenseReluDense.wo", f"{tf}/DenseReluDense/wo", D, "d_ff", bias=False)[0],)
    return rows + (Row(f"{pt}.layer_norm.weight", f"{tf}/layer_norm/weight:0", IDENTITY, (D,)),)


def _t5_block(side: str, relative_bias: bool, gated: bool) -> tuple[Row, ...]:
    pt, tf = f"{side}.block.{{i}}.layer", f"{side}/block_._{{i}}/layer_._"
    rows = (
        *_t5_attention(f"{pt}.0.SelfAttention", f"{tf}0/SelfAttention", relative_bias),
        Row(f"{pt}.0.layer_norm.weight", f"{tf}0/layer_norm/weight:0", IDENTITY, (D,)),
    )
    if side == "decoder":
        rows += (
            *_t5_attention(f"{pt}.1.EncDecAttention", f"{tf}1/EncDecAttention", False),
            Row(f"{pt}.1.layer_norm.weight", f"{tf}1/layer_norm/weight:0", IDENTITY, (D,)),
        )
    return rows + _t5_feed_forward(f"{pt}.{2 if side == 'decoder' else 1}", f"{tf}{2 if side == 'decoder' else 1}", gated)


def _t5_sections(config: Any) -> tuple[Section, ...]:
    gated = bool(getattr(config, "is_gated_act", False))
    tied = bool(getattr(config, "tie_word_embeddings", True))
    shared = (
        Row("shared.weight", "shared/shared/embeddings:0", IDENTITY, ("vocab_size", D), scope=FIXED),
        Row("encoder.embed_tokens.weight", None, ALIAS, ("vocab_size", D), alias_of="shared.weight"),
        Row("decoder.embed_tokens.weight", None, ALIAS, ("vocab_size", D), alias_of="shared.weight"),
    )
    if tied:
        shared += (Row("lm_head.weight", None, ALIAS, ("vocab_size", D), alias_of="shared.weight"),)
    sections = [Section(shared)]
    for side, layers in (("encoder", "num_layers"), ("decoder", "num_decoder_layers")):
        sections += [
            Section(_t5_block(side, True, gated), repeat="1 if " + layers + " > 0 else 0"),
            Section(_t5_block(side, False, gated), repeat=layers, start=1),
            Section((Row(f"{side}.final_layer_norm.weight", f"{side}/final_layer_norm/weight:0", IDENTITY, (D,)),)),
        ]
    if not tied:
        sections.append(Section(_dense("lm_head", "lm_head", "vocab_size", D, bias=False)))
    return tuple(sections)


# === Sub-models: (PyTorch prefix, TF prefix, sections) inside the sub-model ===
def question_encoder_sections(config: Any) -> tuple[str, str, tuple[Section, ...]]:
    model_type = getattr(config, "model_type", None)
    if model_type == "dpr":
        if getattr(config, "projection_dim", 0):
            raise WeightConversionError(
                f"a DPR question encoder with projection_dim={config.projection_dim} is not convertible: "
                "transformers' TFDPRQuestionEncoder cannot be built with a projection (it fails in build())"
            )
        return "question_encoder.bert_model.", "question_encoder/bert_model/", _bert_sections(pooler=False)
    if model_type == "bert":
        return "", "bert/", _bert_sections(pooler=True)
    raise WeightConversionError(
        f"unsupported question encoder model_type {model_type!r}: the table covers 'dpr' and 'bert'"
    )


def generator_sections(config: Any) -> tuple[str, str, tuple[Section, ...]]:
    model_type = getattr(config, "model_type", None)
    if model_type == "bart":
        return "", "", BART_SECTIONS
    if model_type == "t5":
        return "", "", _t5_sections(config)
    raise WeightConversionError(f"unsupported generator model_type {model_type!r}: the table covers 'bart' and 't5'")


def _evaluate(expression: str, config: Any) -> int:
    names = {name: getattr(config, name) for name in re.findall(r"[A-Za-z_]\w*", expression)
             if name not in ("if", "else") and hasattr(config, name)}
    try:
        value = eval(expression, {"__builtins__": {}}, names)  # noqa: S307  (our own table's expressions)
    except NameError as err:
        raise WeightConversionError(
            f"the {getattr(config, 'model_type', '?')} config has no field needed for the expression {expression!r}"
        ) from err
    return int(value)


def expand(
    sections: Iterable[Section], config: Any, pt_prefix: str, tf_prefix: str, group: Optional[str]
) -> list[Entry]:
    """The rows of `sections` for one config, with full names, in Keras' creation order."""
    entries = []
    for section in sections:
        if section.when is not None and not section.when(config):
            continue
        indices = [None] if section.repeat is None else range(section.start, _evaluate(section.repeat, config))
        for i in indices:
            for row in section.rows:
                fmt = (lambda s: s) if i is None else (lambda s, i=i: s.replace("{i}", str(i)))
                tf_name = None
                if row.tf is not None:
                    tf_name = fmt(row.tf) if row.scope == FIXED else tf_prefix + fmt(row.tf)
                entries.append(Entry(
                    pt=pt_prefix + fmt(row.pt),
                    tf=tf_name,
                    transform=row.transform,
                    pt_shape=tuple(_evaluate(d, config) for d in row.shape),
                    group=group,
                    scope=row.scope,
                    alias_of=None if row.alias_of is None else pt_prefix + fmt(row.alias_of),
                ))
    return entries


# === Whole models ===
RAG_ARCHITECTURES = ("RagModel", "RagSequenceForGeneration", "RagTokenForGeneration")
# The Keras name of each TF class's instance (the first component of its stored weight names)
TF_INSTANCE_NAMES = {
    "RagModel": "tf_rag_model",
    "RagSequenceForGeneration": "tf_rag_sequence_for_generation",
    "RagTokenForGeneration": "tf_rag_token_for_generation",
    "bert": "tf_bert_model",
    "dpr": "tfdpr_question_encoder",
}


def rag_entries(question_encoder_config: Any, generator_config: Any, architecture: str) -> list[Entry]:
    """Every weight of a RAG model of class `architecture` (PyTorch name without the `TF` prefix).

    `RagModel` holds the sub-models at the top (`question_encoder.*`, h5 groups `question_encoder`
    and `generator`); the generation heads hold them under `rag` (`rag.question_encoder.*`, one h5
    group `rag`).
    """
    architecture = architecture[2:] if architecture.startswith("TF") else architecture
    if architecture not in RAG_ARCHITECTURES:
        raise WeightConversionError(f"unknown RAG architecture {architecture!r}; expected one of {RAG_ARCHITECTURES}")
    head = architecture != "RagModel"
    entries = []
    for part, config, sections_of in (
        ("question_encoder", question_encoder_config, question_encoder_sections),
        ("generator", generator_config, generator_sections),
    ):
        pt_inner, tf_inner, sections = sections_of(config)
        pt_prefix = ("rag." if head else "") + f"{part}." + pt_inner
        tf_prefix = ("rag/" if head else "") + f"{part}/" + tf_inner
        entries += expand(sections, config, pt_prefix, tf_prefix, group="rag" if head else part)
    return entries


def question_encoder_entries(config: Any) -> list[Entry]:
    """Every weight of a stand-alone question encoder (`BertModel` / `DPRQuestionEncoder` and TF twins)."""
    pt_inner, tf_inner, sections = question_encoder_sections(config)
    group = tf_inner.split("/")[0]
    return expand(sections, config, pt_inner, tf_inner, group=group)


def stored_weight_name(entry: Entry, instance: str) -> str:
    """The weight name Keras writes in `tf_model.h5` for `entry` in a model named `instance`."""
    if entry.scope == FIXED:
        return entry.tf
    if entry.scope == PREFIXED:
        return f"{instance}_1/{entry.tf}"
    return f"{instance}/{entry.tf}"


def loader_key(stored_name: str) -> str:
    """What transformers' h5 loader matches on: the stored name without its first component."""
    return "/".join(stored_name.split("/")[1:])


# === Conversion (numpy) ===
def _ignored(name: str) -> bool:
    return any(p.search(name) for p in IGNORED_PT_BUFFERS)


def _check_shape(name: str, array: np.ndarray, expected: Sequence[int], side: str) -> None:
    if tuple(array.shape) != tuple(expected):
        raise WeightConversionError(
            f"shape mismatch for {side} weight {name!r}: the checkpoint holds {tuple(array.shape)}, "
            f"the config implies {tuple(expected)}"
        )


def _report(missing: Sequence[str], unexpected: Sequence[str], side: str) -> None:
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {list(missing)[:5]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {list(unexpected)[:5]})")
        raise WeightConversionError(
            f"the {side} weights do not match the config's model: " + "; ".join(parts)
            + ". Is this checkpoint of another model type or architecture?"
        )


def pt_to_tf(pt_weights: Mapping[str, np.ndarray], entries: Sequence[Entry]) -> dict[str, np.ndarray]:
    """PyTorch state dict (numpy) -> TF weights keyed by `Entry.tf`, in Keras order.

    Every entry is used exactly once; missing, unexpected or wrongly shaped weights raise, and
    tied aliases (when the checkpoint carries them) must equal the tensor they alias. The caller's
    mapping is never modified.
    """
    expected = {e.pt for e in entries}
    missing = [e.pt for e in entries if e.transform != ALIAS and e.pt not in pt_weights]
    unexpected = sorted(k for k in pt_weights if k not in expected and not _ignored(k))
    _report(missing, unexpected, "PyTorch")
    out = {}
    for e in entries:
        if e.transform == ALIAS:
            if e.pt in pt_weights:
                _check_shape(e.pt, pt_weights[e.pt], e.pt_shape, "PyTorch")
                if not np.array_equal(pt_weights[e.pt], pt_weights[e.alias_of]):
                    raise WeightConversionError(
                        f"{e.pt!r} differs from {e.alias_of!r}: TensorFlow ties them (one variable), so an "
                        "untied copy cannot be converted without losing it"
                    )
            continue
        array = np.asarray(pt_weights[e.pt])
        _check_shape(e.pt, array, e.pt_shape, "PyTorch")
        out[e.tf] = np.ascontiguousarray(array.T) if e.transform == TRANSPOSE else array
    return out


def tf_to_pt(tf_weights: Mapping[str, np.ndarray], entries: Sequence[Entry]) -> dict[str, np.ndarray]:
    """TF weights keyed by `Entry.tf` -> PyTorch state dict (numpy), tied aliases left out (as
    transformers' `save_pretrained` leaves them out)."""
    expected = {e.tf for e in entries if e.tf is not None}
    missing = [e.tf for e in entries if e.tf is not None and e.tf not in tf_weights]
    unexpected = sorted(k for k in tf_weights if k not in expected)
    _report(missing, unexpected, "TensorFlow")
    out = {}
    for e in entries:
        if e.transform == ALIAS:
            continue
        array = np.asarray(tf_weights[e.tf])
        _check_shape(e.tf, array, e.tf_shape, "TensorFlow")
        out[e.pt] = np.ascontiguousarray(array.T) if e.transform == TRANSPOSE else array
    return out
