"""rag_pt and rag_tf cannot drift apart: the same public modules, classes (TF adds the `TF` prefix),
methods in the same order and the same call signatures (`forward` is `call` in TF, which may take
an extra `training` argument). Framework-only modules and members (Keras' training hooks) are
known divergences in `tolerances.py`, each with its reason."""

from __future__ import annotations

import inspect
import pkgutil

import pytest

from tests.cross.tolerances import TOLERANCES

# the one renaming between the frameworks
PT_TO_TF_METHOD = {"forward": "call"}
TF_ONLY_PARAMETERS = {"training"}


def _public_modules(package) -> set[str]:
    return {m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")}


def _own_members(cls, package: str) -> list[str]:
    """Public methods and properties defined by the package's own classes, base first, in source order."""
    names = []
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith(package + "."):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") and name != "__init__":
                continue
            if isinstance(value, type):
                continue  # class attributes such as config_class
            if callable(value) or isinstance(value, (property, classmethod, staticmethod)):
                if name not in names:
                    names.append(name)
    return names


def _signature(cls, name: str):
    member = inspect.getattr_static(cls, name)
    if isinstance(member, property):
        return None
    function = getattr(cls, name)
    params = [p for p in inspect.signature(function).parameters.values() if p.name not in ("self", "cls")]
    return [(p.name, p.kind, p.default) for p in params]


@pytest.fixture(scope="module")
def packages():
    import rag_pt
    import rag_tf

    return rag_pt, rag_tf


def test_same_public_modules(packages):
    rag_pt, rag_tf = packages
    tf_only = set(TOLERANCES["tf_only_modules"].names)
    pt_modules, tf_modules = _public_modules(rag_pt), _public_modules(rag_tf) - tf_only
    assert pt_modules == tf_modules, (
        f"only in rag_pt: {sorted(pt_modules - tf_modules)}; only in rag_tf: {sorted(tf_modules - pt_modules)}"
    )


def test_same_public_classes(packages):
    rag_pt, rag_tf = packages
    assert ["TF" + name for name in rag_pt.__all__] == list(rag_tf.__all__)


CLASSES = ["RagPreTrainedModel", "RagModel", "RagSequenceForGeneration", "RagTokenForGeneration"]


def _members(name, packages):
    rag_pt, rag_tf = packages
    pt_cls, tf_cls = getattr(rag_pt, name), getattr(rag_tf, "TF" + name)
    tf_only = set(TOLERANCES["tf_only_members"].names)
    pt_only = set(TOLERANCES["pt_only_members"].names)
    pt_members = [PT_TO_TF_METHOD.get(m, m) for m in _own_members(pt_cls, "rag_pt") if m not in pt_only]
    tf_members = [m for m in _own_members(tf_cls, "rag_tf") if m not in tf_only]
    return pt_cls, tf_cls, pt_members, tf_members


@pytest.mark.parametrize("name", CLASSES)
def test_same_methods_in_the_same_order(packages, name):
    """Each side's own members exist on the other (defined there or inherited from transformers),
    and the members both define appear in the same order."""
    pt_cls, tf_cls, pt_members, tf_members = _members(name, packages)
    reverse = {v: k for k, v in PT_TO_TF_METHOD.items()}
    missing_in_tf = [m for m in pt_members if not hasattr(tf_cls, m)]
    missing_in_pt = [m for m in tf_members if not hasattr(pt_cls, reverse.get(m, m))]
    assert not missing_in_tf and not missing_in_pt, f"{name}: only in rag_pt {missing_in_tf}; only in rag_tf {missing_in_pt}"
    both_pt = [m for m in pt_members if m in tf_members]
    both_tf = [m for m in tf_members if m in pt_members]
    assert both_pt == both_tf, f"{name}: method order differs\n pt {both_pt}\n tf {both_tf}"


@pytest.mark.parametrize("name", CLASSES)
def test_same_signatures(packages, name):
    pt_cls, tf_cls, pt_members, tf_members = _members(name, packages)
    reverse = {v: k for k, v in PT_TO_TF_METHOD.items()}
    differences = []
    for tf_member in dict.fromkeys(pt_members + tf_members):
        member = reverse.get(tf_member, tf_member)
        if not hasattr(tf_cls, tf_member) or not hasattr(pt_cls, member):
            continue  # reported by test_same_methods_in_the_same_order
        if member in TOLERANCES["loader_signatures"].names:
            continue
        pt_sig, tf_sig = _signature(pt_cls, member), _signature(tf_cls, tf_member)
        if pt_sig is None or tf_sig is None:
            if (pt_sig is None) != (tf_sig is None):
                differences.append(f"{member}: a property on one side only")
            continue
        tf_sig = [p for p in tf_sig if p[0] not in TF_ONLY_PARAMETERS]
        if pt_sig != tf_sig:
            differences.append(f"{member}: " + _describe(pt_sig, tf_sig))
    assert not differences, f"{name} vs TF{name}:\n  " + "\n  ".join(differences)


def _describe(pt_sig, tf_sig) -> str:
    pt_names, tf_names = [p[0] for p in pt_sig], [p[0] for p in tf_sig]
    detail = []
    if set(pt_names) - set(tf_names):
        detail.append(f"only PT {sorted(set(pt_names) - set(tf_names))}")
    if set(tf_names) - set(pt_names):
        detail.append(f"only TF {sorted(set(tf_names) - set(pt_names))}")
    common = [n for n in pt_names if n in tf_names]
    if common != [n for n in tf_names if n in pt_names]:
        detail.append(f"order differs: PT {common} TF {[n for n in tf_names if n in pt_names]}")
    pt_by, tf_by = {p[0]: p for p in pt_sig}, {p[0]: p for p in tf_sig}
    for n in common:
        if pt_by[n][1:] != tf_by[n][1:]:
            detail.append(f"{n}: PT {pt_by[n][1].name}={pt_by[n][2]!r} vs TF {tf_by[n][1].name}={tf_by[n][2]!r}")
    return "; ".join(detail)
