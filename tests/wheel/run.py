"""The wheel as a user installs it: build, install into fresh environments, smoke-test (`make test-wheel`).

    python -m tests.wheel.run --python python3 [--modes core torch tf] [--dist DIR] [--wheel FILE] [--recreate]

1. Builds the sdist and, from it, the wheel (`python -m build`), and checks that the wheel holds every
   `.py` file of `rag_core/`, `rag_pt/` and `rag_tf/` in the checkout (its RECORD), nothing but those
   three packages, and the `torch` / `tf` / `ray` extras; the sdist must hold the same files.
2. For each mode (core: no extra, torch: `[torch]`, tf: `[tf]`) creates `.venv-wheel-<mode>` in the
   repository root with `--python` and installs `pip install -c constraints.txt "rag-twin[<extra>] @ <wheel>"`.
   The environment is reused while its stamp (constraints.txt, pyproject.toml, the interpreter) still
   matches; the wheel itself is then reinstalled (`--no-deps --force-reinstall`), so a rebuilt wheel is
   what gets tested. torch must resolve to the constraints' pin (the CPU wheel on this machine's disk):
   an install that brings another torch or any `nvidia-*` package fails.
3. Runs `<venv>/bin/python tests/wheel/smoke.py --mode <mode>` from a fresh temporary directory outside
   the checkout, without PYTHONPATH (the checkout cannot be imported by accident: smoke.py checks that
   the packages come from the environment's site-packages), offline (HF_HUB_OFFLINE=1, ...).
4. Prints one line per mode (environment and smoke times) and exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
SMOKE = Path(__file__).resolve().with_name("smoke.py")
CONSTRAINTS = ROOT / "constraints.txt"
PYPROJECT = ROOT / "pyproject.toml"
PACKAGES = ("rag_core", "rag_pt", "rag_tf")
MODES = ("core", "torch", "tf")
EXTRAS = {"core": None, "torch": "torch", "tf": "tf"}
DISTRIBUTION = "rag-twin"
STAMP = ".wheel-env-stamp.json"

# What the smoke test runs with: offline, quiet TensorFlow, and nothing that could point Python at the checkout.
SMOKE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "TOKENIZERS_PARALLELISM": "false"}
DROPPED_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONSAFEPATH", "VIRTUAL_ENV",
               "TF_USE_LEGACY_KERAS", "USE_TF", "USE_TORCH", "USE_JAX")


class WheelCheckError(RuntimeError):
    pass


def log(message: str = "") -> None:
    print(message, flush=True)


def run_quiet(command: list, what: str, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, its output kept; on failure raise with the output's tail."""
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise WheelCheckError(f"{what} failed (exit {done.returncode}): {' '.join(map(str, command))}\n{output[-6000:]}")
    return done


# === 1. Build and check the distributions ===
def build(dist_dir: Path) -> tuple[Path, Path]:
    started = time.perf_counter()
    run_quiet([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", dist_dir, ROOT], "python -m build", cwd=ROOT)
    wheels, sdists = sorted(dist_dir.glob("*.whl")), sorted(dist_dir.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        raise WheelCheckError(f"expected one wheel and one sdist in {dist_dir}, found {[p.name for p in dist_dir.iterdir()]}")
    log(f"built {wheels[0].name} and {sdists[0].name} ({time.perf_counter() - started:.1f}s)")
    return wheels[0], sdists[0]


def source_files() -> list[str]:
    """The package modules of the checkout (posix paths relative to the root), tests excluded."""
    files = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).parts
            if "__pycache__" in parts or any(p in ("tests", "test") for p in parts[:-1]):
                continue
            if parts[-1].startswith("test_") or parts[-1] == "conftest.py":
                continue
            files.append("/".join(parts))
    if not files:
        raise WheelCheckError(f"no .py files under {PACKAGES} in {ROOT}")
    return files


def check_wheel(wheel: Path, sdist: Path) -> int:
    expected = source_files()
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        records = [n for n in names if n.endswith(".dist-info/RECORD")]
        if len(records) != 1:
            raise WheelCheckError(f"{wheel.name} has {len(records)} RECORD files")
        info = records[0].rsplit("/", 1)[0]
        recorded = {row[0] for row in csv.reader(io.StringIO(archive.read(records[0]).decode("utf-8"))) if row}
        metadata = archive.read(f"{info}/METADATA").decode("utf-8")
    missing = [f for f in expected if f not in recorded]
    if missing:
        raise WheelCheckError(
            f"{wheel.name} lacks {len(missing)} module(s) of the checkout (a subpackage missing from "
            f"[tool.setuptools.packages.find] in pyproject.toml?): {missing}"
        )
    unlisted = sorted(n for n in names if n not in recorded)
    if unlisted:
        raise WheelCheckError(f"{wheel.name} holds files its RECORD does not list: {unlisted}")
    tops = {n.split("/", 1)[0] for n in recorded}
    stray = sorted(tops - set(PACKAGES) - {info})
    if stray:
        raise WheelCheckError(f"{wheel.name} installs more than {PACKAGES}: {stray}")
    extras = {line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Provides-Extra:")}
    if not {"torch", "tf", "ray"} <= extras:
        raise WheelCheckError(f"{wheel.name} declares the extras {sorted(extras)}; expected torch, tf and ray")
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    missing = [f for f in expected if f not in in_sdist]
    if missing:
        raise WheelCheckError(f"{sdist.name} lacks {missing}")
    for required in ("pyproject.toml", "README.md"):
        if required not in in_sdist:
            raise WheelCheckError(f"{sdist.name} lacks {required}")
    return len(expected)


# === 2. Environments ===
def resolve_python(python: str) -> str:
    found = shutil.which(python) if os.sep not in python else python
    if not found or not os.access(found, os.X_OK):
        raise WheelCheckError(f"--python {python!r}: no such interpreter")
    return found


def environment_stamp(python: str, mode: str) -> dict:
    version = run_quiet([python, "-c", "import sys; print(sys.version); print(sys.base_prefix)"], f"{python} --version").stdout
    digest = lambda path: hashlib.sha256(path.read_bytes()).hexdigest()  # noqa: E731
    return {"mode": mode, "python": version.split(), "constraints.txt": digest(CONSTRAINTS), "pyproject.toml": digest(PYPROJECT)}


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def constraint_pins() -> dict:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalize(name)] = version.strip()
    return pins


def normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def installed(python: Path) -> dict:
    """{normalized distribution name: version} of an environment."""
    script = "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    out = run_quiet([python, "-c", script], "listing installed distributions").stdout
    return {normalize(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items() if k}


def check_installed(python: Path, mode: str) -> dict:
    """The pins were honoured (torch above all: never another build) and no CUDA runtime came along."""
    dists, pins = installed(python), constraint_pins()
    wrong = {name: (version, pins[name]) for name, version in dists.items()
             if name in pins and version.split("+", 1)[0] != pins[name].split("+", 1)[0]}
    if wrong:
        raise WheelCheckError(f"{mode}: installed versions differ from constraints.txt (installed, pinned): {wrong}")
    cuda = sorted(name for name in dists if name.startswith(("nvidia-", "cuda-", "triton")))
    if cuda:
        raise WheelCheckError(f"{mode}: a CUDA build came along ({cuda}); torch must be the pinned CPU wheel ({dists.get('torch')})")
    frameworks = {"core": (), "torch": ("torch",), "tf": ("tensorflow-cpu", "tensorflow", "keras")}[mode]
    absent = [name for name in ("torch", "tensorflow", "tensorflow-cpu", "tf-keras", "jax", "ray") if name in dists and name not in frameworks]
    if absent:
        raise WheelCheckError(f"{mode}: the install pulled in {absent}")
    return dists


def prepare_environment(python: str, mode: str, wheel: Path, recreate: bool) -> tuple[Path, str]:
    """Create (or reuse) `.venv-wheel-<mode>` with the wheel installed; returns (venv, 'created'/'reused')."""
    venv = ROOT / f".venv-wheel-{mode}"
    stamp_path = venv / STAMP
    stamp = environment_stamp(python, mode)
    reusable = (not recreate and venv_python(venv).exists() and stamp_path.is_file()
                and json.loads(stamp_path.read_text()) == stamp)
    pip = [venv_python(venv), "-m", "pip"]
    if reusable:
        run_quiet([*pip, "install", "--quiet", "--no-deps", "--force-reinstall", wheel], f"{mode}: reinstalling the wheel")
        how = "reused"
    else:
        if venv.exists():
            shutil.rmtree(venv)
        run_quiet([python, "-m", "venv", venv], f"{mode}: creating {venv.name}")
        run_quiet([*pip, "install", "--quiet", "--upgrade", "pip>=24"], f"{mode}: upgrading pip")
        extra = EXTRAS[mode]
        requirement = f"{DISTRIBUTION}{f'[{extra}]' if extra else ''} @ {wheel.resolve().as_uri()}"
        run_quiet([*pip, "install", "--quiet", "-c", CONSTRAINTS, requirement], f"{mode}: pip install {requirement}")
        run_quiet([*pip, "check"], f"{mode}: pip check")
        how = "created"
    dists = check_installed(venv_python(venv), mode)
    if not reusable:
        stamp_path.write_text(json.dumps(stamp, indent=1))  # last: a failed install is never reused
    versions = ", ".join(f"{n} {dists[n]}" for n in ("transformers", "torch", "tensorflow-cpu", "tensorflow", "keras") if n in dists)
    return venv, f"{how}; {versions}"


# === 3. Smoke ===
def smoke_environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    env.update(SMOKE_ENV)
    return env


def run_smoke(venv: Path, mode: str, timeout: float) -> int:
    with tempfile.TemporaryDirectory(prefix=f"rag-wheel-{mode}-") as cwd:
        if Path(cwd).resolve().is_relative_to(ROOT):
            raise WheelCheckError(f"the temporary directory {cwd} lies inside the checkout {ROOT}")
        process = subprocess.Popen([str(venv_python(venv)), str(SMOKE), "--mode", mode], cwd=cwd, env=smoke_environment(),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            for line in process.stdout:
                print(f"    {line}", end="", flush=True)
            code = process.wait()
        finally:
            timer.cancel()
        if code < 0:
            log(f"    smoke --mode {mode} killed after {timeout:.0f}s")
        return code


# === Main ===
def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.wheel.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default="python3", help="interpreter the environments are created with (default: python3)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--dist", type=Path, default=None, help="build into this folder and keep it (default: a temporary folder)")
    parser.add_argument("--wheel", type=Path, default=None, help="test this wheel instead of building one (no build checks)")
    parser.add_argument("--recreate", action="store_true", help="recreate the environments even when their stamp matches")
    parser.add_argument("--smoke-timeout", type=float, default=900, help="seconds per smoke run (default 900)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    results, failed = [], False
    with tempfile.TemporaryDirectory(prefix="rag-wheel-dist-") as tmp:
        try:
            python = resolve_python(args.python)
            if args.wheel is not None:
                wheel = args.wheel.resolve()
                if not wheel.is_file():
                    raise WheelCheckError(f"--wheel {wheel}: no such file")
            else:
                dist_dir = args.dist.resolve() if args.dist else Path(tmp)
                if args.dist:
                    for old in list(dist_dir.glob("rag_twin-*.whl")) + list(dist_dir.glob("rag_twin-*.tar.gz")):
                        old.unlink()  # never test a stale build
                dist_dir.mkdir(parents=True, exist_ok=True)
                wheel, sdist = build(dist_dir)
                count = check_wheel(wheel, sdist)
                log(f"wheel check: ok ({count} modules of {', '.join(PACKAGES)} in the wheel's RECORD and the sdist)")
        except WheelCheckError as err:
            log(f"FAILED: {err}")
            return 1
        for mode in args.modes:
            log(f"--- {mode}: {ROOT.name}/.venv-wheel-{mode}")
            env_started = time.perf_counter()
            try:
                venv, how = prepare_environment(python, mode, wheel, args.recreate)
            except (WheelCheckError, OSError) as err:
                env_seconds = time.perf_counter() - env_started
                log(f"    FAILED: {err}")
                results.append((mode, env_seconds, "env failed", None, "FAILED (environment)"))
                failed = True
                continue
            env_seconds = time.perf_counter() - env_started
            log(f"    environment {how} ({env_seconds:.1f}s)")
            smoke_started = time.perf_counter()
            code = run_smoke(venv, mode, args.smoke_timeout)
            smoke_seconds = time.perf_counter() - smoke_started
            ok = code == 0
            failed |= not ok
            results.append((mode, env_seconds, how.split(";")[0], smoke_seconds, "ok" if ok else f"FAILED (exit {code})"))
    log("=== wheel test" + (f" of {wheel.name}" if results else ""))
    for mode, env_seconds, how, smoke_seconds, outcome in results:
        smoke = f"smoke {smoke_seconds:6.1f}s" if smoke_seconds is not None else "smoke      -"
        log(f"{mode:<6} environment {env_seconds:6.1f}s {'(' + how + ')':<10} {smoke}  {outcome}")
    log(f"total {time.perf_counter() - started:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
