"""A SuperNode's ``--node-config`` string, built from ``NodeConfigKey`` values.

Flower parses the string as TOML; a client's paths go in as literal strings so no escape
sequence in a path is ever interpreted, and a value that cannot be one is refused.
"""

from __future__ import annotations

from collections.abc import Mapping


def node_config_arg(values: Mapping[str, str | bool | int | float]) -> str:
    """A ``--node-config`` string; strings become TOML literal strings (no escapes)."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            parts.append(f"{key}={'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            parts.append(f"{key}={value}")
        else:
            text = str(value)
            if "'" in text or "\n" in text:
                raise ValueError(f"{key} may not contain a single quote or newline: {text!r}")
            parts.append(f"{key}='{text}'")
    return " ".join(parts)
