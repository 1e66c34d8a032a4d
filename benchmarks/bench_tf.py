"""TensorFlow models benchmark: ours (`rag_tf`) vs transformers' TF RAG on the same weights, inputs and index.

Sizes (issue 4, the same small BART as bench_pt): batch 8, n_docs 5, BART d_model 256 and 2+2
layers, a 30,522-token vocabulary, 20,000 passages in a flat inner-product index, 20 generated
tokens (min_length = max_length, so both sides do the same number of steps), float32 on CPU. Both
sides use their own retriever on the same `custom` index files (ours: rag_core.RagRetriever, which
pads contexts to the longest; theirs: transformers.RagRetriever, padding to max_combined_length).

Cases (ratio = original seconds / ours; targets from the issue). "ours" is always what a user gets
by default; every ours case is warmed up first (tracing, as a loop would amortise it):
  call (forward with retrieval and labels), default eager call    >= 1.5x
  RAG-Token generate greedy                                       >= 5x
  RAG-Sequence generate greedy (thorough)                         >= 10x
  information: call op by op (run_eagerly=True), call inside tf.function, Keras fit steps/s,
  RAG-Token greedy with jit_compile=True, RAG-Token beam 4, RAG-Sequence beam 4 (full run only),
  and ours TF vs ours PyTorch (rag_pt, same sizes) when torch is installed.

    python -m benchmarks.bench_tf              # full size
    python -m benchmarks.bench_tf --quick      # 2,000 passages, fewer repeats
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from . import common  # noqa: E402

from .common import BATCH, LABEL_TOKENS, N_DOCS, N_PASSAGES, NEW_TOKENS, QUICK_N_PASSAGES  # noqa: E402,F401
from .common import bench_rag_config as _config  # noqa: E402
from .common import bench_tokenizer as _tokenizer  # noqa: E402


def _passages(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n passages of 60-100 words from Python's own language reference, every word (not bench_pt's:
    the TF figures in RESULTS.md were measured on these)."""
    return common.reference_passages(n, 60, 100, alphabetic=False, seed=seed)


def _index(n: int, dim: int) -> str:
    """The passages with random vectors, cached beside bench_pt's."""
    return common.bench_passages_index("kb", _passages, n, dim)


def _models(config):
    """{head: (ours, original)} on the same weights: ours built at random, saved, loaded by transformers."""
    import tensorflow as tf
    import transformers

    import rag_tf
    from rag_core import RagRetriever

    tok = _tokenizer()
    ours_retriever = RagRetriever(config, tok, tok)
    hf_config = transformers.RagConfig(**config.to_dict())
    original_retriever = transformers.RagRetriever(hf_config, tok, tok)
    pairs = {}
    for head in ("TFRagTokenForGeneration", "TFRagSequenceForGeneration"):
        tf.random.set_seed(0)
        ours = getattr(rag_tf, head)(config)
        ours.build_in_name_scope()
        with tempfile.TemporaryDirectory() as folder:
            ours.save_pretrained(folder)
            original = getattr(transformers, head).from_pretrained(folder, config=hf_config)
        ours.set_retriever(ours_retriever)
        original.set_retriever(original_retriever)
        pairs[head] = (ours, original)
    return pairs


def _inputs(framework: str = "tf"):
    import numpy as np

    from tests.harness.retrieval import QUESTIONS

    tok = _tokenizer()
    questions = [QUESTIONS[i % len(QUESTIONS)] + f" number {i}" for i in range(BATCH)]
    q = tok(questions, padding=True, return_tensors="np")
    rng = np.random.default_rng(0)
    answers = [" ".join(rng.choice(["paris", "berlin", "python", "river", "capital", "state", "code"], LABEL_TOKENS))
               for _ in range(BATCH)]
    labels = tok(answers, padding="max_length", truncation=True, max_length=LABEL_TOKENS, return_tensors="np")
    data = {"input_ids": q["input_ids"].astype(np.int32), "attention_mask": q["attention_mask"].astype(np.int32)}
    return data, labels["input_ids"].astype(np.int32)


def _pt_cases(config, questions, labels, gen_kwargs, ours_tf, quick, cases, notes):
    """Ours TF vs ours PyTorch (same sizes, random weights: the work, not the values, is timed)."""
    try:
        import torch

        import rag_pt
        from rag_core import RagRetriever
    except Exception as err:  # torch not installed: TF-only environment
        notes.append(f"ours TF vs ours PyTorch skipped: {type(err).__name__}: {err}")
        return
    tok = _tokenizer()
    retriever = RagRetriever(config, tok, tok)
    torch.manual_seed(0)
    pt_inputs = {k: torch.as_tensor(v, dtype=torch.long) for k, v in questions.items()}
    pt_labels = torch.as_tensor(labels, dtype=torch.long)
    for name, head, fn in [
        ("ours TF vs ours PT: call (fwd, retrieval)", "Token",
         lambda m: (lambda: m(**pt_inputs, labels=pt_labels))),
        ("ours TF vs ours PT: RAG-Token greedy", "Token",
         lambda m: (lambda: m.generate(**pt_inputs, num_beams=1, **gen_kwargs))),
        ("ours TF vs ours PT: RAG-Sequence greedy", "Sequence",
         lambda m: (lambda: m.generate(**pt_inputs, num_beams=1, **gen_kwargs))),
    ]:
        try:
            pt_model = getattr(rag_pt, f"Rag{head}ForGeneration")(config).eval()
            pt_model.set_retriever(retriever)
            tf_fn = ours_tf[(name, head)]
            with torch.no_grad():
                m_tf, m_pt = common.compare(tf_fn, fn(pt_model), quick=quick, budget_s=20 if quick else 60)
            # ratio = PT seconds / TF seconds (> 1: our TF is faster than our PyTorch)
            cases.append(common.case(name, m_tf, m_pt, note="original column = ours PyTorch"))
        except Exception as err:
            cases.append(common.failed_case(name, err))
        print(json.dumps({k: cases[-1].get(k) for k in ("name", "ours_s", "original_s", "ratio")}), flush=True)


def run(quick: bool = False, d_model: int = 256, layers: int = 2, n_passages=None, with_pt: bool = True,
        **_ignored) -> dict:
    import numpy as np
    import tensorflow as tf
    import tf_keras

    n = n_passages or (QUICK_N_PASSAGES if quick else N_PASSAGES)
    config = _config(d_model, layers, _index(n, d_model))
    pairs = _models(config)
    questions, labels = _inputs()
    tf_questions = {k: tf.constant(v) for k, v in questions.items()}
    tf_labels = tf.constant(labels)
    gen_kwargs = {"max_length": NEW_TOKENS + 1, "min_length": NEW_TOKENS + 1}  # exactly 20 tokens after the start
    budget = 30 if quick else 120
    cases, notes = [], []

    def call(model):
        return lambda: model(**tf_questions, labels=tf_labels)

    def generate(model, **kwargs):
        return lambda: model.generate(**tf_questions, **gen_kwargs, **kwargs)

    token, token_orig = pairs["TFRagTokenForGeneration"]
    sequence, sequence_orig = pairs["TFRagSequenceForGeneration"]
    graph_call = tf.function(lambda q, m, y: token(input_ids=q, attention_mask=m, labels=y).loss)

    def op_by_op(fn):
        """`fn` with Keras' `run_eagerly` switch on: every call op by op, never as the cached graph."""
        def run():
            token.run_eagerly = True
            try:
                return fn()
            finally:
                token.run_eagerly = None
        return run

    plan = [
        # what a user gets by default: eager `call`; from its second call with the same options on,
        # retrieval runs eagerly and the rest as one cached graph (warmed up below, as a loop would)
        ("call RAG-Token (fwd + loss, retrieval), default", call(token), call(token_orig), 1.5, None),
        ("call RAG-Token, op by op (run_eagerly=True)", op_by_op(call(token)), call(token_orig), None, None),
        ("call RAG-Token in tf.function (graph)",
         lambda: graph_call(tf_questions["input_ids"], tf_questions["attention_mask"], tf_labels),
         call(token_orig), None, None),
        ("RAG-Token generate greedy", generate(token, num_beams=1), generate(token_orig, num_beams=1), 5.0,
         BATCH * NEW_TOKENS),
        ("RAG-Token generate greedy, jit_compile=True", generate(token, num_beams=1, jit_compile=True),
         generate(token_orig, num_beams=1), None, BATCH * NEW_TOKENS),
        ("RAG-Token generate beam 4", generate(token, num_beams=4), generate(token_orig, num_beams=4), None,
         BATCH * NEW_TOKENS),
        ("RAG-Sequence generate greedy (thorough)", generate(sequence, num_beams=1),
         generate(sequence_orig, num_beams=1), 10.0, BATCH * NEW_TOKENS),
        ("RAG-Sequence generate beam 4 (thorough)", generate(sequence, num_beams=4),
         generate(sequence_orig, num_beams=4), None, BATCH * NEW_TOKENS),
    ]
    if quick:  # the slowest original cases; the full run has them
        plan = [row for row in plan if "RAG-Sequence generate beam 4" not in row[0]]
    for name, fn_ours, fn_orig, target, items in plan:
        try:
            # one call before compare()'s own warm-up: the first eager call runs op by op, the second
            # traces the cached graph (generate traces on its first call), so compare() times steady state
            first = fn_ours()
            if "generate" in name:  # same ids, or the timing compares different work
                a, b = np.asarray(first), np.asarray(fn_orig())
                if a.shape != b.shape or not (a == b).all():
                    notes.append(f"{name}: ids differ from the original's ({a.shape} vs {b.shape})")
            m_ours, m_orig = common.compare(fn_ours, fn_orig, quick=quick, budget_s=budget)
            cases.append(common.case(name, m_ours, m_orig, target=target, items=items,
                                     items_unit="tokens" if items else None))
        except Exception as err:  # one case failing leaves the others' rows
            cases.append(common.failed_case(name, err, target=target))
        print(json.dumps({k: cases[-1].get(k) for k in ("name", "ours_s", "original_s", "ratio", "target")}),
              flush=True)

    # Keras fit in graph mode (ours only: the original's fit fails in graph mode, defect 5)
    name = "Keras fit RAG-Token, graph mode (s per step)"
    try:
        data = dict(questions, labels=labels)
        dataset = tf.data.Dataset.from_tensor_slices(data).batch(BATCH).repeat(3)
        token.compile(optimizer=tf_keras.optimizers.Adam(1e-5))
        token.fit(dataset.take(1), epochs=1, verbose=0)  # trace
        steps = 2 if quick else 3
        m = common.measure(lambda: token.fit(dataset.take(steps), epochs=1, verbose=0), warmup=0,
                           repeats=1 if quick else 2)
        per_step = m.median_s / steps
        cases.append(common.case(name, per_step, None, items=BATCH * N_DOCS, items_unit="passages",
                                 note=f"{1.0 / per_step:.2f} steps/s"))
    except Exception as err:
        cases.append(common.failed_case(name, err))
    print(json.dumps({k: cases[-1].get(k) for k in ("name", "ours_s", "note")}), flush=True)

    if with_pt:
        ours_tf = {
            ("ours TF vs ours PT: call (fwd, retrieval)", "Token"): call(token),
            ("ours TF vs ours PT: RAG-Token greedy", "Token"): generate(token, num_beams=1),
            ("ours TF vs ours PT: RAG-Sequence greedy", "Sequence"): generate(sequence, num_beams=1),
        }
        _pt_cases(config, questions, labels, gen_kwargs, ours_tf, quick, cases, notes)

    return common.suite_result(
        "tf", cases, notes=notes,
        config={"batch": BATCH, "n_docs": N_DOCS, "d_model": d_model, "layers": f"{layers}+{layers}",
                "vocab": config.generator.vocab_size, "passages": n, "new_tokens": NEW_TOKENS,
                "label_tokens": LABEL_TOKENS, "max_combined_length": config.max_combined_length},
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--passages", type=int, default=None)
    parser.add_argument("--no-pt", action="store_true", help="skip ours TF vs ours PyTorch")
    args = parser.parse_args(argv)
    result = run(quick=args.quick, n_passages=args.passages, with_pt=not args.no_pt)
    for row in result["cases"]:
        ratio = f"{row['ratio']:.2f}x" if row.get("ratio") else row.get("error", "-")
        print(f"{row['name']:<50} ours {row['ours_s'] or float('nan'):8.3f}s  original "
              f"{row['original_s'] or float('nan'):8.3f}s  ratio {ratio}  (target {row['target']}x)")
    for note in result["notes"]:
        print("note:", note)


if __name__ == "__main__":
    main()
