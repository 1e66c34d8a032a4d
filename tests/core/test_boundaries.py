"""Package boundaries: rag_core needs neither framework, rag_pt no TF, rag_tf no torch.

transformers 4.57 imports torch eagerly at `import transformers` whenever torch is installed, so
"torch is absent from sys.modules" cannot hold for anything that uses transformers' tokenizers or
configs in a process where torch is installed (transformers 5's configuration module does too). We
therefore prove the boundary the way a user without the framework would meet it: a fresh
subprocess hides the forbidden framework from the import system (the path finder finds nothing
for it, exactly as when it is not installed; `sys.modules[name] = None` would instead break
libraries that look the name up there, such as scipy) and then imports and uses the package. A static check also rejects any direct import of a forbidden module
in the package's source.
"""

import ast
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "rag_core": {"torch", "tensorflow", "tf_keras", "keras"},
    "rag_pt": {"tensorflow", "tf_keras", "keras"},
    "rag_tf": {"torch"},
}


def _imported_modules(path: pathlib.Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_forbidden_or_original_rag_import_in_source(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for module, line in _imported_modules(path):
            top = module.split(".")[0]
            if top in FORBIDDEN[package]:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            parts = module.split(".")
            # the library never imports the original RAG (transformers.models.rag, transformers.Rag*, TFRag*)
            if parts[0] == "transformers" and (
                "rag" in parts[1:] or any(p.startswith(("Rag", "TFRag")) for p in parts[1:])
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports the original {module}")
    assert not offenders, "\n".join(offenders)


def _run(code: str, block: set[str]):
    prelude = "\n".join([
        "import importlib.machinery, sys",
        f"_HIDDEN = {sorted(block)!r}",
        "class _Hide(importlib.machinery.PathFinder):",
        "    @classmethod",
        "    def find_spec(cls, name, path=None, target=None):",
        "        if name.split('.')[0] in _HIDDEN:",
        "            return None",
        "        return super().find_spec(name, path, target)",
        "sys.meta_path = [_Hide if f is importlib.machinery.PathFinder else f for f in sys.meta_path]",
        "",
    ])
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def test_rag_core_config_tokenizer_outputs_work_without_torch_and_tensorflow():
    out = _run(
        """
        from rag_core import RagConfig, RagTokenizer, RetrievAugLMOutput
        from tests.harness.configs import tiny_rag_config
        from tests.harness.tokenizers import bart_tokenizer, question_encoder_tokenizer
        config = tiny_rag_config()
        tok = RagTokenizer(question_encoder_tokenizer(), bart_tokenizer())
        ids = tok(["who wrote hamlet?"], text_target=["shakespeare"])["labels"]
        assert tok.batch_decode(ids, skip_special_tokens=True) == ["shakespeare"]
        assert RetrievAugLMOutput(logits=[1])[0] == [1]
        print("ok", sorted(m for m in ("torch", "tensorflow") if sys.modules.get(m) is not None))
        """,
        block={"torch", "tensorflow"},
    )
    assert out.strip() == "ok []"


def test_plain_import_of_rag_core_loads_no_framework_and_no_transformers():
    out = _run(
        """
        import rag_core, rag_core.outputs, rag_core.arguments
        print(sorted(m for m in ("torch", "tensorflow", "transformers") if m in sys.modules))
        """,
        block=set(),
    )
    assert out.strip() == "[]"


@pytest.mark.pt
def test_rag_pt_never_imports_tensorflow():
    out = _run(
        """
        import rag_pt
        from rag_pt import RagModel, RagSequenceForGeneration, RagTokenForGeneration
        from tests.harness.configs import tiny_rag_config
        import torch
        model = RagTokenForGeneration(tiny_rag_config())
        ids = torch.ones((2 * 3, 5), dtype=torch.long)
        out = model(context_input_ids=ids, context_attention_mask=torch.ones_like(ids),
                    doc_scores=torch.zeros((2, 3)), labels=torch.ones((2, 4), dtype=torch.long))
        assert out.loss is not None
        print("ok")
        """,
        block={"tensorflow", "tf_keras", "keras"},
    )
    assert out.strip() == "ok"


@pytest.mark.tf
def test_rag_tf_never_imports_torch():
    out = _run(
        """
        import rag_tf
        from rag_tf import TFRagModel, TFRagSequenceForGeneration, TFRagTokenForGeneration
        from tests.harness.configs import tiny_rag_config
        import tensorflow as tf
        model = TFRagTokenForGeneration(tiny_rag_config())
        ids = tf.ones((2 * 3, 5), dtype=tf.int32)
        out = model(context_input_ids=ids, context_attention_mask=tf.ones_like(ids),
                    doc_scores=tf.zeros((2, 3)), labels=tf.ones((2, 4), dtype=tf.int32))
        assert out.loss is not None
        assert model.generate(context_input_ids=ids, context_attention_mask=tf.ones_like(ids),
                              doc_scores=tf.zeros((2, 3)), max_length=4).shape[0] == 2
        assert "torch" not in sys.modules
        import transformers  # transformers 4.x loads tf-keras itself; rag_tf never does
        assert "tf_keras" not in sys.modules or transformers.__version__.startswith("4.")
        print("ok")
        """,
        block={"torch"},
    )
    assert out.strip() == "ok"
