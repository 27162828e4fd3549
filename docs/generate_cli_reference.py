"""Write docs/usage.md from the click commands, so the reference cannot drift.

Run ``python docs/generate_cli_reference.py``; ``tests/unit/test_docs.py`` fails when
the committed file differs from what this script writes.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

HEADER = """\
# Command-line reference

Generated from the click commands by `python docs/generate_cli_reference.py`; do not edit
by hand.

Options that take several values accept them after one flag, as BIDS Apps and Boutiques
write them (`--participant-label 01 02`), or repeated (`--participant-label 01
--participant-label 02`). Put the three positional arguments first.
"""


COMMANDS = (
    ("bids-neurobolt", "bids_neurobolt.cli", "cli"),
    ("bids-neurobolt-simulate", "bids_neurobolt.simulate.cli", "main"),
    ("bids-neurobolt-fetch", "bids_neurobolt.fetch", "main"),
    ("bids-neurobolt-docker", "bids_neurobolt.docker", "main"),
)


def render() -> str:
    """Return the Markdown reference of every console script."""
    parts = [HEADER]
    for name, module_name, attribute in COMMANDS:
        command = getattr(importlib.import_module(module_name), attribute)
        settings = {"terminal_width": 100, "max_content_width": 100}
        settings.update(command.context_settings)
        with click.Context(command, info_name=name, **settings) as ctx:
            text = command.get_help(ctx)
        parts.append(f"\n## `{name}`\n\n```text\n{text.rstrip()}\n```\n")
    return "".join(parts)


if __name__ == "__main__":
    target = Path(__file__).with_name("usage.md")
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")
