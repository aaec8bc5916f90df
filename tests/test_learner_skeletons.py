"""The skeletons a learner starts from: valid, every TODO names its component and the `nanogpt show` command that
prints the reference method to read (a command works wherever nanogpt is installed; a path such as
`impls/reference/x.py` exists only in a checkout), and a run from a pristine copy meets the TODOs in the seed's order
(construction, weight init, forward, optimizer, generate)."""

from __future__ import annotations

import ast
import inspect
import re

import pytest
import torch
from test_learner_support import REFERENCE_PARTS, _one_thread, make_set, registered, skel  # noqa: F401

import nanogpt_impls.reference as ref
from nanogpt_core.errors import ComponentImportError
from nanogpt_core.files import display_path
from nanogpt_core.learn.diagnose import diagnose
from nanogpt_core.learn.source import component_source, find_part
from nanogpt_core.learn.status import COMPONENT_ORDER, LEARNING_PATH, smoke_config, smoke_run
from nanogpt_core.learn.workspace import pristine_text
from nanogpt_core.model.assembly import build_model
from nanogpt_core.model.component_files import import_component, load_set_from_dir
from nanogpt_core.model.contracts import BY_NAME, COMPONENT_NAMES, PHASES
from nanogpt_core.model.registry import get_implementation

TODO_RE = re.compile(r"TODO: Implement (\w+)\.(\w+) — .+ Reference: `nanogpt show reference:(\w+)\.(\w+)`$", re.S)


def todo_methods(component: str) -> list[str]:
    """The functions of a skeleton file whose body raises NotImplementedError (read from the source)."""
    tree = ast.parse(pristine_text(component))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any(isinstance(n, ast.Raise) for n in ast.walk(node)):
            names.append(node.name)
    return names


def call_method(impl_set: str, component: str, method: str) -> None:
    """Call one method of a skeleton with contract-shaped arguments (from the reference model)."""
    cfg = smoke_config()
    impl = get_implementation(impl_set, component)
    model = build_model(cfg)
    if component == "rotary":
        cos, sin = model.cos[:, :4], model.sin[:, :4]
        if method == "precompute":
            impl.precompute(16, cfg.head_dim)
        else:
            impl.apply(torch.randn(1, 4, cfg.n_head, cfg.head_dim), cos, sin)
    elif BY_NAME[component].kind == "function":
        if component == "generate":
            list(impl(model, [1], 2))
        else:
            impl(model)
    elif method == "__init__":
        args = {"norm": (cfg.n_embd,), "mlp": (cfg,), "attention": (cfg, 0), "block": (cfg, 0), "gpt": (cfg,)}
        kwargs = {"attention": {"norm": REFERENCE_PARTS["norm"], "rotary": REFERENCE_PARTS["rotary"]},
                  "block": {"attn": model.transformer.h[0].attn, "mlp": model.transformer.h[0].mlp,
                            "norm": REFERENCE_PARTS["norm"]},
                  "gpt": {"make_block": lambda i: model.transformer.h[i], "norm": REFERENCE_PARTS["norm"]}}
        impl(*args[component], **kwargs.get(component, {}))
    elif component == "gpt":  # forward takes token ids, estimate_flops nothing
        args = {"forward": (torch.zeros(1, 4, dtype=torch.long),), "estimate_flops": ()}[method]
        getattr(impl, method)(torch.nn.Module(), *args)
    else:  # forward of a module whose __init__ may itself be a TODO: call the function on a bare instance
        module = torch.nn.Module()
        getattr(impl, method)(module, *([torch.randn(1, 4, cfg.n_embd)] + ([None, None] if component in
                                                                           ("attention", "block") else [])))


@pytest.mark.parametrize("component", COMPONENT_NAMES)
def test_pristine_skeleton_is_valid_and_every_todo_names_its_reference(component, skel):  # noqa: F811
    methods = todo_methods(component)
    assert methods, f"{component}: the skeleton has no TODO"
    for method in methods:
        with pytest.raises(NotImplementedError) as info:
            call_method(skel, component, method)
        message = str(info.value)
        m = TODO_RE.match(message)
        assert m, f"{component}.{method}: TODO message has the wrong form: {message!r}"
        assert (m.group(1), m.group(2)) == (component, method)
        assert (m.group(3), m.group(4)) == (component, method)  # the same method, in the reference
        shown = find_part(component_source("reference", component), method)  # what `nanogpt show` prints
        assert re.search(rf"^\s*def {method}\(", shown.text, re.M), shown.text[:200]
    # same members as the contract: a learner's file plugs in where the reference does
    impl = get_implementation(skel, component)
    for member in BY_NAME[component].members:
        assert callable(impl) if member == "__call__" else hasattr(impl, member)


def method_phase(component: str, method: str) -> str:
    """The seed's phase of one method: constructors and the rotary table at construction, forwards in forward."""
    if method in ("__init__", "precompute"):
        return "construction"
    if method in ("forward", "apply"):
        return "forward"
    if method == "estimate_flops":  # the seed lists GPT.estimate_flops in its optimization phase
        return "optimizer"
    return BY_NAME[component].phase


def _hybrid(component: str, skeleton: object, solved_methods: set[str]) -> object:
    """The component as a learner has it after writing `solved_methods` (the rest still the skeleton's TODOs)."""
    reference = REFERENCE_PARTS[component]
    todo = [m for m in todo_methods(component) if m not in solved_methods]
    if not todo:
        return reference
    if BY_NAME[component].kind == "function" or "__init__" in todo:
        return skeleton  # a TODO in __init__ (or the only function) is met before anything else of it
    attrs = {m: skeleton.__dict__[m] for m in todo}  # skeleton methods never call super(), so they transplant
    return type(reference.__name__, (reference,), attrs)


def test_a_run_from_pristine_meets_the_todos_in_the_seeds_order(skel):  # noqa: F811
    """Play the learner: run, read the TODO, implement that method (here: take the reference's), run again."""
    solved: dict[str, set[str]] = {c: set() for c in COMPONENT_NAMES}
    met: list[tuple[str, str]] = []
    for attempt in range(30):
        parts = {c: _hybrid(c, get_implementation(skel, c), solved[c]) for c in COMPONENT_NAMES}
        with registered(make_set("walk", parts), f"test-walk-{attempt}"):
            use = dict.fromkeys(COMPONENT_NAMES, "walk")
            try:
                smoke_run(use)
                break
            except NotImplementedError as exc:
                d = diagnose(exc, use)
                assert d is not None and d.kind == "todo"
                met.append((d.component, d.method))
                assert d.method not in solved[d.component], f"{d.where} raised again after being written"
                solved[d.component].add(d.method)
    else:
        pytest.fail("the walk never finished")
    assert met == list(LEARNING_PATH)
    order = [PHASES.index(method_phase(c, m)) for c, m in met]
    assert order == sorted(order), f"TODOs out of the seed's phase order: {met}"
    assert COMPONENT_ORDER == tuple(dict.fromkeys(c for c, _ in met))


def test_a_student_file_that_does_not_import_fails_alone(tmp_path):
    broken = tmp_path / "ws"
    broken.mkdir()
    for component in COMPONENT_NAMES:
        (broken / f"{component}.py").write_text(pristine_text(component))
    (broken / "mlp.py").write_text("def oops(:\n")  # a syntax error while the learner types
    with registered(load_set_from_dir("ws", broken), "test-ws"):
        with pytest.raises(ComponentImportError, match=r"mlp\.py does not import \(SyntaxError.*line 1\).*"
                                                       r"nanogpt reset student:mlp"):
            build_model(smoke_config(), use="ws:mlp")
        # every other component of the set, and the reference, still build
        with pytest.raises(NotImplementedError, match="TODO: Implement attention"):
            build_model(smoke_config(), use="ws:attention")
        build_model(smoke_config(), use="ws:norm")


def test_import_component_gives_a_placeholder_naming_the_file():
    impl = import_component("nanogpt_impls.student.no_such_file", "mlp")  # no file to name: the module, then
    with pytest.raises(ComponentImportError, match=r"module nanogpt_impls\.student\.no_such_file does not import"):
        impl(smoke_config())
    fn = import_component("nanogpt_impls.reference.mlp", "init")  # a file without the contract's entry
    with pytest.raises(ComponentImportError, match="defines no 'init_weights'") as info:
        fn(None)
    # the file as it is on disk, wherever the package is installed (relative to the current folder when under it)
    assert str(info.value).startswith(display_path(inspect.getsourcefile(ref.MLP)) + " does not import")


def test_a_component_missing_a_contract_member_fails_alone(tmp_path, monkeypatch):
    """A renamed `forward` would make the registry reject the whole set (and every command) — not just that file."""
    package = tmp_path / "learner_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "rotary.py").write_text(pristine_text("rotary").replace("def apply(", "def aply("))
    monkeypatch.syspath_prepend(str(tmp_path))
    impl = import_component("learner_pkg.rotary", "rotary")
    with pytest.raises(ComponentImportError, match="Rotary lacks apply, which the contract needs"):
        impl.precompute(16, 8)


def test_skeleton_entries_match_the_student_package():
    for component, contract in BY_NAME.items():
        assert re.search(rf"^(class|def) {contract.entry}\b", pristine_text(component), re.M), component
