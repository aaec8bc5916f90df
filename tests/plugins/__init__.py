"""Test plugins: deliberately wrong implementations (`wrong_impls`) and correct ones written differently
(`alt_impls`). Tests import them as `plugins.<module>` and register them in fixtures."""
