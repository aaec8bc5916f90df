"""Lets the tests run from a source checkout too: pytest puts this folder on sys.path (so `nanogpt_variants` imports
without installing), and the plugin is registered by hand when no installed entry point registered it."""

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def variants_registered() -> Iterator[None]:
    from nanogpt_core.model.registry import load_plugins, pm, register_plugin, unregister_plugin

    import nanogpt_variants

    load_plugins()
    ours = not pm.is_registered(nanogpt_variants)
    if ours:
        register_plugin(nanogpt_variants, name="variants")
    yield
    if ours:
        unregister_plugin(nanogpt_variants)
