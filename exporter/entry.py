"""The command's entry point.

``statusline`` runs on every status update of Claude Code, so it is answered before the rest of
the program (structlog, the config, YAML) is imported; every other command goes to
:mod:`exporter.cli`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["statusline"]:
        from exporter.statusline import main as statusline

        return statusline(args[1:])
    from exporter.cli import main as cli

    return cli(argv)
