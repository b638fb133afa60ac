"""Pretraining tests run small models too: the models' one-thread fixture applies here as well."""

from tests.models.conftest import _one_torch_thread  # noqa: F401 (an autouse fixture, imported to apply here)
