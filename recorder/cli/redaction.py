"""The redaction options shared by the commands that store traffic (``proxy``, ``import``).

Guarantees: each option adds to the defaults of :class:`~recorder.redact.Redactor`;
none can make a default secret (Authorization, organization, project,
cookies, ``api-key``) be stored in clear.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from recorder.redact import Redactor

__all__ = ["redaction_options", "redactor_from"]

F = TypeVar("F", bound=Callable[..., Any])


def redaction_options(func: F) -> F:
    """``--redact-header``, ``--redact-json`` and ``--keep``, passed on as ``redaction``."""
    options = [
        click.option(
            "--redact-header",
            "redact_headers",
            multiple=True,
            metavar="NAME",
            help="Another header to redact (names holding key, token, secret, signature, "
            "password, auth, session, cookie, credential, bearer or cert already are, and "
            "so are values starting with Bearer or Basic or holding an sk- key).",
        ),
        click.option(
            "--redact-json",
            "redact_json_paths",
            multiple=True,
            metavar="PATH",
            help="A request JSON path to redact (a.b, * for any key or item), also where "
            "the response echoes it.",
        ),
        click.option(
            "--keep",
            "keep",
            multiple=True,
            metavar="NAME",
            help="A header or query parameter to store in clear although its name "
            "looks secret (e.g. x-session-id); a value that looks like a credential "
            "is redacted all the same.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def redactor_from(
    redact_headers: tuple[str, ...], redact_json_paths: tuple[str, ...], keep: tuple[str, ...]
) -> Redactor:
    return Redactor.with_extra(redact_headers, redact_json_paths, keep=keep)
