"""The original's docstring examples, run here with only the imports switched.

"Switching is changing imports": every usage example in the docstrings of transformers 4.57's RAG
classes is run with `from transformers import X` replaced by `from rag_core / rag_pt / rag_tf import X`
(`support.switch_imports`; `AutoTokenizer` becomes our `RagTokenizer`), against tiny checkpoints that
transformers' own classes saved into local folders standing in for the hub ids
(`support.HUB_IDS`: "facebook/rag-token-nq" -> a folder written by transformers'
`RagTokenForGeneration(...).save_pretrained` and `RagTokenizer.save_pretrained`, ...). `"./rag"`
stays as written: the tests run in a temporary working directory.

The examples (copied verbatim in `tests/docs/originals.py`; `transformers/models/rag/` of 4.57.6):

| file | documented object | test |
|---|---|---|
| retrieval_rag.py | `RagRetriever` (class docstring, 4 examples) | `test_retriever_wiki_dpr_example`, `test_retriever_indexed_dataset_example`, `test_retriever_custom_index_on_disk_example`, `test_retriever_legacy_example` |
| modeling_rag.py | `RagPreTrainedModel.from_pretrained_question_encoder_generator` | `test_rag_model_from_question_encoder_generator_example` |
| modeling_rag.py | `RagModel.forward` | `test_rag_model_forward_example` |
| modeling_rag.py | `RagSequenceForGeneration.forward` | `test_rag_sequence_example` |
| modeling_rag.py | `RagTokenForGeneration.forward` | `test_rag_token_example` |
| modeling_tf_rag.py | `TFRagPreTrainedModel.from_pretrained_question_encoder_generator` | `test_tf_rag_model_from_question_encoder_generator_example` |
| modeling_tf_rag.py | `TFRagModel.call` | `test_tf_rag_model_call_example` |
| modeling_tf_rag.py | `TFRagTokenForGeneration.call` | `test_tf_rag_token_example` |
| modeling_tf_rag.py | `TFRagSequenceForGeneration.call` | `test_tf_rag_sequence_example` |

`RagConfig` (configuration_rag.py) and `RagTokenizer` (tokenization_rag.py) have no example in their
docstrings; the tokenizer calls the examples make (`tokenizer(text_target=...)`,
`prepare_seq2seq_batch`, `batch_decode`) are covered by the model examples, and
`test_text_target_is_tokenized_by_the_generator_tokenizer` pins the difference
rag_core/tokenization_rag.py documents (targets always go through the generator tokenizer; the
original hands `text_target` to the question-encoder tokenizer, so its PyTorch examples' labels are
BERT ids).

Run with only the imports switched (hub ids -> stand-ins): the PyTorch and TensorFlow
`from_pretrained_question_encoder_generator` examples up to their retriever line, and the RagRetriever
examples for your own index (the in-memory one with its `...` placeholder filled by a prepared
dataset, the on-disk one with its placeholder paths filled). Every model example then needs one edit,
the retriever line below. The TFRagSequenceForGeneration example also needs `import tensorflow as tf`,
which the original forgot (it raises NameError there too).

What cannot run as written, by design (nothing is downloaded), and the documented alternative:

- `RagRetriever.from_pretrained(..., index_name="exact" | "compressed", use_dummy_dataset=True)` and
  `dataset="wiki_dpr"`: the original downloads wiki_dpr (or its dummy); here `IndexNotFoundError`
  ("... reads wiki_dpr from local files and never downloads it ..."). Alternative: your own index
  (`index_name="custom", passages_path=..., index_path=...`, the original's own third retriever
  example), or local wiki_dpr files (`passages_path=` / `index_path=`).
- `index_name="legacy"`: the original fetches DPR's files from a bucket; here `IndexNotFoundError`
  ("... Nothing is downloaded"). Alternative: `index_path=` a local folder with DPR's files.

Each test asserts something that could fail: shapes, and equality with transformers' own PyTorch
RAG (transformers 5 here) on the same checkpoint where the same call exists there (atol 1e-5);
TensorFlow results against our PyTorch classes (atol 1e-4).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.docs import support
from tests.docs.originals import ORIGINAL_EXAMPLES
from tests.harness.passages import PASSAGES

PT_ATOL = 1e-5  # ours vs transformers' PyTorch RAG, same checkpoint, same inputs
TF_ATOL = 1e-4  # our TensorFlow vs our PyTorch
QUESTION = "How many people live in Paris?"
TARGET = "In Paris, there are 10 million people."
NEVER_DOWNLOADS = "never downloads"

COVERED: dict[tuple[str, str], str] = {}  # example -> the test that runs it


def covers(file: str, qualname: str):
    def register(test):
        COVERED[file, qualname] = test.__name__
        return test

    return register


def example(file: str, qualname: str, stand_ins) -> str:
    """The stored example as code: imports switched, hub ids replaced by the stand-in folders."""
    return support.with_stand_ins(support.switch_imports(support.doctest_code(ORIGINAL_EXAMPLES[file, qualname])), stand_ins)


def local_retriever(kb) -> tuple[str, str]:
    """The documented alternative to the original's downloaded dummy wiki_dpr: your own index files."""
    return (
        'index_name="exact", use_dummy_dataset=True',
        f'index_name="custom", passages_path={kb["passages_path"]!r}, index_path={kb["index_path"]!r}',
    )


@pytest.fixture
def in_tmp_dir(tmp_path, monkeypatch):
    """Run in an empty working directory (the examples write "./rag")."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# === transformers' own results on the same checkpoints ===
def hf_retriever(folder, kb):
    import transformers

    return transformers.RagRetriever.from_pretrained(os.fspath(folder), index_name="custom", **kb)


def hf_model(class_name: str, folder, retriever=None):
    import transformers

    return getattr(transformers, class_name).from_pretrained(os.fspath(folder), retriever=retriever).eval()


def assert_same_contexts(ours: dict, theirs: dict) -> None:
    """Same passages and the same context ids per row; ours are padded to the longest row, the
    original's to `max_combined_length` (README: "pads to the longest context")."""
    np.testing.assert_array_equal(support.numpy(ours["doc_ids"]), support.numpy(theirs["doc_ids"]))
    ours_ids, ours_mask = support.numpy(ours["context_input_ids"]), support.numpy(ours["context_attention_mask"])
    their_ids, their_mask = support.numpy(theirs["context_input_ids"]), support.numpy(theirs["context_attention_mask"])
    for row in range(len(ours_ids)):
        np.testing.assert_array_equal(ours_ids[row][ours_mask[row] == 1], their_ids[row][their_mask[row] == 1])


# === The stored copies and their coverage ===
def test_stored_examples_are_the_originals():
    folder = support.oracle_rag_sources()
    if folder is None:
        pytest.skip("transformers 4.57's sources not found (set RAG_ORACLE_SITE_PACKAGES, or build .venv-oracle)")
    found = {}
    for file in ("configuration_rag.py", "tokenization_rag.py", "retrieval_rag.py", "modeling_rag.py", "modeling_tf_rag.py"):
        for qualname, docstring in support.docstrings_with_examples(folder / file).items():
            found[file, qualname] = support.prompt_lines(docstring)
    assert sorted(found) == sorted(ORIGINAL_EXAMPLES), "the original documents other objects than originals.py holds"
    for key, text in found.items():
        assert ORIGINAL_EXAMPLES[key].strip("\n") == text, f"{key}: the stored copy differs from the original"


def test_every_original_example_has_a_test():
    assert sorted(COVERED) == sorted(ORIGINAL_EXAMPLES)


def test_import_switch_leaves_the_rest_of_the_code_as_written():
    text = ORIGINAL_EXAMPLES["modeling_rag.py", "RagTokenForGeneration.forward"]
    original, switched = support.doctest_code(text), support.switch_imports(support.doctest_code(text))
    assert switched.splitlines()[:3] == [
        "from rag_core import RagTokenizer as AutoTokenizer",
        "from rag_core import RagRetriever",
        "from rag_pt import RagTokenForGeneration",
    ]
    assert switched.splitlines()[3:] == original.splitlines()[1:]


# === RagRetriever (retrieval_rag.py, class docstring: four examples) ===
def retriever_sections(stand_ins) -> list[str]:
    code = example("retrieval_rag.py", "RagRetriever", stand_ins)
    parts = support.sections(code, "# To load")
    assert len(parts) == 4
    return parts


def assert_retrieves_harness_passages(retriever, expected_ids=(3, 7)) -> None:
    """Questions placed next to passages 3 and 7 retrieve them first, with their title and text."""
    from tests.harness.retrieval import tiny_question_vectors

    embeds, doc_ids, doc_dicts = retriever.retrieve(tiny_question_vectors(near=[3, 7]), n_docs=2)
    assert embeds.shape == (2, 2, 16) and doc_ids.shape == (2, 2)
    np.testing.assert_array_equal(doc_ids[:, 0], expected_ids)
    assert [d["title"][0] for d in doc_dicts] == [PASSAGES[3][0], PASSAGES[7][0]]
    assert [d["text"][0] for d in doc_dicts] == [PASSAGES[3][1], PASSAGES[7][1]]


@covers("retrieval_rag.py", "RagRetriever")
def test_retriever_wiki_dpr_example(stand_ins, tmp_path):
    """As written (wiki_dpr, "compressed"): the original downloads wiki_dpr; ours names the files it needs."""
    from rag_core import IndexNotFoundError
    from tests.harness.retrieval import tiny_embeddings, write_passages

    code = retriever_sections(stand_ins)[0]
    with pytest.raises(IndexNotFoundError, match=NEVER_DOWNLOADS) as raised:
        support.run(code)
    index_file = "psgs_w100.nq.IVF4096_HNSW128_PQ128-IP-train.faiss"
    assert "passages_path" in str(raised.value) and index_file in str(raised.value)

    # the documented alternative: wiki_dpr's files, already on disk (here: the harness passages in
    # wiki_dpr's layout, the index under the name wiki_dpr gives the "compressed" one)
    wiki = tmp_path / "wiki_dpr"
    write_passages(str(wiki), PASSAGES, tiny_embeddings())
    os.replace(wiki / "index.faiss", wiki / "passages" / index_file)
    local = f'index_name="compressed", passages_path={str(wiki / "passages")!r}'
    namespace = support.run(support.replace_exact(code, ('index_name="compressed"', local)))
    retriever = namespace["retriever"]
    assert type(retriever.index).__name__ == "CanonicalIndex"
    assert_retrieves_harness_passages(retriever)


def test_retriever_indexed_dataset_example(stand_ins, kb):
    """As written, with the example's placeholder (`...`) filled by a datasets.Dataset with a faiss index."""
    import datasets

    dataset = datasets.load_from_disk(kb["passages_path"])
    dataset.load_faiss_index("embeddings", kb["index_path"])  # "it must have a supported index"
    code = support.replace_exact(retriever_sections(stand_ins)[1], ("    ...\n", "    prepared_indexed_dataset\n"))
    namespace = support.run(code, {"prepared_indexed_dataset": dataset})
    retriever = namespace["retriever"]
    assert retriever.config.index_name == "custom"  # as the original: indexed_dataset means a custom index
    assert_retrieves_harness_passages(retriever)


def test_retriever_custom_index_on_disk_example(stand_ins, kb):
    """As written, with the example's placeholder paths replaced by the tiny index; same retrieval as
    transformers' RagRetriever on the same files."""
    code = support.replace_exact(
        retriever_sections(stand_ins)[2],
        ('"path/to/my/dataset"', repr(kb["passages_path"])),
        ('"path/to/my/index"', repr(kb["index_path"])),
    )
    retriever = support.run(code)["retriever"]
    assert_retrieves_harness_passages(retriever)

    from tests.harness.retrieval import QUESTIONS, tiny_question_ids, tiny_question_vectors

    ids = tiny_question_ids(retriever.question_encoder_tokenizer, QUESTIONS[:2])
    vectors = tiny_question_vectors(near=[5, 9])
    ours = retriever(ids, vectors, return_tensors="np")
    theirs = hf_retriever(stand_ins["rag-token"], kb)(ids, vectors, return_tensors="np")
    assert_same_contexts(ours, theirs)
    support.assert_close(ours["retrieved_doc_embeds"], theirs["retrieved_doc_embeds"], 0, "retrieved_doc_embeds")


def test_retriever_legacy_example(stand_ins, tmp_path):
    """As written (DPR's legacy index): the original fetches DPR's files; ours reads them from `index_path`."""
    from rag_core import IndexNotFoundError

    code = retriever_sections(stand_ins)[3]
    with pytest.raises(IndexNotFoundError, match="Nothing is downloaded"):
        support.run(code)
    legacy = support.write_legacy_index(tmp_path / "dpr")
    local = f'index_name="legacy", index_path={str(legacy)!r}'
    retriever = support.run(support.replace_exact(code, ('index_name="legacy"', local)))["retriever"]
    assert_retrieves_harness_passages(retriever, expected_ids=(103, 107))  # DPR's ids, not row numbers


# === PyTorch (modeling_rag.py) ===
@pytest.mark.pt
@covers("modeling_rag.py", "RagPreTrainedModel.from_pretrained_question_encoder_generator")
def test_rag_model_from_question_encoder_generator_example(stand_ins, in_tmp_dir):
    """Runs as written (DPR and T5 folders saved by transformers); "./rag" loads in transformers too."""
    import torch
    import transformers

    namespace = support.run(example("modeling_rag.py", "RagPreTrainedModel.from_pretrained_question_encoder_generator", stand_ins))
    model = namespace["model"]
    assert type(model).__module__.startswith("rag_pt")
    assert (model.config.question_encoder.model_type, model.config.generator.model_type) == ("dpr", "t5")
    assert {"config.json", "model.safetensors"} <= set(os.listdir(in_tmp_dir / "rag"))

    state = model.state_dict()
    dpr = transformers.DPRQuestionEncoder.from_pretrained(stand_ins["dpr-question-encoder"]).state_dict()
    t5 = transformers.T5ForConditionalGeneration.from_pretrained(stand_ins["t5"]).state_dict()
    for prefix, reference in (("question_encoder.", dpr), ("generator.", t5)):
        for name, value in reference.items():
            torch.testing.assert_close(state[prefix + name], value, rtol=0, atol=0, msg=name)
    theirs = hf_model("RagModel", in_tmp_dir / "rag").state_dict()  # what we save, transformers loads
    assert sorted(theirs) == sorted(state)
    for name, value in theirs.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0, msg=name)


@pytest.mark.pt
@covers("modeling_rag.py", "RagModel.forward")
def test_rag_model_forward_example(stand_ins, kb):
    """As written: the dummy wiki_dpr raises; with the local index, the same outputs as transformers' RagModel."""
    from rag_core import IndexNotFoundError

    code = example("modeling_rag.py", "RagModel.forward", stand_ins)
    with pytest.raises(IndexNotFoundError, match=NEVER_DOWNLOADS):
        support.run(code)
    namespace = support.run(support.replace_exact(code, local_retriever(kb)))
    outputs, input_ids = namespace["outputs"], namespace["inputs"]["input_ids"]

    theirs = hf_model("RagModel", stand_ins["rag-token"], hf_retriever(stand_ins["rag-token"], kb))(input_ids=input_ids)
    n_docs, length = 3, outputs.logits.shape[1]
    assert outputs.logits.shape == (n_docs, length, 1000) and outputs.doc_scores.shape == (1, n_docs)
    assert length <= theirs.logits.shape[1] == 48  # max_combined_length
    support.assert_close(outputs.doc_scores, theirs.doc_scores, PT_ATOL, "doc_scores")
    # no decoder_input_ids: the generator decodes the (shifted) contexts, which the original pads to
    # max_combined_length and ours to the longest; the positions both have agree
    support.assert_close(outputs.logits, theirs.logits[:, :length], PT_ATOL, "logits")


def run_pt_generation_example(qualname: str, stand_ins, kb) -> list[dict]:
    """Run a RAG{Sequence,Token}ForGeneration example in its parts; return the namespace after each."""
    from rag_core import IndexNotFoundError

    code = example("modeling_rag.py", qualname, stand_ins)
    with pytest.raises(IndexNotFoundError, match=NEVER_DOWNLOADS):
        support.run(code)
    code = support.replace_exact(code, local_retriever(kb))
    namespace, snapshots = {}, []
    for part in support.sections(code, "# or "):
        support.run(part, namespace)
        snapshots.append(dict(namespace))
    return snapshots


def check_pt_part_one(first: dict, class_name: str, checkpoint, kb) -> None:
    """The one-call forward (retrieval inside) equals transformers' on the same checkpoint."""
    tokenizer, labels, outputs = first["tokenizer"], first["labels"], first["outputs"]
    assert tokenizer.generator.decode(labels[0], skip_special_tokens=True) == TARGET
    theirs = hf_model(class_name, checkpoint, hf_retriever(checkpoint, kb))(input_ids=first["input_ids"], labels=labels)
    assert outputs.logits.shape == (3, labels.shape[1], 1000) and outputs.loss.shape == (1,)
    for name in ("doc_scores", "logits", "loss"):
        support.assert_close(getattr(outputs, name), getattr(theirs, name), PT_ATOL, name)


def check_pt_part_two(second: dict, class_name: str, checkpoint, kb) -> None:
    """Encode, retrieve, score and forward by hand: each step equals transformers' on the same checkpoint."""
    import torch

    model, input_ids, hidden = second["model"], second["input_ids"], second["question_hidden_states"]
    assert model.retriever is None and model.config.use_dummy_dataset is True
    theirs = hf_model(class_name, checkpoint)
    assert hidden.shape == (1, 16)
    support.assert_close(hidden, theirs.question_encoder(input_ids)[0], PT_ATOL, "question_hidden_states")
    docs_dict = second["docs_dict"]
    assert all(isinstance(docs_dict[k], torch.Tensor) for k in ("context_input_ids", "retrieved_doc_embeds"))
    their_docs = hf_retriever(checkpoint, kb)(input_ids.numpy(), hidden.detach().numpy(), return_tensors="pt")
    assert_same_contexts(docs_dict, their_docs)
    support.assert_close(second["doc_scores"], (hidden @ docs_dict["retrieved_doc_embeds"][0].T), 1e-6, "doc_scores")
    context = {k: docs_dict[k] for k in ("context_input_ids", "context_attention_mask")}
    reference = theirs(**context, doc_scores=second["doc_scores"], decoder_input_ids=second["labels"])
    support.assert_close(second["outputs"].logits, reference.logits, PT_ATOL, "logits given context")


@pytest.mark.pt
@covers("modeling_rag.py", "RagSequenceForGeneration.forward")
def test_rag_sequence_example(stand_ins, kb):
    """As written: the dummy wiki_dpr raises; with the local index every step equals transformers'.

    The example loads "facebook/rag-token-nq" (a RAG-Token checkpoint) into RagSequenceForGeneration:
    that works, and ours says so with a warning."""
    with pytest.warns(UserWarning, match="saved from RagTokenForGeneration and is loaded into RagSequenceForGeneration"):
        first, second = run_pt_generation_example("RagSequenceForGeneration.forward", stand_ins, kb)
    check_pt_part_one(first, "RagSequenceForGeneration", stand_ins["rag-token"], kb)
    check_pt_part_two(second, "RagSequenceForGeneration", stand_ins["rag-sequence"], kb)


@pytest.mark.pt
@covers("modeling_rag.py", "RagTokenForGeneration.forward")
def test_rag_token_example(stand_ins, kb):
    """As written: the dummy wiki_dpr raises; with the local index every step, `generate` from the
    context and `batch_decode` included, equals transformers'."""
    first, second, third = run_pt_generation_example("RagTokenForGeneration.forward", stand_ins, kb)
    check_pt_part_one(first, "RagTokenForGeneration", stand_ins["rag-token"], kb)
    check_pt_part_two(second, "RagTokenForGeneration", stand_ins["rag-token"], kb)
    docs_dict, generated = third["docs_dict"], third["generated"]
    theirs = hf_model("RagTokenForGeneration", stand_ins["rag-token"]).generate(
        context_input_ids=docs_dict["context_input_ids"],
        context_attention_mask=docs_dict["context_attention_mask"],
        doc_scores=third["doc_scores"],
    )
    np.testing.assert_array_equal(generated.numpy(), theirs.numpy())
    strings = third["generated_string"]
    assert isinstance(strings, list) and len(strings) == 1 and isinstance(strings[0], str)
    assert strings == third["tokenizer"].generator.batch_decode(theirs, skip_special_tokens=True)


@pytest.mark.pt
def test_text_target_is_tokenized_by_the_generator_tokenizer(stand_ins):
    """`tokenizer(text_target=...)`, as the PyTorch examples call it, gives generator ids here; the
    original's RagTokenizer passes it to the question-encoder tokenizer (BERT ids for a BART generator)."""
    import transformers

    from rag_core import RagTokenizer

    ours = RagTokenizer.from_pretrained(stand_ins["rag-token"])
    original = transformers.AutoTokenizer.from_pretrained(os.fspath(stand_ins["rag-token"]))
    labels = ours(text_target=TARGET)["input_ids"]
    assert labels == ours.generator(TARGET)["input_ids"] and labels[0] == ours.generator.bos_token_id
    assert original(text_target=TARGET)["input_ids"] == ours.question_encoder(TARGET)["input_ids"]  # [CLS] ... [SEP]
    batch = ours.prepare_seq2seq_batch([QUESTION], [TARGET], return_tensors="pt")
    assert batch["input_ids"].tolist() == [ours.question_encoder(QUESTION)["input_ids"]]
    assert batch["labels"].tolist() == [labels]


# === TensorFlow (modeling_tf_rag.py) ===
def pt_reference(class_name: str, checkpoint, retriever=None):
    import rag_pt

    return getattr(rag_pt, class_name).from_pretrained(checkpoint, retriever=retriever).eval()


def torch_inputs(**arrays):
    import torch

    return {k: torch.as_tensor(support.numpy(v)) for k, v in arrays.items()}


@pytest.mark.cross
@covers("modeling_tf_rag.py", "TFRagPreTrainedModel.from_pretrained_question_encoder_generator")
def test_tf_rag_model_from_question_encoder_generator_example(stand_ins, kb, in_tmp_dir):
    """As written up to the retriever (DPR, T5 and BART folders saved by transformers' PyTorch classes;
    `*_from_pt=True` accepted); the dummy wiki_dpr raises; with the local index "./rag" loads back."""
    import torch

    from rag_core import IndexNotFoundError

    code = example("modeling_tf_rag.py", "TFRagPreTrainedModel.from_pretrained_question_encoder_generator", stand_ins)
    with pytest.raises(IndexNotFoundError, match=NEVER_DOWNLOADS):
        support.run(code)
    # the two models built before the retriever line: DPR + T5, then DPR + BART
    first, second = support.sections(code, "# alternatively")
    t5_model = support.run(first)["model"]
    assert (t5_model.config.question_encoder.model_type, t5_model.config.generator.model_type) == ("dpr", "t5")
    namespace = support.run(support.replace_exact(code, local_retriever(kb)))
    model, retriever = namespace["model"], namespace["retriever"]
    assert type(model).__name__ == "TFRagModel" and model.retriever is retriever
    assert model.config.generator.model_type == "bart"

    # "./rag" holds transformers' PyTorch layout: our PyTorch RagModel reads the DPR and BART weights
    # transformers saved, unchanged
    import transformers

    saved = pt_reference("RagModel", in_tmp_dir / "rag").state_dict()
    dpr = transformers.DPRQuestionEncoder.from_pretrained(stand_ins["dpr-question-encoder"]).state_dict()
    bart = transformers.BartForConditionalGeneration.from_pretrained(stand_ins["bart"]).state_dict()
    for prefix, reference in (("question_encoder.", dpr), ("generator.", bart)):
        for name, value in reference.items():
            torch.testing.assert_close(saved[prefix + name], value, rtol=0, atol=0, msg=name)
    for name, value in model.pt_weights().items():
        np.testing.assert_array_equal(value, saved[name].numpy(), err_msg=name)


@pytest.mark.cross
@covers("modeling_tf_rag.py", "TFRagModel.call")
def test_tf_rag_model_call_example(stand_ins, kb):
    """As written: the dummy wiki_dpr raises; with the local index, the outputs of our PyTorch RagModel."""
    from rag_core import IndexNotFoundError

    code = example("modeling_tf_rag.py", "TFRagModel.call", stand_ins)
    with pytest.raises(IndexNotFoundError, match=NEVER_DOWNLOADS):
        support.run(code)
    namespace = support.run(support.replace_exact(code, local_retriever(kb)))
    outputs, input_ids = namespace["outputs"], namespace["input_ids"]
    reference = pt_reference("RagModel", stand_ins["rag-token"], namespace["retriever"])(**torch_inputs(input_ids=input_ids))
    assert outputs.logits.shape == tuple(reference.logits.shape)
    for name in ("doc_scores", "logits"):
        support.assert_close(outputs[name], getattr(reference, name), TF_ATOL, name)


def run_tf_generation_example(qualname: str, stand_ins, kb, *edits: tuple[str, str]) -> list[dict]:
    from rag_core import IndexNotFoundError

    code = support.replace_exact(example("modeling_tf_rag.py", qualname, stand_ins), *edits)
    with pytest.raises(IndexNotFoundError, match=NEVER_DOWNLOADS):
        support.run(code)
    namespace, snapshots = {}, []
    for part in support.sections(support.replace_exact(code, local_retriever(kb)), "# or "):
        support.run(part, namespace)
        snapshots.append(dict(namespace))
    return snapshots


def check_tf_generation_example(snapshots: list[dict], class_name: str, checkpoint) -> None:
    """Every step of a TF generation example against our PyTorch class on the same checkpoint."""
    import torch

    first, second, third = snapshots
    input_dict = first["input_dict"]
    reference = pt_reference(class_name, checkpoint, first["retriever"])
    expected = reference(**torch_inputs(input_ids=input_dict["input_ids"], attention_mask=input_dict["attention_mask"],
                                        labels=input_dict["labels"]))
    outputs = first["outputs"]
    assert "retrieved_doc_ids" in outputs  # output_retrieved=True
    for name in ("doc_scores", "logits", "loss"):
        support.assert_close(outputs[name], getattr(expected, name), TF_ATOL, f"one call: {name}")

    hidden = second["question_hidden_states"]
    assert tuple(hidden.shape) == (1, 16)
    support.assert_close(hidden, reference.question_encoder(torch_inputs(x=second["input_ids"])["x"])[0], TF_ATOL,
                         "question_hidden_states")
    docs_dict = second["docs_dict"]
    assert type(docs_dict["context_input_ids"]).__module__.startswith("tensorflow")
    context = torch_inputs(context_input_ids=docs_dict["context_input_ids"],
                           context_attention_mask=docs_dict["context_attention_mask"], doc_scores=second["doc_scores"])
    with torch.no_grad():
        expected = reference(**context, decoder_input_ids=torch_inputs(y=input_dict["labels"])["y"])
    support.assert_close(second["outputs"]["logits"], expected.logits, TF_ATOL, "logits given context")

    np.testing.assert_array_equal(support.numpy(third["generated"]), reference.generate(**context).numpy())
    strings = third["generated_string"]
    assert strings == third["tokenizer"].generator.batch_decode(support.numpy(third["generated"]), skip_special_tokens=True)


@pytest.mark.cross
@covers("modeling_tf_rag.py", "TFRagTokenForGeneration.call")
def test_tf_rag_token_example(stand_ins, kb):
    """As written: the dummy wiki_dpr raises; with the local index every step equals our PyTorch RAG-Token."""
    snapshots = run_tf_generation_example("TFRagTokenForGeneration.call", stand_ins, kb)
    check_tf_generation_example(snapshots, "RagTokenForGeneration", stand_ins["rag-token"])


@pytest.mark.cross
@covers("modeling_tf_rag.py", "TFRagSequenceForGeneration.call")
def test_tf_rag_sequence_example(stand_ins, kb):
    """As written: the dummy wiki_dpr raises; with the local index every step equals our PyTorch RAG-Sequence."""
    # the original's example uses `tf` without importing it (a NameError there too): the one edit
    first_import = "from rag_core import RagTokenizer as AutoTokenizer\n"
    missing_import = (first_import, "import tensorflow as tf\n" + first_import)
    snapshots = run_tf_generation_example("TFRagSequenceForGeneration.call", stand_ins, kb, missing_import)
    check_tf_generation_example(snapshots, "RagSequenceForGeneration", stand_ins["rag-sequence"])
