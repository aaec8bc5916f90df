"""docs/tutorial.md is run: every ```bash block, command by command, in a temporary folder.

Each block is preceded by an HTML comment saying how to run it (invisible when the page is rendered):

    <!-- test: set=skel exit=3 expect="Not implemented yet" fast -->

- `set=NAME`: run the command with the implementation set NAME in place of `student` (`skel` = the pristine
  skeletons, `solved` = a finished set, `reference`); the live `impls/student` files are never used, so the suite
  passes whatever state a learner has left them in. `nanogpt status` without `--use` gets `--use NAME`.
- `exit=N` (default 0) and `expect="text"` (in the output of the block's last command).
- `fast`: `nanogpt train` gets small sizes and a tiny corpus appended (later flags win), so the block runs in
  seconds; the command's form is still the tutorial's. (A spec holds no `>`: the comment would end there.)
- `skip="why"`: not run here, with the reason in the page's source (only the install step).
- `edited=COMPONENT`: before the block, the learner has written that component's first TODO method (the sandbox
  workspace's file becomes `learner_files.half_written(COMPONENT)`), for the commands that show what was written
  (`diff`, `reset` and its `--undo`).

`NANOGPT_STUDENT_DIR` points at a temporary copy of the pristine skeletons, so `nanogpt reset`, `hint`, `show` and
`diff` never touch the real workspace. Commands are `nanogpt ...`, `pytest ...` or `python ...`.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from learner_files import half_written
from test_installed_wheel import TORCH_PIN
from test_learner_errors import TINY_TEXT
from test_learner_support import _one_thread, skel, solved  # noqa: F401

from nanogpt_cli.main import cli
from nanogpt_core.learn.status import LEARNING_PATH
from nanogpt_core.learn.workspace import STUDENT_DIR_ENV, write_pristine_dir

REPO = Path(__file__).resolve().parents[1]
TUTORIAL = REPO / "docs" / "tutorial.md"
BLOCK_RE = re.compile(r"<!-- test:(?P<spec>[^>]*)-->\s*\n```bash\n(?P<body>.*?)```", re.S)
FAST_FLAGS = ["--depth=1", "--n_head=2", "--n_kv_head=1", "--max_seq_len=32", "--device_batch_size=2",
              "--eval_tokens=64", "--total_batch_size=64", "--num_iterations=2", "--vocab_size=300",
              "--sample_every=-1"]


def parse_spec(spec: str) -> dict[str, str]:
    out = {}
    for token in shlex.split(spec):
        key, _, value = token.partition("=")
        out[key] = value if _ else "1"
    return out


def blocks() -> list[tuple[dict[str, str], list[str]]]:
    text = TUTORIAL.read_text()
    found = []
    for m in BLOCK_RE.finditer(text):
        commands = [c.strip() for c in m.group("body").replace("\\\n", " ").splitlines()]
        found.append((parse_spec(m.group("spec")), [c for c in commands if c and not c.startswith("#")]))
    return found


def test_every_bash_block_says_how_it_is_tested():
    text = TUTORIAL.read_text()
    assert text.count("```bash") == len(blocks()) > 10


def test_the_order_table_is_what_a_run_meets():
    """The tutorial's order table must equal the order the skeleton walk test measures (LEARNING_PATH)."""
    table = TUTORIAL.read_text().split("<!-- order:", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| (\d+) \| `(\w+)\.(\w+)` \| ([\w ]+) \|", table, re.M)
    assert [(c, m) for _, c, m, _ in rows] == list(LEARNING_PATH)
    assert [int(n) for n, *_ in rows] == list(range(1, len(LEARNING_PATH) + 1))


def test_the_install_steps_are_the_makefile_target_and_the_wheel_test():
    """Only the two ways in are not run here: a clone's `make install`, and `pip install` of the package, which
    tests/test_installed_wheel.py does into a fresh venv (its torch pin is the project's)."""
    skipped = [cmds for spec, cmds in blocks() if "skip" in spec]
    assert skipped == [["make install", "source .venv/bin/activate"],
                       [f"pip install {TORCH_PIN}", "pip install ./nanogpt"]]
    assert re.search(r"^install:", (REPO / "Makefile").read_text(), re.M)


def _rewrite(argv: list[str], spec: dict[str, str], corpus: Path) -> list[str]:
    impl_set = spec.get("set")
    if impl_set:
        argv = [re.sub(r"\bstudent\b", impl_set, a) for a in argv]
        if argv[:2] == ["nanogpt", "status"] and "--use" not in argv:
            argv += ["--use", impl_set]
    if "fast" in spec and argv[:2] == ["nanogpt", "train"]:
        argv += FAST_FLAGS + ["--data", str(corpus)]
    return argv


def _run(argv: list[str]) -> tuple[int, str]:
    if argv[0] == "nanogpt":
        result = CliRunner().invoke(cli, argv[1:])
        return result.exit_code, result.output
    if argv[0] == "python":
        proc = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=120)
        return proc.returncode, proc.stdout + proc.stderr
    if argv[0] == "pytest":
        proc = subprocess.run([sys.executable, "-m", "pytest", *argv[1:], "-p", "no:cacheprovider"], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        return proc.returncode, proc.stdout + proc.stderr
    raise AssertionError(f"the tutorial runs a command this test does not know: {argv[0]}")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    root = tmp_path_factory.mktemp("tutorial")
    corpus = root / "tiny.txt"
    corpus.write_text(TINY_TEXT)
    workspace = write_pristine_dir(root / "student")
    return root, corpus, workspace


def test_the_tutorial_runs(sandbox, skel, solved, monkeypatch):  # noqa: F811
    root, corpus, workspace = sandbox
    monkeypatch.chdir(root)
    monkeypatch.setenv(STUDENT_DIR_ENV, str(workspace))
    ran = 0
    for spec, commands in blocks():
        if "skip" in spec:
            continue
        if spec.get("edited"):
            (workspace / f"{spec['edited']}.py").write_text(half_written(spec["edited"]))
        for i, command in enumerate(commands):
            argv = _rewrite(shlex.split(command), spec, corpus)
            code, output = _run(argv)
            last = i == len(commands) - 1
            want = int(spec.get("exit", "0")) if last else 0
            assert code == want, f"{' '.join(argv)} exited {code}, expected {want}:\n{output[-3000:]}"
            if last and spec.get("expect"):
                assert spec["expect"] in output, f"{' '.join(argv)}: {spec['expect']!r} not in:\n{output[-3000:]}"
            ran += 1
    assert ran >= 10
    assert (root / "runs" / "mine" / "checkpoints").is_dir()  # the whole-set run saved where the tutorial says


def test_the_tutorials_note_on_whole_set_order_is_true(skel, tmp_path):  # noqa: F811
    """Section 4 says: with the whole set, `nanogpt train` asks for the optimizer before the forward pass (it sets up
    the optimizers right after weight init, as nanochat's base_train does), while the seed's order — and
    `smoke_run`, which `status` uses — puts the forward first. If training changes its order, update the note."""
    from test_learner_errors import train_args
    from test_learner_support import REFERENCE_PARTS, make_set, registered

    from nanogpt_core.learn.status import smoke_run
    from nanogpt_core.model.registry import get_implementation

    parts = dict(REFERENCE_PARTS, **{c: get_implementation(skel, c) for c in ("norm", "optimizer", "generate")})
    with registered(make_set("late", parts), "test-late"):
        with pytest.raises(NotImplementedError, match="TODO: Implement norm.forward"):
            smoke_run("late")
        corpus = tmp_path / "tiny.txt"
        corpus.write_text(TINY_TEXT)
        result = CliRunner().invoke(cli, train_args("late", corpus, tmp_path / "run"))
    assert result.exit_code == 3
    assert "Not implemented yet: optimizer.setup_optimizers" in result.output
    assert "the optimizer's TODO then comes before the forward" in " ".join(TUTORIAL.read_text().split())
