"""An app module whose import ends the process without a word (as a C library
calling exit(), or a crash during import, would)."""

import os

os._exit(7)
