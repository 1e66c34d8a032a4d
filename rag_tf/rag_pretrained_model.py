"""`TFRagPreTrainedModel`: loading, saving and the Keras training loop shared by the TF RAG classes."""

from __future__ import annotations

import functools
import inspect
import logging
import os
from typing import Any, Mapping, Optional

import keras
import numpy as np
import tensorflow as tf

from rag_core.arguments import check_labels, generator_max_positions, resolve
from rag_core.configuration_rag import RagConfig
from rag_core.modeling import pop_prefixed, resolve_config

from . import convert
from .models import checkpoint, registry
from .models.weights import load_pt_weights, pt_weights

logger = logging.getLogger(__name__)

GENERATION_CONFIG_NAME = "generation_config.json"
SAFETENSORS_NAME = "model.safetensors"
TF_H5_NAME = "tf_model.h5"
# PyTorch buffers some checkpoints carry that no model here holds as a weight
_IGNORED_SUFFIXES = (".position_ids", ".token_type_ids")


def unpack_mapping_input(call):
    """Let `call` take its inputs as one mapping in the first argument (`model({"input_ids": ...})`),
    as Keras does when it traces a model from its save spec and as transformers' TF models allow."""

    signature = inspect.signature(call)
    var_keyword = next((p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), None)

    @functools.wraps(call)
    def wrapper(self, input_ids=None, *args, **kwargs):
        if isinstance(input_ids, Mapping):
            bound = dict(signature.bind_partial(self, None, *args, **kwargs).arguments)
            bound.pop("self"), bound.pop("input_ids")
            bound.update(bound.pop(var_keyword, None) or {})  # `**kwargs` of `call`, flattened back
            # explicit arguments win over the mapping; None placeholders do not
            kwargs = {**dict(input_ids), **{k: v for k, v in bound.items() if v is not None}}
            if "use_cache" in signature.parameters:
                # one mapping is how Keras serves a model (`export`, SavedModel signatures): outputs must
                # be tensors, so no decoder cache unless asked for
                kwargs.setdefault("use_cache", False)
            return call(self, **kwargs)
        return call(self, input_ids, *args, **kwargs)

    wrapper.__signature__ = signature
    return wrapper


class TFRagPreTrainedModel(keras.Model):
    """Base of the TF RAG models (Keras 3): `RagConfig`, `from_pretrained` / `save_pretrained` and Keras
    `fit` / `evaluate` / `predict` on the model's own loss.

    Checkpoints are transformers' layout: `config.json` and `model.safetensors` with transformers'
    PyTorch weight names (`rag.question_encoder.*`, `rag.generator.*`), so one checkpoint serves
    `rag_pt`, transformers' PyTorch RAG classes and this package. `from_pretrained` also reads sharded
    safetensors and transformers' TensorFlow `tf_model.h5`; `save_pretrained(..., save_format="h5")`
    writes `tf_model.h5` in transformers' TF layout for users of transformers 4.x.

    Keras usage (graph mode, retrieval inside the step through `retrieval_bridge`):

        >>> model = TFRagTokenForGeneration(config, retriever=retriever)   # doctest: +SKIP
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-4))           # doctest: +SKIP
        >>> model.fit(tf.data.Dataset.from_tensor_slices(
        ...     {"input_ids": q, "attention_mask": m, "labels": y}).batch(8), epochs=3)  # doctest: +SKIP

    Compile without a `loss`: the loss is the model's (`reduce_loss=False` gives one loss per
    example, averaged over the batch, with `sample_weight` honoured; `reduce_loss=True` sums).
    """

    config_class = RagConfig
    base_model_prefix = "rag"
    # prefix of the sub-models' weight names in this class's checkpoints ("rag." for the heads)
    weight_prefix = ""

    # === Weights under transformers' PyTorch names ===
    def _sub_models(self) -> dict:
        """`{weight-name prefix: sub-model}` of the sub-models that hold weights."""
        rag = self.rag if isinstance(self, _TFRagHead) else self
        parts = {self.weight_prefix + "question_encoder.": rag.question_encoder,
                 self.weight_prefix + "generator.": rag.generator}
        if rag.ctx_encoder is not None:
            parts[self.weight_prefix + "ctx_encoder."] = rag.ctx_encoder
        return parts

    def ensure_built(self) -> None:
        """Create every variable (sub-models build on a dummy input); idempotent."""
        for model in self._sub_models().values():
            model.ensure_built()
        self.built = True

    def pt_weights(self) -> dict:
        """`{transformers PyTorch name: numpy array}`: what `model.safetensors` holds."""
        self.ensure_built()
        weights = {}
        for prefix, model in self._sub_models().items():
            weights.update(pt_weights(model, prefix))
        return weights

    def load_pt_weights(self, tensors: Mapping[str, np.ndarray], source: str = "checkpoint") -> None:
        """Assign every weight from PyTorch-named arrays (a RAG checkpoint of any of the three classes).
        Checks every sub-model before assigning, so a failure leaves the model as it was."""
        self.ensure_built()
        tensors = checkpoint.with_prefix(tensors, self.weight_prefix)
        unused = []
        # check everything first: load into nothing, then assign
        parts = self._sub_models()
        for prefix, model in parts.items():
            checkpoint.check_weights(model, tensors, prefix, source)
        for prefix, model in parts.items():
            unused.extend(load_pt_weights(model, tensors, prefix, source))
        used_prefixes = tuple(parts)
        unexpected = [n for n in tensors if not n.startswith(used_prefixes) and not n.endswith(_IGNORED_SUFFIXES)]
        unexpected += [n for n in unused if not n.endswith(_IGNORED_SUFFIXES)]
        if unexpected:
            logger.warning("%s: %d weights not used by %s (e.g. %s)", source, len(unexpected), type(self).__name__,
                           unexpected[:5])

    # === Loading and saving ===
    @classmethod
    def from_pretrained_question_encoder_generator(
        cls,
        question_encoder_pretrained_model_name_or_path: Optional[str] = None,
        generator_pretrained_model_name_or_path: Optional[str] = None,
        retriever: Any = None,
        **kwargs,
    ) -> "TFRagPreTrainedModel":
        """Build a RAG model from a pretrained question encoder and a pretrained seq2seq generator.

        Each path is a checkpoint folder in transformers' layout (`config.json` and `model.safetensors`,
        as transformers' PyTorch `save_pretrained` writes them; DPR, BERT, BART or T5).
        `question_encoder_*` / `generator_*` keyword arguments: `question_encoder_model=` /
        `generator_model=` pass ready-made sub-models, `*_config=` a config; the remaining ones
        update the `RagConfig` (e.g. `n_docs=3`).
        """
        kwargs_question_encoder = pop_prefixed(kwargs, "question_encoder_")
        kwargs_generator = pop_prefixed(kwargs, "generator_")
        question_encoder = kwargs_question_encoder.pop("model", None)
        if question_encoder is None:
            if question_encoder_pretrained_model_name_or_path is None:
                raise ValueError(
                    "pass question_encoder_pretrained_model_name_or_path or a ready model as question_encoder_model="
                )
            question_encoder = checkpoint.load_sub_model(registry.build_question_encoder,
                                               question_encoder_pretrained_model_name_or_path,
                                               kwargs_question_encoder.pop("config", None), allow_pickle=kwargs.get(
                                                   "allow_pickle", False))
        generator = kwargs_generator.pop("model", None)
        if generator is None:
            if generator_pretrained_model_name_or_path is None:
                raise ValueError("pass generator_pretrained_model_name_or_path or a ready model as generator_model=")
            generator = checkpoint.load_sub_model(registry.build_generator, generator_pretrained_model_name_or_path,
                                        kwargs_generator.pop("config", None),
                                        allow_pickle=kwargs.get("allow_pickle", False))
        kwargs.pop("allow_pickle", None)
        config = kwargs.pop("config", None)
        if config is None:
            config = RagConfig.from_question_encoder_generator_configs(
                question_encoder.config, generator.config, **kwargs
            )
        return cls(config=config, question_encoder=question_encoder, generator=generator, retriever=retriever)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config: Any = None, retriever: Any = None,
                        from_pt: Optional[bool] = None, allow_pickle: bool = False, **kwargs):
        """Load a RAG checkpoint folder (or a hub id from the local huggingface_hub cache).

        Reads `model.safetensors` (or its shards) with transformers' PyTorch names, written by this
        package, `rag_pt` or transformers' PyTorch RAG classes; else transformers' TensorFlow
        `tf_model.h5`. A `pytorch_model.bin` is a pickle and is read only with `allow_pickle=True`
        (tensors only). `from_pt` is accepted for compatibility (PyTorch weights are the default
        format). Keyword arguments that are `RagConfig` fields (e.g. `n_docs=3`) update the config.
        The retriever is attached as given, never copied.
        """
        del from_pt, model_args
        from rag_core.convert import read_pt_weights

        directory = checkpoint.resolve_checkpoint(pretrained_model_name_or_path, kwargs)
        if config is None:
            config = checkpoint.load_rag_config(directory)
        elif not isinstance(config, RagConfig):
            config = resolve_config(config, None, None)
        for key in [k for k in kwargs if hasattr(config, k)]:
            setattr(config, key, kwargs.pop(key))
        name = kwargs.pop("name", None)
        if kwargs:
            raise TypeError(f"{cls.__name__}.from_pretrained got unexpected keyword arguments: {sorted(kwargs)}")
        registry.check_supported(config)
        if checkpoint.has_pt_weights(directory) or not (directory / TF_H5_NAME).is_file():
            tensors = read_pt_weights(directory, allow_pickle=allow_pickle)
        else:
            tensors = convert.read_tf_h5(directory)
        checkpoint.untie_t5_head_if_the_checkpoint_does(config, checkpoint.with_prefix(tensors, cls.weight_prefix),
                                              cls.weight_prefix + "generator.")
        model = cls(config=config, retriever=retriever, **({"name": name} if name else {}))
        model.load_pt_weights(tensors, source=str(directory))
        if (directory / GENERATION_CONFIG_NAME).is_file():
            from transformers import GenerationConfig

            model.generation_config = GenerationConfig.from_pretrained(directory)
        model.config._name_or_path = str(pretrained_model_name_or_path)
        return model

    def save_pretrained(self, save_directory, save_format: str = "safetensors", **kwargs) -> None:
        """Write `config.json`, `generation_config.json` and `model.safetensors` (transformers' PyTorch
        names; `save_format="h5"`: `tf_model.h5` in transformers' TensorFlow layout instead).

        Atomic (`rag_core.storage.atomic_save`): everything is written into a temporary folder beside
        `save_directory` and then moved in; other files there (a tokenizer's, a retriever's) are kept,
        older weight files (shards, the other format: `model.safetensors` beside a new `tf_model.h5`
        would be read first) are removed once the new one is in place, and a failure at any point
        leaves the previous checkpoint byte-identical. A file at `save_directory` raises
        `NotAFolderError`."""
        from rag_core.storage import atomic_save

        del kwargs  # transformers' options (safe_serialization, max_shard_size, ...) do not apply
        if save_format not in ("safetensors", "h5"):
            raise ValueError(f"save_format must be 'safetensors' or 'h5', got {save_format!r}")
        config = self.config
        config.architectures = [type(self).__name__[2:]]  # the PyTorch class name, as transformers writes
        with atomic_save(save_directory) as staging:
            config.save_pretrained(staging)
            self.generation_config.save_pretrained(staging)
            weights = self.pt_weights()
            if save_format == "h5":
                convert.write_tf_h5(staging, weights, config, config.architectures[0])
            else:
                from safetensors.numpy import save_file

                save_file({k: np.ascontiguousarray(v) for k, v in weights.items()},
                          os.path.join(staging, SAFETENSORS_NAME), metadata={"format": "pt"})

    def __init__(self, config: RagConfig, *inputs, **kwargs):
        del inputs  # accepted as transformers' base classes accept them; unused
        super().__init__(**kwargs)
        from transformers import GenerationConfig

        self.config = config
        self.generation_config = GenerationConfig.from_model_config(config)

    @property
    def input_signature(self) -> dict:
        """The serving inputs: a forward pass given context (no retriever inside a SavedModel);
        `model.export(path)` records it (see `tests/tf/test_keras3.py`)."""
        ids = tf.TensorSpec([None, None], tf.int32)
        return {
            "context_input_ids": ids,
            "context_attention_mask": ids,
            "doc_scores": tf.TensorSpec([None, None], tf.float32),
            "decoder_input_ids": ids,
        }

    @property
    def _default_save_signature(self):
        """The serving function `model.export` / `tf.saved_model.save` record by default: a forward
        pass given context (`input_signature`), returning logits and doc scores. (Keras' own default
        would trace `call` with one float input, which a RAG model does not take.)"""

        @tf.function(input_signature=[self.input_signature])
        def serving_default(inputs):
            outputs = self(**inputs, use_cache=False)
            return {"logits": outputs["logits"], "doc_scores": outputs["doc_scores"]}

        return serving_default

    def __call__(self, *args, **kwargs):
        # Keras insists on the first `call` argument; RAG's first (`input_ids`) is optional when
        # the context is given, so default it to None like every other argument.
        if not args and "input_ids" not in kwargs:
            kwargs["input_ids"] = None
        if args and isinstance(args[0], Mapping) and type(args[0]) is not dict:
            # a tokenizer's BatchEncoding (a Mapping, not a dict): Keras takes only plain structures
            args = (dict(args[0]),) + tuple(args[1:])
        return super().__call__(*args, **kwargs)

    # === Eager calls as a cached graph ===
    # Eager TensorFlow dispatches a RAG forward pass op by op (hundreds of ops, each through Python);
    # the same ops as one graph run ~1.4x faster on CPU. So, when an eager `call` is repeated with
    # the same static options (flags, n_docs, training, config), the second and later calls run the
    # question encoder and the retriever eagerly (numpy in between) and everything after retrieval
    # (generator, loss, marginal) as one cached `tf.function` of `call` given that context. A
    # one-off call never pays for tracing. `model.run_eagerly = True` (Keras' switch) or
    # `tf.config.run_functions_eagerly(True)` keep every call op by op, for debugging.
    _compile_eager_calls = True  # False for the TFRagModel inside a head: the head's call is the unit

    def _call_as_graph(self, arguments: dict) -> bool:
        """Whether this `call` runs as the cached graph (see above); counts the eager calls per key."""
        if not self._compile_eager_calls or not tf.executing_eagerly():
            return False
        if self.run_eagerly or tf.config.functions_run_eagerly():
            return False
        if arguments.get("encoder_outputs") is not None or arguments.get("past_key_values") is not None:
            return False  # generation-time inputs (nested structures): kept eager
        counts = self.__dict__.setdefault("_rag_eager_calls", {})
        key = self._static_arguments(arguments)
        counts[key] = counts.get(key, 0) + 1
        return counts[key] > 1

    def _static_arguments(self, arguments: dict) -> tuple:
        """Everything a trace bakes in: the non-tensor arguments, which tensors are None, the config."""
        items = []
        for name, value in sorted(arguments.items()):
            if value is None or isinstance(value, (bool, int, float, str)):
                items.append((name, value))
            else:
                items.append((name, "<tensor>"))
        items.append(("config", self.config.to_json_string(use_diff=True)))
        items.append(("retriever", id(self.retriever)))
        return tuple(items)

    def _graph_call(self, arguments: dict):
        """Retrieval eagerly, then `call` on the retrieved context as one cached `tf.function`."""
        from .rag_model import add_retrieved_fields

        rag = self.rag if isinstance(self, _TFRagHead) else self
        arguments = dict(arguments)
        retrieved = None
        if rag._has_to_retrieve(arguments["context_input_ids"], arguments["context_attention_mask"],
                                arguments["doc_scores"], arguments["encoder_outputs"]):
            n_docs = arguments["n_docs"] if arguments["n_docs"] is not None else self.config.n_docs
            retrieved = rag._retrieve(arguments["input_ids"], arguments["attention_mask"], n_docs,
                                      arguments["output_attentions"], arguments["output_hidden_states"],
                                      arguments["training"])
            arguments.update(context_input_ids=retrieved["context_input_ids"], n_docs=n_docs,
                             context_attention_mask=retrieved["context_attention_mask"],
                             doc_scores=retrieved["doc_scores"])
        else:
            # bad input fails here, eagerly and with the concrete shapes, not inside the trace (whose
            # shapes are relaxed to None once a second shape was seen)
            rag._check_context(arguments["input_ids"], arguments["context_input_ids"],
                               arguments["context_attention_mask"], arguments["doc_scores"],
                               resolve(arguments["n_docs"], self.config.n_docs), arguments["n_docs"] is not None)
        if arguments.get("labels") is not None:
            self._check_labels(arguments["labels"])
        tensors, static = {}, {}
        for name, value in arguments.items():
            if value is None or isinstance(value, (bool, int, float, str)):
                static[name] = value
            else:
                tensors[name] = tf.convert_to_tensor(value)
        function = self.__dict__.get("_rag_call_function")
        if function is None:
            # autograph off: `call` has no tensor-dependent Python branches, and errors raised while
            # tracing then reach the caller as they are (RagInputError, not a StagingError)
            function = tf.function(self._call_given_context, reduce_retracing=True, autograph=False)
            self.__dict__["_rag_call_function"] = function  # untracked: not part of checkpoints
        outputs = function(tensors, tuple(sorted(static.items())), self._static_arguments(arguments))
        return add_retrieved_fields(outputs, retrieved, bool(resolve(arguments["output_retrieved"],
                                                                     self.config.output_retrieved)))

    def _call_given_context(self, tensors: dict, static: tuple, key: tuple):
        del key  # only part of the trace key: a changed config or retriever retraces
        return self.call(**tensors, **dict(static))

    def _check_labels(self, labels) -> None:
        check_labels(tuple(labels.shape), generator_max_positions(self.config.generator))

    def _reset_compiled_functions(self) -> None:
        """Forget traced graphs (they captured the variables of the time): after swapping sub-layers."""
        for name in ("_rag_call_function", "_rag_decode_functions"):
            self.__dict__.pop(name, None)

    # === Keras ===
    # `fit`, `evaluate` and `predict` call these inside a `tf.function` (graph mode). Data are
    # dicts of model inputs ({input_ids, attention_mask, labels}, or precomputed context); a
    # separate `y` is taken as `labels`.
    @staticmethod
    def _keras_inputs(data) -> tuple[dict, Optional[tf.Tensor]]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if not isinstance(x, Mapping):
            x = {"input_ids": x}
        x = dict(x)
        if y is not None and "labels" not in x:
            x["labels"] = y
        return x, sample_weight

    def _keras_loss(self, outputs, sample_weight) -> tf.Tensor:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else None
        if loss is None:
            raise ValueError(
                f"{type(self).__name__} computed no loss: Keras fit/evaluate need `labels` in the data "
                "(and a generation class, TFRagSequenceForGeneration or TFRagTokenForGeneration)"
            )
        if loss.shape.rank:  # one loss per example: weighted mean over the batch
            if sample_weight is not None:
                weights = tf.cast(tf.reshape(sample_weight, [-1]), loss.dtype)
                return tf.math.divide_no_nan(tf.reduce_sum(loss * weights), tf.reduce_sum(weights))
            return tf.reduce_mean(loss)
        return loss

    def _rag_loss_metric(self):
        tracker = getattr(self, "_rag_loss_tracker", None)
        if tracker is None:
            # Kept out of Keras' attribute tracking, so its variables never reach the checkpoint.
            with tf.init_scope():
                tracker = keras.metrics.Mean(name="loss")
            object.__setattr__(self, "_rag_loss_tracker", tracker)
        return tracker

    @property
    def metrics(self):
        tracker = getattr(self, "_rag_loss_tracker", None)
        return ([tracker] if tracker is not None else []) + [m for m in super().metrics if m.name != "loss"]

    def _keras_logs(self, loss, x, outputs) -> dict:
        tracker = self._rag_loss_metric()
        tracker.update_state(loss)
        return {"loss": tracker.result()}

    def train_step(self, data):
        x, sample_weight = self._keras_inputs(data)
        with tf.GradientTape() as tape:
            outputs = self(**x, training=True)
            loss = self._keras_loss(outputs, sample_weight)
            if self.losses:
                loss = loss + tf.add_n(self.losses)
        variables = self.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply_gradients([(g, v) for g, v in zip(gradients, variables) if g is not None])
        return self._keras_logs(loss, x, outputs)

    def test_step(self, data):
        x, sample_weight = self._keras_inputs(data)
        outputs = self(**x, training=False)
        loss = self._keras_loss(outputs, sample_weight)
        return self._keras_logs(loss, x, outputs)

    def predict_step(self, data):
        x, _ = self._keras_inputs(data)
        if x.get("decoder_input_ids") is None and x.get("labels") is None:
            # no target given: score the passages and predict the first token after the start token
            batch = tf.shape(x["input_ids"] if x.get("input_ids") is not None else x["doc_scores"])[0]
            start = self.config.generator.decoder_start_token_id
            x["decoder_input_ids"] = tf.fill([batch, 1], tf.constant(start if start is not None else 0, tf.int32))
        outputs = self(**x, training=False)
        keep = ("loss", "logits", "doc_scores")
        return {key: outputs[key] for key in keep if key in outputs and outputs[key] is not None and (
            key != "loss" or outputs[key].shape.rank)}

    def compile(self, *args, **kwargs):
        if kwargs.get("loss") not in (None, "passthrough"):
            raise ValueError(
                f"{type(self).__name__}.compile: the RAG loss is the model's own (marginal NLL over the "
                "retrieved passages); compile without `loss=`"
            )
        super().compile(*args, **kwargs)


class _TFRagHead(TFRagPreTrainedModel):
    """What `TFRagSequenceForGeneration` and `TFRagTokenForGeneration` share: a `TFRagModel` under
    `self.rag` (hence the `rag.` weight names) and access to its parts."""

    weight_prefix = "rag."

    def __init__(
        self,
        config: Optional[RagConfig] = None,
        question_encoder: Any = None,
        generator: Any = None,
        retriever: Any = None,
        **kwargs,
    ):
        from .rag_model import TFRagModel

        # === Config ===
        config = resolve_config(config, question_encoder, generator)
        super().__init__(config, **kwargs)
        # === Submodules ===
        self.rag = TFRagModel(config=config, question_encoder=question_encoder, generator=generator,
                              retriever=retriever, name="rag")
        self.rag.__dict__["_compile_eager_calls"] = False  # untracked by Keras

    def set_retriever(self, retriever: Any) -> None:
        self.rag.set_retriever(retriever)

    def set_context_encoder_for_training(self, ctx_encoder: Any) -> None:
        self.rag.set_context_encoder_for_training(ctx_encoder)

    @property
    def retriever(self) -> Any:
        return self.rag.retriever

    @property
    def generator(self) -> Any:
        return self.rag.generator

    @property
    def question_encoder(self) -> Any:
        return self.rag.question_encoder

    def get_input_embeddings(self):
        return self.rag.generator.get_input_embeddings()

    def get_output_embeddings(self):
        return self.rag.generator.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings):
        self._reset_compiled_functions()
        return self.rag.generator.set_output_embeddings(new_embeddings)

    def build(self, input_shape=None):
        self.ensure_built()

