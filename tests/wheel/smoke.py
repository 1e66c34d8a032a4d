"""Smoke test of the installed rag-twin wheel: `python smoke.py --mode core|torch|tf`.

Run by `tests/wheel/run.py` with the interpreter of a fresh virtual environment into which only the
built wheel (with the mode's extra) was installed, from a temporary working directory outside the
checkout. A plain script on purpose: no pytest, nothing from the repository is imported, and
everything (tokenizers, passages, index, tiny models) is built here, offline, in a temporary folder.

Every mode:
  - the packages come from the environment's site-packages (a wheel install, not the checkout), and
    the other framework(s) are absent; `import rag_core` imports neither torch nor tensorflow;
  - a tiny WordPiece vocabulary and `BertTokenizerFast`, used as both tokenizers of a `RagTokenizer`
    (saved and loaded back);
  - 40 passages (JSONL) indexed with precomputed 16-dim embeddings: in core mode with the command
    line (`python -m rag_core.build_index ... --embeddings FILE.npy`), else with `build_index(...)`;
  - `RagRetriever` over that index: shapes, exact top-k, contexts; saved and loaded back.
core:  `python -m rag_core.convert`: --help, a clear error for a non-checkpoint folder, and a real
       PT -> TF -> PT round trip of a hand-written tiny RAG checkpoint (bit-exact), no framework.
torch: `rag_pt.RagTokenForGeneration` / `RagSequenceForGeneration`: loss and gradients, greedy
       `generate` (with provenance), `save_pretrained` / `from_pretrained(path, retriever=...)` (same
       logits); the converter command on the saved RAG-Token checkpoint (PT -> TF -> PT, bit-exact)
       and `from_pretrained(tf_dir, from_tf=True)` (same logits).
tf:    `rag_tf.TFRagTokenForGeneration` / `TFRagSequenceForGeneration` (Keras 3, no tf_keras): loss,
       `compile` + one epoch of `fit` (weights change), greedy `generate` (with provenance),
       `save_pretrained` / `from_pretrained` (same logits), also through `save_format="h5"`.

Each check that fails prints its step and the error; the script goes on with the steps that do not
depend on it and exits 1 if anything failed. `--dev` turns the environment checks into warnings,
to develop this script in an environment where the checkout is installed editable.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback

import numpy as np

MODES = ("core", "torch", "tf")
DIM = 16  # question-encoder hidden size == retrieval_vector_size
N_DOCS = 2
SEED = 0

# === Tiny offline data ===
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD_ID, UNK_ID, CLS_ID, SEP_ID = 0, 1, 2, 3
COLORS = ["red", "blue", "green", "black", "white", "brown", "gray", "pink"]
ANIMALS = ["fox", "bear", "wolf", "horse", "eagle"]
CITIES = ["paris", "berlin", "rome", "madrid", "london", "vienna", "prague", "oslo", "lisbon", "dublin"]
FOODS = ["fish", "grass", "honey", "apples", "bread", "corn", "rice", "meat"]
WORDS = """
the a an of in is and lives live eats eat where does do what who which near river city country capital
question answer it by to from on at with for was are be this that its name called big small old new north
south east west lake mountain forest sea island king queen book wrote writer year born died river road
house home school water fire earth air sun moon star day night time people man woman child family war
peace music song film game team world land town village street bridge tower castle church park garden
tree flower bird dog cat cow sheep pig duck goat lion tiger snake frog mouse rabbit deer owl whale shark
one two three four five six seven eight nine ten first second last many few more most some all any no
not yes very also only just than then there here when why how because but or if so as up down out over
under between after before during about against into through while our your their his her my we you they
he she them him us me food fruit milk cheese egg sugar salt tea coffee wine beer soup cake pie orange
lemon grape plum pear cherry bean nut seed leaf root wood stone iron gold silver glass paper cloth
""".split()
VOCAB = SPECIAL + list(dict.fromkeys(COLORS + ANIMALS + CITIES + FOODS + WORDS))
VOCAB += [c for c in "abcdefghijklmnopqrstuvwxyz0123456789.,?!/:;'-()" if c not in VOCAB]
VOCAB += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]


def passages() -> list[dict]:
    rows = []
    for k in range(40):
        color, animal = COLORS[k % 8], ANIMALS[k // 8]
        city, food = CITIES[(3 * k) % 10], FOODS[(5 * k) % 8]
        rows.append({"title": f"the {color} {animal}", "text": f"the {color} {animal} lives near {city} and eats {food} ."})
    return rows


PASSAGES = passages()
QUESTIONS = [f"where does the {p['title'][4:]} live ?" for p in PASSAGES[:4]]
ANSWERS = [p["text"].split(" near ")[1].split()[0] for p in PASSAGES[:4]]


def passage_embeddings() -> np.ndarray:
    """Fixed random unit vectors (40, 16): a passage's own vector scores 1, every other one less."""
    vectors = np.random.default_rng(SEED).standard_normal((len(PASSAGES), DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# === Reporting ===
class Failed(Exception):
    pass


def check(condition, message: str) -> None:
    """A plain assertion that also runs under `python -O`."""
    if not condition:
        raise AssertionError(message)


class Report:
    def __init__(self, dev: bool):
        self.dev = dev
        self.failures: list[str] = []

    @contextlib.contextmanager
    def step(self, name: str):
        """Run a block as a named step; on failure print and record it, then raise `Failed` (the caller
        decides whether the steps after it can still run: `with contextlib.suppress(Failed)`)."""
        started = time.perf_counter()
        try:
            yield
        except Exception as err:  # noqa: BLE001 - every failure is reported with its step
            print(f"  FAIL {name} ({time.perf_counter() - started:.1f}s): {type(err).__name__}: {err}", flush=True)
            traceback.print_exc(file=sys.stdout)
            # Keras' messages span several lines, with ANSI bold and the call's arguments
            summary = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).split("Arguments received by")[0]
            summary = " ".join(summary.split())
            self.failures.append(f"{name}: {type(err).__name__}: {summary[:300]}")
            raise Failed(name) from None
        print(f"  ok   {name} ({time.perf_counter() - started:.1f}s)", flush=True)

    def environment(self, condition, message: str) -> None:
        if condition:
            return
        if self.dev:
            print(f"  warn (--dev) {message}", flush=True)
            return
        raise AssertionError(message)


def run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)


# === Environment ===
def check_environment(mode: str, report: Report) -> None:
    import rag_core

    purelib = os.path.realpath(sysconfig.get_paths()["purelib"])
    origin = os.path.realpath(rag_core.__file__)
    report.environment(sys.prefix != sys.base_prefix, f"not running in a virtual environment (sys.prefix {sys.prefix})")
    report.environment(
        origin.startswith(purelib + os.sep),
        f"rag_core was imported from {origin}, not from this environment's site-packages {purelib}: "
        "the checkout (or another install) shadows the wheel",
    )
    from importlib import metadata

    dist = metadata.distribution("rag-twin")
    check(dist.version == rag_core.__version__, f"rag-twin {dist.version} installed but rag_core.__version__ is {rag_core.__version__}")
    direct_url = dist.read_text("direct_url.json")
    report.environment(
        direct_url is None or not json.loads(direct_url).get("dir_info", {}).get("editable", False),
        f"rag-twin is installed editable ({direct_url}), not from the wheel",
    )
    for package in ("rag_core", "rag_pt", "rag_tf"):
        spec = importlib.util.find_spec(package)
        check(spec is not None, f"the wheel did not install the package {package}")
        report.environment(
            os.path.realpath(spec.origin).startswith(purelib + os.sep), f"{package} comes from {spec.origin}, not from {purelib}"
        )
    absent = {"core": ("torch", "tensorflow"), "torch": ("tensorflow",), "tf": ("torch",)}[mode]
    for framework in absent:
        report.environment(
            importlib.util.find_spec(framework) is None,
            f"{framework} is installed in the {mode} environment; the {mode} install must not pull it in",
        )
    present = {"core": (), "torch": ("torch",), "tf": ("tensorflow", "keras")}[mode]
    for framework in present:
        check(importlib.util.find_spec(framework) is not None, f"{framework} is missing: the [{mode}] extra did not install it")
    if mode == "tf":
        report.environment(importlib.util.find_spec("tf_keras") is None, "tf_keras is installed: rag_tf must work on Keras 3 alone")
        import keras

        check(keras.__version__.split(".")[0] == "3", f"Keras {keras.__version__} installed; rag_tf needs Keras 3")
    # a fresh interpreter: importing rag_core must not import a framework
    probe = run(["-c", "import json, sys, rag_core; print(json.dumps(sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules)))"])
    check(probe.returncode == 0, f"`import rag_core` failed:\n{probe.stderr}")
    loaded = json.loads(probe.stdout.strip().splitlines()[-1])
    check(loaded == [], f"`import rag_core` imported {loaded}")
    print(f"  info rag-twin {dist.version} from {os.path.dirname(origin)}", flush=True)


def check_missing_framework_errors(mode: str) -> None:
    """Without the extra, the framework package fails at import with an ImportError naming the framework."""
    cases = []
    if mode in ("core", "tf"):
        cases.append(("rag_pt", "from rag_pt import RagTokenForGeneration", ("torch",)))
    if mode in ("core", "torch"):
        cases.append(("rag_tf", "from rag_tf import TFRagTokenForGeneration", ("tensorflow", "keras")))
    for package, statement, names in cases:
        if importlib.util.find_spec(names[0]) is not None:  # only with --dev: the framework is there
            print(f"  warn (--dev) {names[0]} is installed: not checking the error of {package} without it", flush=True)
            continue
        probe = run(["-c", statement])
        check(probe.returncode != 0, f"`{statement}` worked without its framework installed")
        last = (probe.stderr.strip().splitlines() or [""])[-1]
        check("Error" in last and any(n in last for n in names),
              f"`{statement}` without its framework should raise an ImportError naming {names}; got: {last}")
        print(f"  info {package} without its framework: {last}", flush=True)
    # the Ray-served index without the ray extra: an error naming the extra, raised on first use
    if importlib.util.find_spec("ray") is None:
        probe = run(["-c", "from rag_core import RayIndex; RayIndex('kb').init_index()"])
        last = (probe.stderr.strip().splitlines() or [""])[-1]
        check(probe.returncode != 0 and "MissingExtraError" in last and "rag-twin[ray]" in last,
              f"RayIndex without ray should raise MissingExtraError naming rag-twin[ray]; got: {last}")
        print(f"  info RayIndex without ray: {last}", flush=True)


# === Tokenizers ===
def build_tokenizers(folder: str):
    from transformers import BertTokenizerFast

    from rag_core import RagTokenizer

    vocab_folder = os.path.join(folder, "vocab")
    os.makedirs(vocab_folder)
    with open(os.path.join(vocab_folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(VOCAB) + "\n")
    # from a folder holding only vocab.txt: the same call in transformers 4 and 5 (5's constructor
    # takes `vocab=`, 4's `vocab_file=`; 5 silently ignores `vocab_file=`)
    question_tokenizer = BertTokenizerFast.from_pretrained(vocab_folder, do_lower_case=True, model_max_length=128)
    generator_tokenizer = BertTokenizerFast.from_pretrained(vocab_folder, do_lower_case=True, model_max_length=128)
    check(len(question_tokenizer) == len(VOCAB), f"the tokenizer has {len(question_tokenizer)} tokens, the vocabulary {len(VOCAB)}")
    ids = question_tokenizer(QUESTIONS[0])["input_ids"]
    check(ids[0] == CLS_ID and ids[-1] == SEP_ID and UNK_ID not in ids, f"the tiny WordPiece tokenizer gives {ids} for {QUESTIONS[0]!r}")
    path = os.path.join(folder, "rag_tokenizer")
    RagTokenizer(question_encoder=question_tokenizer, generator=generator_tokenizer).save_pretrained(path)
    for sub in ("question_encoder_tokenizer", "generator_tokenizer"):
        check(os.path.isdir(os.path.join(path, sub)), f"RagTokenizer.save_pretrained wrote no {sub}/ in {path}")
    tokenizer = RagTokenizer.from_pretrained(path)
    for name, original, loaded in (("question_encoder", question_tokenizer, tokenizer.question_encoder),
                                   ("generator", generator_tokenizer, tokenizer.generator)):
        texts = QUESTIONS + [p["text"] for p in PASSAGES[:5]]
        check(loaded(texts)["input_ids"] == original(texts)["input_ids"],
              f"the reloaded {name} tokenizer ({type(loaded).__name__}) encodes differently from the saved one")
    batch = tokenizer(QUESTIONS, text_target=ANSWERS, padding=True, return_tensors="np")
    check({"input_ids", "attention_mask", "labels"} <= set(batch.keys()), f"RagTokenizer(text, text_target=...) gave {sorted(batch.keys())}")
    check(batch["labels"].shape[0] == len(ANSWERS), f"labels shape {batch['labels'].shape}")
    check(tokenizer.batch_decode(batch["labels"], skip_special_tokens=True) == ANSWERS,
          f"RagTokenizer.batch_decode(labels) gave {tokenizer.batch_decode(batch['labels'], skip_special_tokens=True)}")
    return tokenizer


# === Passages and index ===
def write_passages(folder: str) -> tuple[str, str, np.ndarray]:
    jsonl = os.path.join(folder, "passages.jsonl")
    with open(jsonl, "w", encoding="utf-8") as f:
        for row in PASSAGES:
            f.write(json.dumps(row) + "\n")
    embeddings = passage_embeddings()
    npy = os.path.join(folder, "embeddings.npy")
    np.save(npy, embeddings, allow_pickle=False)
    return jsonl, npy, embeddings


def build_index_cli(folder: str, jsonl: str, npy: str) -> str:
    out = os.path.join(folder, "kb_index")
    # exactly one of --encoder / --embeddings
    for extra, what in (([], "neither --encoder nor --embeddings"), (["--encoder", "x", "--embeddings", npy], "both")):
        bad = run(["-m", "rag_core.build_index", jsonl, out + "-bad", *extra, "--no-progress"])
        check(bad.returncode == 2 and "exactly one of --encoder" in bad.stderr,
              f"build_index with {what}: expected exit 2 and 'exactly one of --encoder ...', got {bad.returncode}: {bad.stderr.strip()[-400:]}")
        check(not os.path.exists(out + "-bad"), f"build_index with {what} left {out}-bad behind")
    wrong = os.path.join(folder, "wrong.npy")
    np.save(wrong, np.zeros((3, DIM), np.float32))
    bad = run(["-m", "rag_core.build_index", jsonl, out + "-bad", "--embeddings", wrong, "--no-progress"])
    check(bad.returncode == 2 and "error:" in bad.stderr and "shape" in bad.stderr,
          f"build_index with 3 embeddings for 40 passages: expected exit 2 naming the shape, got {bad.returncode}: {bad.stderr.strip()[-400:]}")
    done = run(["-m", "rag_core.build_index", jsonl, out, "--embeddings", npy, "--no-progress"])
    check(done.returncode == 0, f"python -m rag_core.build_index --embeddings failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    print(f"  info {done.stdout.strip().splitlines()[0]}", flush=True)
    return out


def build_index_api(folder: str, jsonl: str, embeddings: np.ndarray, generator_tokenizer) -> str:
    from rag_core.build_index import build_index

    out = build_index(jsonl, os.path.join(folder, "kb_index"), embeddings=embeddings, split=False, progress=False,
                      generator_tokenizer=generator_tokenizer)
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    check(manifest.get("generator_ids"), f"build_index(generator_tokenizer=...) stored no generator ids: {manifest}")
    return out


def check_manifest(index_dir: str) -> None:
    with open(os.path.join(index_dir, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    check(manifest["num_passages"] == len(PASSAGES) and manifest["dim"] == DIM and manifest["index_kind"] == "flat",
          f"unexpected manifest: {manifest}")


# === Config and retriever ===
def tiny_configs():
    from transformers import BartConfig, DPRConfig

    vocab = len(VOCAB)
    question_encoder = DPRConfig(vocab_size=vocab, hidden_size=DIM, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32, max_position_embeddings=128, projection_dim=0)
    generator = BartConfig(vocab_size=vocab, d_model=DIM, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=128,
                           pad_token_id=PAD_ID, bos_token_id=CLS_ID, eos_token_id=SEP_ID, decoder_start_token_id=SEP_ID,
                           forced_bos_token_id=None, forced_eos_token_id=None, dropout=0.0, attention_dropout=0.0,
                           activation_dropout=0.0)
    return question_encoder, generator


def rag_config(index_dir: str):
    from rag_core import RagConfig

    question_encoder, generator = tiny_configs()
    return RagConfig.from_question_encoder_generator_configs(
        question_encoder, generator, n_docs=N_DOCS, retrieval_vector_size=DIM, retrieval_batch_size=8,
        max_combined_length=64, index_name="custom", passages_path=index_dir, index_path=None,
    )


def check_retriever(config, tokenizer, embeddings: np.ndarray, folder: str):
    from rag_core import RagRetriever

    retriever = RagRetriever(config, question_encoder_tokenizer=tokenizer.question_encoder,
                             generator_tokenizer=tokenizer.generator)
    # two random question vectors: shapes, and the exact top-k of a flat inner-product index
    questions = np.random.default_rng(SEED + 1).standard_normal((2, DIM)).astype(np.float32)
    doc_embeds, doc_ids, doc_dicts = retriever.retrieve(questions, n_docs=N_DOCS)
    check(doc_embeds.shape == (2, N_DOCS, DIM) and doc_embeds.dtype == np.float32, f"retrieved_doc_embeds {doc_embeds.shape} {doc_embeds.dtype}")
    check(doc_ids.shape == (2, N_DOCS), f"doc_ids shape {doc_ids.shape}")
    check(len(doc_dicts) == 2 and all(len(d["title"]) == N_DOCS and len(d["text"]) == N_DOCS for d in doc_dicts),
          f"doc_dicts: {doc_dicts}")
    expected = np.argsort(-(questions @ embeddings.T), axis=1)[:, :N_DOCS]
    check((doc_ids == expected).all(), f"retrieved doc_ids {doc_ids.tolist()}, brute force gives {expected.tolist()}")
    np.testing.assert_allclose(doc_embeds, embeddings[expected], rtol=1e-6, atol=1e-6, err_msg="retrieved_doc_embeds")
    # a question equal to passage k's own vector retrieves passage k first
    own = [5, 31]
    _, doc_ids, doc_dicts = retriever.retrieve(embeddings[own], n_docs=N_DOCS)
    check(doc_ids[:, 0].tolist() == own, f"questions equal to passages {own} retrieved {doc_ids[:, 0].tolist()} first")
    check([d["title"][0] for d in doc_dicts] == [PASSAGES[k]["title"] for k in own], f"titles {[d['title'] for d in doc_dicts]}")
    # the generator inputs
    question_ids = tokenizer.question_encoder([QUESTIONS[0], QUESTIONS[1]], padding=True, return_tensors="np")["input_ids"]
    batch = retriever(question_ids, embeddings[own], return_tensors="np")
    ids, mask = batch["context_input_ids"], batch["context_attention_mask"]
    check(ids.ndim == 2 and ids.shape[0] == 2 * N_DOCS and mask.shape == ids.shape, f"context_input_ids {ids.shape}, mask {mask.shape}")
    check(batch["doc_ids"].shape == (2, N_DOCS) and batch["retrieved_doc_embeds"].shape == (2, N_DOCS, DIM),
          f"doc_ids {batch['doc_ids'].shape}, retrieved_doc_embeds {batch['retrieved_doc_embeds'].shape}")
    context = tokenizer.generator.decode(ids[0], skip_special_tokens=True)
    check(PASSAGES[own[0]]["title"] in context and QUESTIONS[0].rstrip(" ?") in context,
          f"the first context {context!r} should hold passage {own[0]}'s title and the question")
    # saved and loaded back (config, tokenizers, index reference)
    path = os.path.join(folder, "retriever")
    retriever.save_pretrained(path)
    reloaded = RagRetriever.from_pretrained(path)
    _, again, _ = reloaded.retrieve(embeddings[own], n_docs=N_DOCS)
    check(again[:, 0].tolist() == own, f"RagRetriever.from_pretrained: retrieved {again.tolist()}")
    return retriever


# === Converter without a framework ===
def check_convert_cli(folder: str, config) -> None:
    helped = run(["-m", "rag_core.convert", "--help"])
    check(helped.returncode == 0 and "--to" in helped.stdout, f"python -m rag_core.convert --help: {helped.returncode} {helped.stderr}")
    empty = os.path.join(folder, "not_a_checkpoint")
    os.makedirs(empty, exist_ok=True)
    with open(os.path.join(empty, "notes.txt"), "w") as f:
        f.write("no checkpoint here\n")
    dst = os.path.join(folder, "converted-bad")
    bad = run(["-m", "rag_core.convert", "--to", "tf", empty, dst])
    check(bad.returncode != 0 and "error:" in bad.stderr and "config.json" in bad.stderr and "Traceback" not in bad.stderr,
          f"converting a folder without a checkpoint: expected a one-line error naming config.json, got {bad.returncode}: {bad.stderr.strip()[-600:]}")
    check(not os.path.exists(dst), "a failed conversion created its destination")


def write_tiny_rag_checkpoint(path: str, config) -> dict:
    """A `RagTokenForGeneration` checkpoint written without any framework: random weights with the names
    and shapes of rag_core's conversion table, saved with safetensors.numpy."""
    from safetensors.numpy import save_file

    from rag_core.weight_conversion import ALIAS, rag_entries

    entries = rag_entries(config.question_encoder, config.generator, "RagTokenForGeneration")
    rng = np.random.default_rng(SEED + 2)
    weights = {e.pt: (0.02 * rng.standard_normal(e.pt_shape)).astype(np.float32) for e in entries if e.transform != ALIAS}
    check(len(weights) > 20, f"rag_entries gave only {len(weights)} weights")
    os.makedirs(path)
    config = type(config).from_dict(config.to_dict())
    config.architectures = ["RagTokenForGeneration"]
    config.save_pretrained(path)
    save_file(weights, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    return weights


def check_convert_round_trip(folder: str, source: str, expected: dict) -> str:
    """PT -> TF -> PT with the command line; the final model.safetensors equals `expected` bit for bit."""
    from safetensors.numpy import load_file

    tf_dir, back = os.path.join(folder, "ckpt-tf"), os.path.join(folder, "ckpt-pt-again")
    for src, dst, to in ((source, tf_dir, "tf"), (tf_dir, back, "pt")):
        done = run(["-m", "rag_core.convert", "--to", to, src, dst])
        check(done.returncode == 0, f"python -m rag_core.convert --to {to} {src} {dst} failed:\n{done.stderr.strip()[-2000:]}")
    check(os.path.isfile(os.path.join(tf_dir, "tf_model.h5")), f"--to tf wrote no tf_model.h5 in {sorted(os.listdir(tf_dir))}")
    again = load_file(os.path.join(back, "model.safetensors"))
    check(sorted(again) == sorted(expected), f"round trip changed the weight names: {sorted(set(again) ^ set(expected))[:10]}")
    for name, value in expected.items():
        check(again[name].dtype == value.dtype and again[name].shape == value.shape and np.array_equal(again[name], value),
              f"round trip changed {name}")
    return tf_dir


# === PyTorch ===
def check_torch_model(cls_name: str, config, retriever, tokenizer, folder: str, report: Report) -> None:
    import torch

    import rag_pt

    cls = getattr(rag_pt, cls_name)
    batch = tokenizer(QUESTIONS, text_target=ANSWERS, padding=True, return_tensors="pt")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    labels = batch["labels"]
    state = {}

    with report.step(f"{cls_name}: build, loss and gradients"):
        torch.manual_seed(SEED)
        model = cls(config=config, retriever=retriever)
        out = model(**inputs, labels=labels)
        check(out.loss is not None and torch.isfinite(out.loss).all(), f"loss {out.loss}")
        check(out.doc_scores.shape == (len(QUESTIONS), N_DOCS), f"doc_scores shape {tuple(out.doc_scores.shape)}")
        out.loss.sum().backward()
        for part in ("question_encoder", "generator"):
            grads = [p.grad for p in getattr(model, part).parameters() if p.grad is not None]
            check(grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads),
                  f"no finite non-zero gradient reached the {part}")
        model.zero_grad()
        model.eval()
        state["model"] = model

    with contextlib.suppress(Failed), report.step(f"{cls_name}: greedy generate"):
        model = state["model"]
        ids = model.generate(**inputs, num_beams=1, max_length=6)
        check(isinstance(ids, torch.Tensor) and ids.ndim == 2 and ids.shape[0] == len(QUESTIONS) and 1 < ids.shape[1] <= 6,
              f"generate returned {type(ids).__name__} {tuple(getattr(ids, 'shape', ()))}")
        check(((ids >= 0) & (ids < len(VOCAB))).all(), f"generated ids outside the vocabulary: {ids.tolist()}")
        provenance = model.generate(**inputs, num_beams=1, max_length=6, output_provenance=True)
        check(torch.equal(provenance.sequences, ids), "generate(output_provenance=True) gave other ids than generate()")
        titles = {p["title"] for p in PASSAGES}
        check(len(provenance.doc_titles) == len(QUESTIONS) and all(len(t) == N_DOCS and set(t) <= titles for t in provenance.doc_titles),
              f"doc_titles {provenance.doc_titles}")

    with contextlib.suppress(Failed), report.step(f"{cls_name}: save_pretrained / from_pretrained"):
        model = state["model"]
        path = os.path.join(folder, f"pt-{cls_name}")
        model.save_pretrained(path)
        check(os.path.isfile(os.path.join(path, "model.safetensors")), f"save_pretrained wrote {sorted(os.listdir(path))}")
        with torch.no_grad():
            reference = model(**inputs, labels=labels)
        state["path"], state["reference"] = path, reference  # the converter step needs only these
        with torch.no_grad():
            loaded = cls.from_pretrained(path, retriever=retriever).eval()
            check(loaded.retriever is retriever, "from_pretrained(path, retriever=r) did not attach r")
            again = loaded(**inputs, labels=labels)
        np.testing.assert_allclose(again.logits.numpy(), reference.logits.numpy(), rtol=1e-6, atol=1e-6, err_msg="logits after from_pretrained")
        np.testing.assert_allclose(again.doc_scores.numpy(), reference.doc_scores.numpy(), rtol=1e-6, atol=1e-6, err_msg="doc_scores after from_pretrained")

    if "path" not in state or cls_name != "RagTokenForGeneration":  # one conversion is enough: same layout, ~15 s each
        return
    with report.step(f"{cls_name}: python -m rag_core.convert on the saved checkpoint (PT -> TF -> PT, bit-exact)"):
        from safetensors.numpy import load_file

        path = state["path"]
        expected = load_file(os.path.join(path, "model.safetensors"))
        state["tf_dir"] = check_convert_round_trip(os.path.join(folder, f"convert-{cls_name}"), path, expected)
    with report.step(f"{cls_name}: from_pretrained(tf_model.h5, from_tf=True)"):
        with torch.no_grad():
            from_tf = cls.from_pretrained(state["tf_dir"], from_tf=True, retriever=retriever).eval()
            again = from_tf(**inputs, labels=labels)
        np.testing.assert_allclose(again.logits.numpy(), state["reference"].logits.numpy(), rtol=1e-6, atol=1e-6,
                                   err_msg="logits after from_pretrained(tf_model.h5, from_tf=True)")


# === TensorFlow ===
def check_tf_model(cls_name: str, config, retriever, tokenizer, folder: str, report: Report) -> None:
    import keras
    import tensorflow as tf

    import rag_tf

    cls = getattr(rag_tf, cls_name)
    batch = tokenizer(QUESTIONS, text_target=ANSWERS, padding=True, return_tensors="np")
    arrays = {k: np.asarray(batch[k], dtype=np.int32) for k in ("input_ids", "attention_mask", "labels")}
    inputs = {k: tf.constant(arrays[k]) for k in ("input_ids", "attention_mask")}
    labels = tf.constant(arrays["labels"])
    state = {}

    with report.step(f"{cls_name}: build and loss"):
        keras.utils.set_random_seed(SEED)
        model = cls(config=config, retriever=retriever)
        out = model(**inputs, labels=labels)
        loss = np.asarray(out.loss)
        check(loss.size >= 1 and np.isfinite(loss).all(), f"loss {loss}")
        check(tuple(out.doc_scores.shape) == (len(QUESTIONS), N_DOCS), f"doc_scores shape {tuple(out.doc_scores.shape)}")
        state["model"] = model

    with contextlib.suppress(Failed), report.step(f"{cls_name}: compile and one epoch of fit"):
        model = state["model"]
        before = [np.array(v.numpy()) for v in model.trainable_variables]
        check(before, "the model has no trainable variables")
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        dataset = tf.data.Dataset.from_tensor_slices(arrays).batch(2)
        history = model.fit(dataset, epochs=1, verbose=0)
        losses = history.history.get("loss")
        check(losses and np.isfinite(losses).all(), f"fit history {history.history}")
        changed = sum(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
        check(changed > 0, "one epoch of fit changed no weight")

    with contextlib.suppress(Failed), report.step(f"{cls_name}: greedy generate"):
        model = state["model"]
        ids = np.asarray(model.generate(**inputs, num_beams=1, max_length=6))
        check(ids.ndim == 2 and ids.shape[0] == len(QUESTIONS) and 1 < ids.shape[1] <= 6, f"generate returned shape {ids.shape}")
        check(((ids >= 0) & (ids < len(VOCAB))).all(), f"generated ids outside the vocabulary: {ids.tolist()}")
        provenance = model.generate(**inputs, num_beams=1, max_length=6, output_provenance=True)
        check(np.array_equal(np.asarray(provenance.sequences), ids), "generate(output_provenance=True) gave other ids than generate()")
        titles = {p["title"] for p in PASSAGES}
        check(len(provenance.doc_titles) == len(QUESTIONS) and all(len(t) == N_DOCS and set(t) <= titles for t in provenance.doc_titles),
              f"doc_titles {provenance.doc_titles}")

    with contextlib.suppress(Failed), report.step(f"{cls_name}: save_pretrained / from_pretrained"):
        model = state["model"]
        path = os.path.join(folder, f"tf-{cls_name}")
        model.save_pretrained(path)
        check(os.path.isfile(os.path.join(path, "model.safetensors")), f"save_pretrained wrote {sorted(os.listdir(path))}")
        reference = model(**inputs, labels=labels)
        loaded = cls.from_pretrained(path, retriever=retriever)
        check(loaded.retriever is retriever, "from_pretrained(path, retriever=r) did not attach r")
        again = loaded(**inputs, labels=labels)
        np.testing.assert_allclose(np.asarray(again.logits), np.asarray(reference.logits), rtol=1e-5, atol=1e-5,
                                   err_msg="logits after from_pretrained")
        np.testing.assert_allclose(np.asarray(again.doc_scores), np.asarray(reference.doc_scores), rtol=1e-5, atol=1e-5,
                                   err_msg="doc_scores after from_pretrained")
        h5_path = os.path.join(folder, f"tf-h5-{cls_name}")
        model.save_pretrained(h5_path, save_format="h5")
        check(os.path.isfile(os.path.join(h5_path, "tf_model.h5")), f"save_pretrained(save_format='h5') wrote {sorted(os.listdir(h5_path))}")
        from_h5 = cls.from_pretrained(h5_path, retriever=retriever)
        np.testing.assert_allclose(np.asarray(from_h5(**inputs, labels=labels).logits), np.asarray(reference.logits), rtol=1e-5, atol=1e-5,
                                   err_msg="logits after from_pretrained(tf_model.h5)")


# === Main ===
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--dev", action="store_true", help="environment checks warn instead of failing (developing this script)")
    args = parser.parse_args(argv)
    report = Report(dev=args.dev)
    started = time.perf_counter()
    print(f"smoke --mode {args.mode}: python {sys.version.split()[0]} at {sys.executable}", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"rag-wheel-smoke-{args.mode}-") as folder:
        try:
            run_mode(args.mode, folder, report)
        except Failed:
            pass
    seconds = time.perf_counter() - started
    if report.failures:
        print(f"smoke --mode {args.mode}: {len(report.failures)} FAILED ({seconds:.1f}s)", flush=True)
        for failure in report.failures:
            print(f"  - {failure}", flush=True)
        return 1
    print(f"smoke --mode {args.mode}: all passed ({seconds:.1f}s)", flush=True)
    return 0


def run_mode(mode: str, folder: str, report: Report) -> None:
    with report.step("installed from the wheel, frameworks as the extra says"):
        check_environment(mode, report)
    with contextlib.suppress(Failed), report.step("framework packages fail clearly without their framework"):
        check_missing_framework_errors(mode)
    with report.step("tokenizers: tiny WordPiece, RagTokenizer saved and loaded"):
        tokenizer = build_tokenizers(folder)
    with report.step("passages and index (" + ("command line --embeddings" if mode == "core" else "build_index API") + ")"):
        jsonl, npy, embeddings = write_passages(folder)
        if mode == "core":
            index_dir = build_index_cli(folder, jsonl, npy)
        else:
            index_dir = build_index_api(folder, jsonl, embeddings, tokenizer.generator)
        check_manifest(index_dir)
        config = rag_config(index_dir)
    with report.step("RagRetriever: retrieve, contexts, save and load"):
        retriever = check_retriever(config, tokenizer, embeddings, folder)
    if mode == "core":
        with contextlib.suppress(Failed), report.step("python -m rag_core.convert: --help and a clear error"):
            check_convert_cli(folder, config)
        with contextlib.suppress(Failed), report.step("python -m rag_core.convert: PT -> TF -> PT of a hand-written checkpoint"):
            source = os.path.join(folder, "ckpt-pt")
            weights = write_tiny_rag_checkpoint(source, config)
            check_convert_round_trip(folder, source, weights)
    elif mode == "torch":
        for cls_name in ("RagTokenForGeneration", "RagSequenceForGeneration"):
            with contextlib.suppress(Failed):
                check_torch_model(cls_name, config, retriever, tokenizer, folder, report)
    else:
        for cls_name in ("TFRagTokenForGeneration", "TFRagSequenceForGeneration"):
            with contextlib.suppress(Failed):
                check_tf_model(cls_name, config, retriever, tokenizer, folder, report)


if __name__ == "__main__":
    sys.exit(main())
