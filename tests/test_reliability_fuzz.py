"""Fuzzing the `--use` parser: whatever a user types, the answer is a full, valid choice of implementations or one
UseSpecError line, never another exception. (The tokenizer's round trip on arbitrary Unicode is fuzzed in
tests/test_tokenizer.py::test_round_trip_on_arbitrary_unicode.)"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nanogpt_core.errors import UseSpecError
from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.registry import implementation_sets, registrations
from nanogpt_core.model.use_spec import format_use, resolve_use

# pieces a real spec is made of, and near misses, so that random concatenations hit every branch of the parser
PIECES = ["student", "reference", "attention", "mlp", "norm", "generate", ":", ",", " ", "::", ",,", "\t", "\n",
          "nosuch", "attn", "Student", "stu dent", "é", "\x00", "-", "_"]
SPEC_STRINGS = st.one_of(st.text(max_size=60), st.lists(st.sampled_from(PIECES), max_size=12).map("".join))
SPEC_DICTS = st.dictionaries(st.one_of(st.sampled_from(COMPONENT_NAMES), st.text(max_size=8)),
                             st.one_of(st.sampled_from(["reference", "student", "nosuch", ""]), st.text(max_size=8)),
                             max_size=4)


def assert_resolution_or_use_spec_error(spec) -> None:
    try:
        chosen = resolve_use(spec)
    except UseSpecError as exc:
        message = str(exc)
        assert message and "\n" not in message  # one line, even for a spec with newlines in it (shown with repr)
        return
    assert list(chosen) == list(COMPONENT_NAMES)
    regs = registrations()
    assert all((impl_set, component) in regs for component, impl_set in chosen.items())
    assert resolve_use(format_use(chosen)) == chosen  # the canonical spec round-trips


@settings(max_examples=400, deadline=None)
@given(SPEC_STRINGS)
def test_any_string_resolves_or_is_a_use_spec_error(spec):
    assert_resolution_or_use_spec_error(spec)


@settings(max_examples=200, deadline=None)
@given(st.one_of(SPEC_DICTS, st.none(), st.integers(), st.lists(st.text(max_size=5), max_size=3)))
def test_any_mapping_or_other_value_resolves_or_is_a_use_spec_error(spec):
    assert_resolution_or_use_spec_error(spec)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(sorted(registrations())), max_size=8, unique_by=lambda pair: pair[1]),
       st.sampled_from(["", " ", "  "]))
def test_every_well_formed_spec_resolves_to_what_it_says(pairs, pad):
    spec = ",".join(f"{pad}{impl_set}{pad}:{pad}{component}{pad}" for impl_set, component in pairs)
    if not pairs:
        spec = "reference"
    chosen = resolve_use(spec)
    for impl_set, component in pairs:
        assert chosen[component] == impl_set
    named = {component for _, component in pairs}
    assert all(impl_set == "reference" for component, impl_set in chosen.items() if component not in named)
    assert set(chosen.values()) <= set(implementation_sets())
