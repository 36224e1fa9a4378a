"""A helper module of an app; importing it works, calling `explode` does not."""


def explode() -> None:
    raise RuntimeError("the helper exploded")
