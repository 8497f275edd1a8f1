"""Registration only: the classes are imported when the hooks are called."""

from typing import Any

from aib_sdk import hookimpl


@hookimpl
def aib_register_customizers() -> list[Any]:
    from aib_provider_hello.provider import Motd

    return [Motd]


@hookimpl
def aib_register_distributors() -> list[Any]:
    from aib_provider_hello.provider import Folder

    return [Folder]
