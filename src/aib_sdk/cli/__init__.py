"""The ``aib`` command line: a thin face over the SDK (``validate``, ``build``, ``schema``, ``plugins``, ``runs``,
``show``, ``delete``, ``gc``, ``cache``, ``worker``, ``cancel``, plus the subcommands providers add through the
``aib_add_cli_commands`` hook).

``main(argv)`` returns the exit code and never shows a traceback (set ``AIB_DEBUG=1`` to see one); ``console()``
is the ``aib`` console script. The parser and dispatch live in :mod:`aib_sdk.cli.app`, one module per command
group beside it; heavy modules are imported inside the commands so that ``aib --help`` stays fast.
"""

from __future__ import annotations

from aib_sdk.cli.app import console, main

__all__ = ["console", "main"]
