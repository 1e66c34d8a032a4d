"""README.md's code, executed as it is written.

Every ```python block is read out of README.md (no copy of it lives here) and executed, with two
substitutions, both listed in `BLOCKS` per block:

- placeholder paths (`"path/to/..."` string literals) -> tiny local folders: "path/to/rag-checkpoint"
  is a RAG checkpoint written by transformers' own `RagTokenForGeneration` / `RagTokenizer`, whose
  config points at the tiny local index; other paths are fresh temporary folders;
- names a block uses without defining them (the TensorFlow block's `retriever` and `tokenizer`,
  made by the block before it) come from a prepared namespace.

A python block `BLOCKS` does not know (keyed by its first line), an unknown placeholder, an undefined
name with no prepared value, or a fence language other than python / bash / plain fails the suite,
so README.md cannot drift from what is tested. Not executed: the ```bash blocks (`make demo` /
`make test`: the whole experiment and the whole suite) and the plain ``` blocks (the demo's results
table and the source layout).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pytest

from tests.docs import support
from tests.harness.passages import PASSAGES

README = support.ROOT / "README.md"
FENCE = re.compile(r"^```(?P<lang>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
NOT_EXECUTED = {"bash": "shell commands (make demo, make test)", "": "plain text: results table, source layout"}


@dataclass
class Block:
    placeholders: dict  # "path/to/..." literal -> "checkpoint" (the prepared checkpoint) or "new" (an empty temporary path)
    prepared: set = field(default_factory=set)  # names the block uses but does not define


BLOCKS = {
    "# from transformers import RagConfig, RagTokenizer, RagRetriever, RagTokenForGeneration": Block(
        placeholders={"path/to/rag-checkpoint": "checkpoint"},
    ),
    "import tensorflow as tf": Block(
        placeholders={"path/to/rag-checkpoint": "checkpoint", "path/to/tf-trained": "new"},
        prepared={"retriever", "tokenizer"},
    ),
    # executed by tests/serving/test_readme_serving.py (it needs a Ray cluster): "index" = a sharded index folder
    "from rag_core import RagRetriever, RayIndex, RayIndexService": Block(
        placeholders={"path/to/kb_shards": "index", "path/to/kb_shards_v2": "index"},
        prepared={"config", "q_tok", "g_tok"},
    ),
}


def fenced_blocks() -> list[tuple[str, str]]:
    """`(language, code)` of every fenced block of README.md, in order."""
    return [(m.group("lang").strip(), m.group("body")) for m in FENCE.finditer(README.read_text(encoding="utf-8"))]


def python_blocks() -> list[str]:
    return [body for lang, body in fenced_blocks() if lang == "python"]


def block(first_line: str) -> str:
    found = [body for body in python_blocks() if body.splitlines()[0] == first_line]
    assert len(found) == 1, f"README.md has {len(found)} python blocks starting with {first_line!r}"
    return found[0]


def prepare(first_line: str, checkpoint, tmp_path) -> str:
    """The block with its placeholders replaced, after checking that the table covers it exactly."""
    spec, code = BLOCKS[first_line], block(first_line)
    used = {s for s in support.string_literals(code) if s.startswith("path/to/")}
    assert used == set(spec.placeholders), f"placeholders in README.md {sorted(used)} != table {sorted(spec.placeholders)}"
    undefined = support.undefined_names(code)
    assert undefined == spec.prepared, f"names the block uses but does not define: {sorted(undefined)}"
    for placeholder, kind in spec.placeholders.items():
        local = checkpoint if kind == "checkpoint" else tmp_path / placeholder.replace("/", "_")
        code = code.replace(f'"{placeholder}"', repr(str(local)))
    return code


# === The README's blocks are the ones this file knows ===
def test_every_python_block_is_in_the_table():
    assert [body.splitlines()[0] for body in python_blocks()] == list(BLOCKS)


def test_other_blocks_are_shell_or_plain_text():
    languages = [lang for lang, _ in fenced_blocks() if lang != "python"]
    assert set(languages) <= set(NOT_EXECUTED), f"fence languages this suite does not know: {set(languages) - set(NOT_EXECUTED)}"
    bash = [body for lang, body in fenced_blocks() if lang == "bash"]
    assert bash and bash[0].startswith("make demo") and "make test" in bash[0]
    command = re.compile(r"^([A-Za-z_]+=\S+\s+)*(make |python -m rag_core\.|ray start)")  # after VAR=value settings
    assert all(command.match(line.strip()) or line.strip().startswith("#") or not line.strip()
               for body in bash for line in body.splitlines()), "a bash block runs something other than make, rag_core or ray"


# === "If you used the original, switch by changing imports" (PyTorch) ===
@pytest.mark.pt
def test_switch_by_changing_imports_block(rag_checkpoint_with_index, tmp_path, capsys):
    """Runs as written on a checkpoint transformers saved; `generate` gives transformers' own ids."""
    import transformers

    first_line = "# from transformers import RagConfig, RagTokenizer, RagRetriever, RagTokenForGeneration"
    namespace = support.run(prepare(first_line, rag_checkpoint_with_index, tmp_path), name="README.md")
    ids, tokenizer = namespace["ids"], namespace["tokenizer"]
    assert type(namespace["model"]).__module__.startswith("rag_pt")
    assert ids.sequences.ndim == 2 and ids.sequences.shape[0] == 1
    titles = {title for title, _ in PASSAGES}
    assert len(ids.doc_titles) == 1 and len(ids.doc_titles[0]) == 3 and set(ids.doc_titles[0]) <= titles
    printed = capsys.readouterr().out
    assert repr(tokenizer.batch_decode(ids.sequences, skip_special_tokens=True)) in printed

    # the same call on transformers' own RAG, same checkpoint and index files
    folder = str(rag_checkpoint_with_index)
    theirs = transformers.RagTokenForGeneration.from_pretrained(
        folder, retriever=transformers.RagRetriever.from_pretrained(folder)
    ).eval()
    expected = theirs.generate(input_ids=namespace["batch"]["input_ids"], num_beams=4)
    np.testing.assert_array_equal(ids.sequences.numpy(), expected.numpy())


# === TensorFlow with Keras 3 ===
@pytest.mark.cross
def test_tensorflow_block(rag_checkpoint_with_index, tmp_path):
    """Runs as written (`fit` in graph mode, XLA `generate`, save, load in PyTorch) with the previous
    block's `retriever` and `tokenizer` prepared."""
    import torch
    from safetensors.numpy import load_file

    from rag_core import RagRetriever, RagTokenizer

    namespace = {
        "retriever": RagRetriever.from_pretrained(rag_checkpoint_with_index),
        "tokenizer": RagTokenizer.from_pretrained(rag_checkpoint_with_index),
    }
    support.run(prepare("import tensorflow as tf", rag_checkpoint_with_index, tmp_path), namespace, name="README.md")
    model, pt_model, ids = namespace["model"], namespace["pt_model"], namespace["ids"]

    assert len(model.history.history["loss"]) == 1 and np.isfinite(model.history.history["loss"][0])
    assert ids.shape[0] == 1 and ids.dtype.is_integer
    assert (tmp_path / "path_to_tf-trained" / "model.safetensors").is_file()
    # the trained weights: changed by fit, and the same in PyTorch after the round trip
    before = load_file(str(rag_checkpoint_with_index / "model.safetensors"))
    trained = model.pt_weights()
    assert any(not np.array_equal(trained[name], before[name]) for name in before)
    state = pt_model.state_dict()
    for name, value in trained.items():
        np.testing.assert_array_equal(state[name].numpy(), value, err_msg=name)
    assert pt_model.retriever is namespace["retriever"]
    # and PyTorch decodes what TensorFlow decoded
    with torch.no_grad():
        pt_ids = pt_model.eval().generate(input_ids=torch.as_tensor(namespace["data"]["input_ids"]), num_beams=4)
    np.testing.assert_array_equal(np.asarray(ids), pt_ids.numpy())
