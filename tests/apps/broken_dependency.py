"""An app that imports a dependency that is not installed."""

import poolwarden_test_dependency_that_is_not_installed  # noqa: F401

app = None
