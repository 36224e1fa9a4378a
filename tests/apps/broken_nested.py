"""An app whose import fails inside a helper module it calls."""

from tests.apps.broken_helper import explode

explode()

app = None
