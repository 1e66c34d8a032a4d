"""Hub ids: `from_pretrained("org/name")` resolves through huggingface_hub's cache while offline.

The original's examples load hub ids ("facebook/rag-token-nq"). Nothing here downloads, but a model
already in the huggingface_hub cache must load by its id, as it does in transformers. The cache is
laid out as huggingface_hub lays it out: `<cache>/models--org--rag-token/snapshots/<commit>/...`
and `refs/<branch>` holding the commit. Two snapshots tell the revisions apart: "main" (n_docs 3,
the "rag-token" weights, question-encoder tokenizer `model_max_length` 512) and branch "v1" (n_docs
2, the "rag-sequence" weights, `model_max_length` 256).

Checked for every class (RagConfig, RagTokenizer, RagRetriever; PyTorch RagModel,
RagSequenceForGeneration, RagTokenForGeneration through transformers' loading; TensorFlow
TFRagModel, TFRagSequenceForGeneration, TFRagTokenForGeneration through
`rag_tf.models.checkpoint.resolve_checkpoint`): `cache_dir=`, `revision=` (a branch and a commit
hash), the default cache (huggingface_hub's `HF_HUB_CACHE`), and, in a fresh interpreter, the
environment variables a user sets (`HF_HOME`, `HF_HUB_OFFLINE=1`).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.docs import support

REPO_ID = "org/rag-token"
MAIN, V1 = "1" * 40, "2" * 40
EXPECTED = {"main": {"n_docs": 3, "max_length": 512, "weights": "rag-token"},
            "v1": {"n_docs": 2, "max_length": 256, "weights": "rag-sequence"}}
WEIGHT = "generator.model.shared.weight"  # one weight that tells the snapshots apart

@pytest.fixture(scope="module")
def hub(stand_ins, tiny_passages_dir, tmp_path_factory):
    """`(cache folder, {"main"|"v1": snapshot folder})`."""
    root = tmp_path_factory.mktemp("hub")
    sources = {}
    for name, commit in (("main", MAIN), ("v1", V1)):
        expected = EXPECTED[name]
        source = support.with_local_index(stand_ins[expected["weights"]], root / name, tiny_passages_dir,
                                          n_docs=expected["n_docs"])
        support.edit_json(source / "question_encoder_tokenizer" / "tokenizer_config.json",
                          model_max_length=expected["max_length"])
        sources[commit] = source
    cache = root / "cache"
    repo = support.write_hub_repo(cache, REPO_ID, sources, {"main": MAIN, "v1": V1})
    return cache, {"main": repo / "snapshots" / MAIN, "v1": repo / "snapshots" / V1}


def weight(snapshot, name=WEIGHT) -> np.ndarray:
    from safetensors.numpy import load_file

    tensors = load_file(str(snapshot / "model.safetensors"))
    return tensors.get(name, tensors.get("rag." + name))


def check_config(config, which: str) -> None:
    assert config.n_docs == EXPECTED[which]["n_docs"]


def check_tokenizer_pair(question_encoder, generator, which: str) -> None:
    # a real vocabulary (transformers 5 builds an empty tokenizer when it finds no files but gets a config)
    assert len(question_encoder) == 30522 and len(generator) == 1000
    assert question_encoder.model_max_length == EXPECTED[which]["max_length"]


def load(class_name: str, which_kwargs: dict):
    import importlib

    package = {"RagConfig": "rag_core", "RagTokenizer": "rag_core", "RagRetriever": "rag_core"}.get(
        class_name, "rag_tf" if class_name.startswith("TF") else "rag_pt")
    return getattr(importlib.import_module(package), class_name).from_pretrained(REPO_ID, **which_kwargs)


def check(obj, class_name: str, which: str, snapshots: dict) -> None:
    if class_name == "RagConfig":
        check_config(obj, which)
    elif class_name == "RagTokenizer":
        check_tokenizer_pair(obj.question_encoder, obj.generator, which)
    elif class_name == "RagRetriever":
        check_config(obj.config, which)
        check_tokenizer_pair(obj.question_encoder_tokenizer, obj.generator_tokenizer, which)
    else:
        check_config(obj.config, which)
        prefix = "" if class_name.endswith("RagModel") else "rag."
        ours = obj.pt_weights()[prefix + WEIGHT] if class_name.startswith("TF") else obj.state_dict()[prefix + WEIGHT].numpy()
        np.testing.assert_array_equal(ours, weight(snapshots[which]))


CORE = ["RagConfig", "RagTokenizer", "RagRetriever"]
PT = ["RagModel", "RagSequenceForGeneration", "RagTokenForGeneration"]
TF = ["TFRagModel", "TFRagSequenceForGeneration", "TFRagTokenForGeneration"]


def case(class_name: str, mode: str, *marks):
    framework = [pytest.mark.pt] if class_name in PT else [pytest.mark.tf] if class_name in TF else []
    return pytest.param(class_name, mode, marks=[*framework, *marks], id=f"{class_name}-{mode}")


CASES = (
    [case("RagConfig", mode) for mode in ("cache_dir", "branch", "commit", "default_cache")]
    + [case("RagTokenizer", mode) for mode in ("cache_dir", "branch", "commit", "default_cache")]
    + [case("RagRetriever", mode) for mode in ("cache_dir", "branch", "commit", "default_cache")]
    + [case(name, mode) for name in PT for mode in ("cache_dir", "branch", "commit", "default_cache")]
    + [case(name, "cache_dir") for name in TF]
    + [case("TFRagTokenForGeneration", mode) for mode in ("branch", "commit", "default_cache")]
)


@pytest.mark.parametrize("class_name, mode", CASES)
def test_hub_id_resolves_offline(class_name, mode, hub, monkeypatch):
    """`from_pretrained("org/rag-token", ...)` with `cache_dir=`, `revision=` (branch "v1" or v1's
    commit hash) or the default cache (huggingface_hub's HF_HUB_CACHE, what HF_HOME sets at start-up)."""
    import warnings

    import huggingface_hub.constants

    cache, snapshots = hub
    kwargs, which = {
        "cache_dir": ({"cache_dir": str(cache)}, "main"),
        "branch": ({"cache_dir": str(cache), "revision": "v1"}, "v1"),
        "commit": ({"cache_dir": str(cache), "revision": V1}, "v1"),
        "default_cache": ({}, "main"),
    }[mode]
    if mode == "default_cache":
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # RAG-Token weights into RAG-Sequence: warned, intended here
        obj = load(class_name, kwargs)
    check(obj, class_name, which, snapshots)


def test_an_id_missing_from_the_cache_names_itself(hub):
    from rag_tf.models.checkpoint import resolve_checkpoint

    cache, _ = hub
    with pytest.raises(OSError, match="org/not-there"):
        resolve_checkpoint("org/not-there", {"cache_dir": str(cache)})


# === The variables a user sets, read at start-up by a fresh interpreter ===
SCRIPT = r"""
import json, sys
results = {}
def attempt(name, load):
    try:
        results[name] = load()
    except Exception as err:
        results[name] = f"{type(err).__name__}: {err}"[:300]
from rag_core import RagConfig, RagRetriever, RagTokenizer
attempt("RagConfig", lambda: RagConfig.from_pretrained("org/rag-token").n_docs)
attempt("RagTokenizer", lambda: len(RagTokenizer.from_pretrained("org/rag-token").question_encoder))
attempt("RagRetriever", lambda: len(RagRetriever.from_pretrained("org/rag-token").question_encoder_tokenizer))
from rag_pt import RagTokenForGeneration
attempt("RagTokenForGeneration", lambda: RagTokenForGeneration.from_pretrained("org/rag-token").config.n_docs)
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def from_environment(hub, tmp_path_factory):
    """What a fresh interpreter with `HF_HOME=<home>` (cache in `<home>/hub`) and `HF_HUB_OFFLINE=1` loads."""
    import os
    import shutil

    cache, _ = hub
    home = tmp_path_factory.mktemp("hf_home")
    shutil.copytree(cache, home / "hub")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=support.ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert lines, f"the script failed:\n{done.stdout}\n{done.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULTS "):])


@pytest.mark.pt
@pytest.mark.slow  # a fresh interpreter importing transformers and torch: ~10 s of CPU
@pytest.mark.parametrize("class_name, expected", [
    ("RagConfig", 3),
    ("RagTokenizer", 30522),
    ("RagRetriever", 30522),
    ("RagTokenForGeneration", 3),
])
def test_hub_id_resolves_from_hf_home(class_name, expected, from_environment):
    assert from_environment[class_name] == expected, from_environment[class_name]
