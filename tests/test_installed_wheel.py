"""nanogpt installed the way Python tools are: a wheel in a fresh virtual environment, and a workspace of one's own.

The slow test builds the wheel from a copy of the source, installs it into a new venv (with the pinned torch), and
walks the learner's loop as a new user would, in a temporary folder outside any checkout: `nanogpt status` there says
how to make a workspace; `nanogpt init` makes one; the pristine `train --use student:rotary` panel names the
workspace file and the reference where it is installed; a finished rotary written into the workspace passes
`nanogpt check` and `nanogpt compare`; `hint` and `reset` write into the workspace; and nothing in site-packages was
written (every file's size and mtime, before and after).

Offline and quick: the wheel is built without build isolation (setuptools from the dev extra), torch 2.13.0 is
installed from the local wheel pip finds with `--no-index` (the machines' find-links), and the other dependencies,
which this venv already has, are linked into the new one rather than downloaded: exactly the distributions the
wheel's own `Requires-Dist` (and theirs) name. `pip check` then proves every requirement of everything installed,
the torch pin included, is met — which is what makes installing the wheel with `--no-deps` honest. The whole test
takes about 25 s on 2 shared CPU cores (7 s of it installing torch), so it is not marked `slow`.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from learner_files import FINISHED_ROTARY
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from test_learner_errors import TINY_TEXT

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
TORCH_PIN = next(r for r in PYPROJECT["project"]["dependencies"] if r.startswith("torch"))
FAST = ["--depth=1", "--n_head=2", "--n_kv_head=1", "--max_seq_len=32", "--device_batch_size=2", "--eval_tokens=64",
        "--total_batch_size=64", "--num_iterations=1", "--vocab_size=300", "--sample_every=-1"]


def _source_packages() -> dict[str, Path]:
    """{package name: its folder} of every folder with an __init__.py under the mapped roots."""
    found = {}
    for name, root in SETUPTOOLS["package-dir"].items():
        for init in sorted((REPO / root).rglob("__init__.py")):
            parts = init.parent.relative_to(REPO / root).parts
            found[".".join((name, *parts))] = init.parent
    return found


def test_the_wheel_lists_every_package_of_the_source():
    """A subpackage missing from `packages` is missing from the wheel (checks.ladder was: compare failed there)."""
    assert sorted(_source_packages()) == sorted(SETUPTOOLS["packages"])


def test_package_data_covers_every_file_that_is_not_python():
    data = SETUPTOOLS.get("package-data", {})
    for name, root in SETUPTOOLS["package-dir"].items():
        for path in (REPO / root).rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts \
                    or _learners_own(path):
                continue
            relative = path.relative_to(REPO / root)
            assert any(relative.match(pattern) for pattern in data.get(name, [])), f"{name}: {relative} not shipped"


def _learners_own(path: Path) -> bool:
    """What a learner's work leaves in a checkout's impls/student (never shipped)."""
    return ".backups" in path.parts or path.name in (".hints.json", ".gitignore")


# --- the slow test: a wheel in a fresh venv ------------------------------------------------------------------------


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{' '.join(map(str, proc.args))} exited {proc.returncode}:\n" \
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def build_wheel(out: Path) -> Path:
    """The wheel of a copy of the source (a build in place would leave build/ and egg-info in the checkout)."""
    source = out / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".backups", ".hints.json",
        "tests", "benchmarks", "examples", "docs"))
    _ok(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
              "-w", str(out / "dist"), str(source)]))
    [wheel] = (out / "dist").glob("nanogpt-*.whl")
    return wheel


def wheel_requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(name).decode("utf-8"))
    return metadata.get_all("Requires-Dist") or []


def requirement_closure(requirements: list[str]) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions `requirements` need, and theirs, in this environment (extras followed)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({**default_environment(),
                                                                               "extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        dist = importlib.metadata.distribution(name)
        assert requirement.specifier.contains(dist.version, prereleases=True), (requirement, dist.version)
        first = name not in found
        found[name] = dist
        for extra_needed in ([""] if first else []) + sorted(requirement.extras):
            todo.extend((Requirement(r), extra_needed) for r in dist.requires or [])
    return found


def link_dependencies(dists: dict[str, importlib.metadata.Distribution], folder: Path) -> None:
    """Symlink each distribution's top-level files and folders (its code and its .dist-info) into `folder`."""
    folder.mkdir()
    for dist in dists.values():
        assert dist.files is not None, f"{dist.metadata['Name']} has no RECORD to link it by"
        base = Path(dist.locate_file(""))
        for top in {f.parts[0] for f in dist.files}:
            if top in ("..", "__pycache__") or top.endswith(".pth") or (folder / top).exists():
                continue
            os.symlink(base / top, folder / top)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file and folder under `folder` (symlinks as links, not followed)."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            info = path.lstat()
            found[str(path.relative_to(folder))] = (info.st_size, info.st_mtime_ns)
    return found


def test_a_wheel_in_a_fresh_venv_walks_the_loop_in_a_workspace_of_its_own(tmp_path):
    wheel = build_wheel(tmp_path / "build")
    venv = tmp_path / "venv"
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", str(venv)]))
    python = venv / "bin" / "python"
    site = Path(_ok(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]))
                .stdout.strip())
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    needed = requirement_closure(wheel_requirements(wheel))
    torch = _run([*pip, "install", "--no-index", "--no-deps", "-q", TORCH_PIN])  # the local wheel (find-links)
    if torch.returncode != 0:  # no wheel reachable offline here: this environment's own torch, the same pin
        assert "No matching distribution" in torch.stderr, torch.stderr
    else:
        needed.pop("torch")
    link_dependencies(needed, tmp_path / "dependencies")
    (Path(site) / "_nanogpt_test_dependencies.pth").write_text(f"{tmp_path / 'dependencies'}\n")
    _ok(_run([*pip, "install", "--no-index", "--no-deps", "-q", str(wheel)]))
    _ok(_run([*pip, "check"]))  # every requirement of everything there, torch==2.13.0 included, is met

    home = tmp_path / "home"  # a new user's folder, outside any checkout or workspace
    home.mkdir()
    (home / "tiny.txt").write_text(TINY_TEXT)
    env = {k: v for k, v in os.environ.items() if k not in ("NANOGPT_STUDENT_DIR", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONNOUSERSITE="1", COLUMNS="300",
               MPLCONFIGDIR=str(tmp_path / "mpl"))
    nanogpt = str(venv / "bin" / "nanogpt")

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        return _run([nanogpt, *args], cwd=cwd, env=env)

    where = _ok(_run([str(python), "-c", "import nanogpt_impls, nanogpt_core; print(nanogpt_impls.__file__)"],
                     env=env))
    assert where.stdout.startswith(str(site))  # the installed package, not this checkout
    before = snapshot(Path(site))

    outside = run("status", cwd=home)
    assert outside.returncode == 2 and "Traceback" not in outside.stderr, outside.stderr
    assert "there is none here" in outside.stderr and "`nanogpt init`" in outside.stderr

    _ok(run("init", cwd=home))
    workspace = home / "my-gpt"
    pristine = run("train", "--use", "student:rotary", "--data", "../tiny.txt", "--out", "../run", *FAST,
                   cwd=workspace)
    panel = pristine.stderr
    assert pristine.returncode == 3, panel
    assert "Not implemented yet: rotary.precompute (student)" in panel
    assert "your code  rotary.py:24  in Rotary.precompute" in panel
    assert f"reference  {site}/nanogpt_impls/reference/rotary.py" in panel
    assert "nanogpt show reference:rotary.precompute" in panel and "impls/student" not in panel
    assert "def precompute" in _ok(run("show", "reference:rotary.precompute", cwd=workspace)).stdout

    (workspace / "rotary.py").write_text(FINISHED_ROTARY)
    checked = _ok(run("check", "student:rotary", cwd=workspace))
    assert "0 failed, 0 not implemented" in checked.stdout, checked.stdout
    compared = _ok(run("compare", "--use", "student:rotary", "--steps", "3", cwd=workspace))
    assert "PASS" in compared.stdout, compared.stdout

    _ok(run("hint", "student:attention.forward", cwd=workspace))
    reset = _ok(run("reset", "student:rotary", cwd=workspace))
    assert "Backed up rotary.py -> .backups/rotary.py." in reset.stdout
    assert (workspace / ".hints.json").is_file() and list((workspace / ".backups").glob("rotary.py.*"))

    after = snapshot(Path(site))
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"written in site-packages: {changed[:20]}"
