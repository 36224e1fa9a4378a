"""An app whose import fails inside the standard library (json), called from here."""

import json

CONFIG = json.loads("{not json")

app = None
