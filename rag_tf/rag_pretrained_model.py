"""`TFRagPreTrainedModel`: loading, saving and the Keras training loop shared by the TF RAG classes."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Mapping, Optional

import tensorflow as tf
import tf_keras
from transformers import AutoConfig, TFAutoModel, TFAutoModelForSeq2SeqLM, TFPreTrainedModel

from rag_core.configuration_rag import RagConfig


def _split_prefixed_kwargs(kwargs: dict, prefix: str) -> dict:
    """Pop the `prefix*` keys of `kwargs` and return them without the prefix."""
    taken = {key[len(prefix):]: kwargs.pop(key) for key in [k for k in kwargs if k.startswith(prefix)]}
    return taken


def unpack_mapping_input(call):
    """Let `call` take its inputs as one mapping in the first argument (`model({"input_ids": ...})`),
    as Keras does when it traces a model from its save spec and as transformers' TF models allow."""

    signature = inspect.signature(call)

    @functools.wraps(call)
    def wrapper(self, input_ids=None, *args, **kwargs):
        if isinstance(input_ids, Mapping):
            bound = signature.bind_partial(self, None, *args, **kwargs).arguments
            bound.pop("self"), bound.pop("input_ids")
            # explicit arguments win over the mapping; None placeholders do not
            kwargs = {**dict(input_ids), **{k: v for k, v in bound.items() if v is not None}}
            return call(self, **kwargs)
        return call(self, input_ids, *args, **kwargs)

    wrapper.__signature__ = signature
    return wrapper


class TFRagPreTrainedModel(TFPreTrainedModel):
    """Base of the TF RAG models: `RagConfig`, `from_pretrained` / `save_pretrained` (`tf_model.h5`,
    variable names identical to transformers' TF RAG classes so their checkpoints load here and
    ours load there) and Keras `fit` / `evaluate` / `predict` on the model's own loss.

    Keras usage (graph mode, retrieval inside the step through `retrieval_bridge`):

        >>> model = TFRagTokenForGeneration(config, retriever=retriever)   # doctest: +SKIP
        >>> model.compile(optimizer=tf_keras.optimizers.Adam(1e-4))        # doctest: +SKIP
        >>> model.fit(tf.data.Dataset.from_tensor_slices(
        ...     {"input_ids": q, "attention_mask": m, "labels": y}).batch(8), epochs=3)  # doctest: +SKIP

    Compile without a `loss`: the loss is the model's (`reduce_loss=False` gives one loss per
    example, averaged over the batch, with `sample_weight` honoured; `reduce_loss=True` sums).
    """

    config_class = RagConfig
    base_model_prefix = "rag"
    _keys_to_ignore_on_load_missing = [r"position_ids"]
    # Name under which the generator's shared embedding is created (same string as transformers'
    # TF RAG, so `tf_model.h5` files match); subclasses set their own.
    load_weight_prefix = "tf_rag_model_1"

    @classmethod
    def from_pretrained_question_encoder_generator(
        cls,
        question_encoder_pretrained_model_name_or_path: Optional[str] = None,
        generator_pretrained_model_name_or_path: Optional[str] = None,
        retriever: Any = None,
        **kwargs,
    ) -> "TFRagPreTrainedModel":
        """Build a RAG model from a pretrained question encoder and a pretrained seq2seq generator.

        `question_encoder_*` / `generator_*` keyword arguments go to the respective `from_pretrained`
        (`question_encoder_model=` / `generator_model=` pass ready-made sub-models); the remaining
        ones update the `RagConfig` (e.g. `n_docs=3`). Works for BART and T5 generators.
        """
        kwargs_question_encoder = _split_prefixed_kwargs(kwargs, "question_encoder_")
        kwargs_generator = _split_prefixed_kwargs(kwargs, "generator_")

        question_encoder = kwargs_question_encoder.pop("model", None)
        if question_encoder is None:
            if question_encoder_pretrained_model_name_or_path is None:
                raise ValueError(
                    "pass question_encoder_pretrained_model_name_or_path or a ready model as question_encoder_model="
                )
            kwargs_question_encoder.setdefault(
                "config", AutoConfig.from_pretrained(question_encoder_pretrained_model_name_or_path)
            )
            question_encoder = TFAutoModel.from_pretrained(
                question_encoder_pretrained_model_name_or_path,
                name="question_encoder",
                load_weight_prefix=cls.load_weight_prefix,
                **kwargs_question_encoder,
            )

        generator = kwargs_generator.pop("model", None)
        if generator is None:
            if generator_pretrained_model_name_or_path is None:
                raise ValueError("pass generator_pretrained_model_name_or_path or a ready model as generator_model=")
            kwargs_generator.setdefault("config", AutoConfig.from_pretrained(generator_pretrained_model_name_or_path))
            generator = TFAutoModelForSeq2SeqLM.from_pretrained(
                generator_pretrained_model_name_or_path,
                name="generator",
                load_weight_prefix=cls.load_weight_prefix,
                **kwargs_generator,
            )

        config = kwargs.pop("config", None)
        if config is None:
            config = RagConfig.from_question_encoder_generator_configs(
                question_encoder.config, generator.config, **kwargs
            )
        return cls(config=config, question_encoder=question_encoder, generator=generator, retriever=retriever)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' `from_pretrained`; `from_pt=True` loads a PyTorch checkpoint (`model.safetensors`
        or `pytorch_model.bin`) through `rag_tf.convert`, without torch."""
        if kwargs.pop("from_pt", False):  # weight conversion (issue 5): convert through the table, then load
            from .convert import from_pt_checkpoint

            return from_pt_checkpoint(cls.from_pretrained, pretrained_model_name_or_path, *model_args, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @property
    def input_signature(self) -> dict:
        """The serving inputs: a forward pass given context (no retriever inside a SavedModel).
        Keras traces this when the model is saved; see `tests/tf/test_graph_keras.py` for an export."""
        ids = tf.TensorSpec([None, None], tf.int32)
        return {
            "context_input_ids": ids,
            "context_attention_mask": ids,
            "doc_scores": tf.TensorSpec([None, None], tf.float32),
            "decoder_input_ids": ids,
        }

    def __call__(self, *args, **kwargs):
        # Keras insists on the first `call` argument; RAG's first (`input_ids`) is optional when
        # the context is given, so default it to None like every other argument.
        if not args and "input_ids" not in kwargs:
            kwargs["input_ids"] = None
        return super().__call__(*args, **kwargs)

    # === Keras ===
    # `fit`, `evaluate` and `predict` call these inside a `tf.function` (graph mode). Data are
    # dicts of model inputs ({input_ids, attention_mask, labels}, or precomputed context); a
    # separate `y` is taken as `labels`.
    @staticmethod
    def _keras_inputs(data) -> tuple[dict, Optional[tf.Tensor]]:
        x, y, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
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

    def _loss_tracker(self):
        tracker = getattr(self, "_rag_loss_tracker", None)
        if tracker is None:
            # Kept out of Keras' attribute tracking, so its variables never reach the checkpoint.
            with tf.init_scope():
                tracker = tf_keras.metrics.Mean(name="loss")
            object.__setattr__(self, "_rag_loss_tracker", tracker)
        return tracker

    @property
    def metrics(self):
        tracker = getattr(self, "_rag_loss_tracker", None)
        return ([tracker] if tracker is not None else []) + [m for m in super().metrics if m.name != "loss"]

    def _keras_logs(self, loss, x, outputs) -> dict:
        tracker = self._loss_tracker()
        tracker.update_state(loss)
        return {"loss": tracker.result()}

    def train_step(self, data):
        x, sample_weight = self._keras_inputs(data)
        with tf.GradientTape() as tape:
            outputs = self(**x, training=True)
            loss = self._keras_loss(outputs, sample_weight)
            if self.losses:
                loss = loss + tf.add_n(self.losses)
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        return self._keras_logs(loss, x, outputs)

    def test_step(self, data):
        x, sample_weight = self._keras_inputs(data)
        outputs = self(**x, training=False)
        loss = self._keras_loss(outputs, sample_weight)
        return self._keras_logs(loss, x, outputs)

    def predict_step(self, data):
        x, _ = self._keras_inputs(data)
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
