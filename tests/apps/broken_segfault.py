"""An app module that crashes the interpreter while it is imported, as a broken
C extension would: no exception, no StartupFailed message, only a dead worker."""

import ctypes


def load_native_library() -> None:
    ctypes.string_at(0)


load_native_library()

app = None
