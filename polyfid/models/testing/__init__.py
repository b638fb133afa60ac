"""Model tests shipped with polyfid (NequIP's habit): `ModelTestMixin` runs invariance, finite-difference force and
stress, batch = single, cutoff smoothness, periodic extensivity and training-plumbing checks on any registered
backbone, freshly built or after a package save/load round trip. Needs pytest (the `dev` extra)."""
