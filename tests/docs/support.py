"""Helpers of the docs suite: turning documentation examples into code that runs here, and the tiny
checkpoints that stand in for the hub ids the examples name.

An example is run with only its imports switched (`switch_imports`) and its hub ids replaced by
local folders (`with_stand_ins`). Any further edit is an explicit `(old, new)` pair passed to
`replace_exact`, which fails when `old` is not in the code, so an edit can never silently stop
applying.
"""

from __future__ import annotations

import ast
import glob
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

# `from transformers import X` -> where X lives here. AutoTokenizer on a RAG checkpoint gives the
# original's RagTokenizer, so it is switched to ours under the same name.
IMPORTS = {
    "RagConfig": ("rag_core", "RagConfig"),
    "RagTokenizer": ("rag_core", "RagTokenizer"),
    "RagRetriever": ("rag_core", "RagRetriever"),
    "AutoTokenizer": ("rag_core", "RagTokenizer"),
    "RagModel": ("rag_pt", "RagModel"),
    "RagSequenceForGeneration": ("rag_pt", "RagSequenceForGeneration"),
    "RagTokenForGeneration": ("rag_pt", "RagTokenForGeneration"),
    "TFRagModel": ("rag_tf", "TFRagModel"),
    "TFRagSequenceForGeneration": ("rag_tf", "TFRagSequenceForGeneration"),
    "TFRagTokenForGeneration": ("rag_tf", "TFRagTokenForGeneration"),
}

# The hub ids of the original's examples -> the stand-in folder (a key of the `stand_ins` fixture).
# "facebook/dpr-ctx_encoder-single-nq-base" is what the original's RagRetriever examples load a
# retriever from; a DPR context encoder holds no RAG config (the original fails on it too), so the
# RAG checkpoint stands in for it.
HUB_IDS = {
    "facebook/rag-token-nq": "rag-token",
    "facebook/rag-token-base": "rag-token",
    "facebook/rag-sequence-nq": "rag-sequence",
    "facebook/dpr-ctx_encoder-single-nq-base": "rag-token",
    "facebook/dpr-question_encoder-single-nq-base": "dpr-question-encoder",
    "google-t5/t5-small": "t5",
    "facebook/bart-base": "bart",
}


# === Examples as code ===
def doctest_code(text: str) -> str:
    """The code of doctest lines: `>>> ` and `... ` prompts removed, output lines dropped."""
    lines = []
    for line in text.strip("\n").splitlines():
        if line.startswith((">>> ", "... ")):
            lines.append(line[4:])
        elif line in (">>>", "..."):
            lines.append("")
    return "\n".join(lines) + "\n"


_FROM_TRANSFORMERS = re.compile(r"^(?P<indent>[ \t]*)from transformers import (?P<names>[^\n()]+)$", re.MULTILINE)


def switch_imports(code: str) -> str:
    """`from transformers import A, B` -> the same names from rag_core / rag_pt / rag_tf (nothing else changes)."""

    def switch(match: re.Match) -> str:
        lines = []
        for name in (n.strip() for n in match.group("names").split(",")):
            if name not in IMPORTS:
                raise KeyError(f"no switch for `from transformers import {name}`: add it to IMPORTS")
            package, ours = IMPORTS[name]
            alias = f" as {name}" if ours != name else ""
            lines.append(f"{match.group('indent')}from {package} import {ours}{alias}")
        return "\n".join(lines)

    switched = _FROM_TRANSFORMERS.sub(switch, code)
    if re.search(r"\btransformers\b", switched):
        raise AssertionError(f"transformers is still used after switching the imports:\n{switched}")
    return switched


def with_stand_ins(code: str, folders: dict) -> str:
    """Every quoted hub id -> the repr of its stand-in folder; fails on a hub id this table lacks."""
    for hub_id, key in HUB_IDS.items():
        code = code.replace(f'"{hub_id}"', repr(str(folders[key])))
    left = re.findall(r'"(?:facebook|google-t5|google)/[^"]+"', code)
    if left:
        raise KeyError(f"hub ids without a stand-in: {left}; add them to HUB_IDS")
    return code


def replace_exact(code: str, *edits: tuple[str, str]) -> str:
    """Apply `(old, new)` edits; each `old` must occur in the code."""
    for old, new in edits:
        if old not in code:
            raise AssertionError(f"edit no longer applies, {old!r} is not in:\n{code}")
        code = code.replace(old, new)
    return code


def run(code: str, namespace: Optional[dict] = None, name: str = "<example>") -> dict:
    """Execute `code` in `namespace` (a fresh one by default) and return it."""
    namespace = {"__name__": "__docs_example__"} if namespace is None else namespace
    exec(compile(code, name, "exec"), namespace)  # noqa: S102 - running documentation is the point
    return namespace


def sections(code: str, marker: str) -> list[str]:
    """Split code at the lines that start with `marker` (each section begins with one)."""
    parts, current = [], []
    for line in code.splitlines(keepends=True):
        if line.startswith(marker) and current:
            parts.append("".join(current))
            current = []
        current.append(line)
    parts.append("".join(current))
    return parts


def prompt_lines(docstring: str) -> str:
    """The `>>>` / `...` lines of a docstring, stripped (how originals.py stores them)."""
    return "\n".join(line.strip() for line in docstring.splitlines() if line.strip().startswith((">>>", "...")))


def docstrings_with_examples(path: str) -> dict[str, str]:
    """`{qualified name: docstring}` of the classes and functions of a source file whose docstring has `>>>`."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    found = {}

    def walk(node, prefix=""):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                doc = ast.get_docstring(child, clean=False)
                if doc and ">>>" in doc:
                    found[name] = doc
                walk(child, name + ".")

    walk(tree)
    return found


def oracle_rag_sources() -> Optional[Path]:
    """transformers 4.57's `models/rag` folder, if it can be found: the running transformers when it is
    4.57, else `$RAG_ORACLE_SITE_PACKAGES` or the oracle environment `make test` builds (`.venv-oracle`)."""
    if importlib.metadata.version("transformers").startswith("4.57."):
        return Path(importlib.util.find_spec("transformers").origin).parent / "models" / "rag"
    sites = [os.environ["RAG_ORACLE_SITE_PACKAGES"]] if os.environ.get("RAG_ORACLE_SITE_PACKAGES") else []
    sites += sorted(glob.glob(str(ROOT / ".venv-oracle" / "lib" / "python3*" / "site-packages")))
    for site in sites:
        folder = Path(site) / "transformers" / "models" / "rag"
        if (folder / "modeling_tf_rag.py").is_file() and glob.glob(str(Path(site) / "transformers-4.57.*.dist-info")):
            return folder
    return None


# === Stand-in checkpoints, written by transformers' own classes ===
def write_rag_checkpoint(folder, head: str, seed: int, question_encoder_tokenizer, generator_tokenizer) -> Path:
    """A tiny DPR + BART RAG checkpoint saved by transformers' `Rag{head}ForGeneration` and `RagTokenizer`.

    The config is what a hub RAG config holds: index_name "compressed" on `wiki_dpr`, no local paths.
    """
    import torch
    import transformers

    from tests.harness.configs import HIDDEN, tiny_bart_config, tiny_dpr_config

    generator = tiny_bart_config()
    generator.init_std = 0.3  # peaked next-token distributions: decoding is not decided by float noise
    config = transformers.RagConfig.from_question_encoder_generator_configs(
        tiny_dpr_config(), generator, n_docs=3, max_combined_length=48, retrieval_vector_size=HIDDEN,
        retrieval_batch_size=4,
    )
    torch.manual_seed(seed)
    model = getattr(transformers, {"token": "RagTokenForGeneration", "sequence": "RagSequenceForGeneration"}[head])(config)
    model.save_pretrained(folder)
    transformers.RagTokenizer(question_encoder=question_encoder_tokenizer, generator=generator_tokenizer).save_pretrained(folder)
    return Path(folder)


def write_sub_models(root: Path) -> dict[str, Path]:
    """Stand-alone DPR question encoder, T5 and BART folders saved by transformers' PyTorch classes."""
    import torch
    import transformers

    from tests.harness.configs import tiny_bart_config, tiny_dpr_config, tiny_t5_config

    folders = {}
    for key, cls, config in (
        ("dpr-question-encoder", transformers.DPRQuestionEncoder, tiny_dpr_config()),
        ("t5", transformers.T5ForConditionalGeneration, tiny_t5_config()),
        ("bart", transformers.BartForConditionalGeneration, tiny_bart_config()),
    ):
        torch.manual_seed(1)
        folders[key] = root / key
        cls(config).save_pretrained(folders[key])
    return folders


def with_local_index(source: Path, target: Path, passages_dir, **config_updates) -> Path:
    """A copy of a RAG checkpoint whose config points at the tiny `custom` index (what `RagRetriever.from_pretrained(path)` reads)."""
    from tests.harness.retrieval import tiny_index_paths

    shutil.copytree(source, target)
    config_path = target / "config.json"
    config = json.loads(config_path.read_text())
    config.update(index_name="custom", **tiny_index_paths(passages_dir), **config_updates)
    config_path.write_text(json.dumps(config, indent=2))
    return target


def write_legacy_index(folder: Path) -> Path:
    """DPR's legacy index layout, pickle-free (HNSW-SQ8 faiss index with the phi dimension, row -> id
    list as .npy, passages as DPR's TSV) over the harness passages and vectors."""
    import faiss

    from rag_core.index.legacy import INDEX_FILE, META_NPY, PASSAGES_TSV
    from tests.harness.configs import HIDDEN
    from tests.harness.passages import PASSAGES
    from tests.harness.retrieval import tiny_embeddings

    vectors = tiny_embeddings()
    full = np.hstack([vectors, np.zeros((len(vectors), 1), np.float32)])
    index = faiss.IndexHNSWSQ(HIDDEN + 1, faiss.ScalarQuantizer.QT_8bit, 8)
    index.train(full)
    index.add(full)
    folder.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(folder / INDEX_FILE))
    db_ids = np.arange(len(vectors), dtype=np.int64) + 100
    np.save(folder / META_NPY, db_ids)
    with open(folder / PASSAGES_TSV, "w", encoding="utf-8") as f:
        f.write("id\ttext\ttitle\n")
        for i, (title, text) in zip(db_ids, PASSAGES):
            f.write(f"{i}\t{text}\t{title}\n")
    return folder


# === The huggingface_hub cache layout ===
def write_hub_repo(cache: Path, repo_id: str, snapshots: dict[str, Path], refs: dict[str, str]) -> Path:
    """`<cache>/models--org--name/snapshots/<commit>/...` (a copy of each folder) and `refs/<branch>`."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    for commit, source in snapshots.items():
        assert re.fullmatch(r"[0-9a-f]{40}", commit), commit
        shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for branch, commit in refs.items():
        (repo / "refs" / branch).write_text(commit)
    return repo


def edit_json(path: Path, **updates) -> None:
    data = json.loads(path.read_text())
    data.update(updates)
    path.write_text(json.dumps(data, indent=2))


# === Comparisons ===
def numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def assert_close(ours, reference, atol: float, what: str) -> None:
    ours, reference = numpy(ours), numpy(reference)
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape} != {reference.shape}"
    np.testing.assert_allclose(ours, reference, atol=atol, rtol=0, err_msg=what)


def undefined_names(code: str) -> set[str]:
    """Names a piece of code reads but never binds (assignment, import, def, for, with, ...), builtins excepted."""
    import builtins

    tree = ast.parse(code)
    bound, loaded = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return loaded - bound - set(dir(builtins))


def string_literals(code: str) -> Iterable[str]:
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value
