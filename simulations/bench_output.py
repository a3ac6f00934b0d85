"""How a benchmark hands over its result: a JSON file for tools, one tagged line for logs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oppu.shared.atomic import write_text_atomic


def publish_result(result: Mapping[str, Any], out: Path, prefix: str) -> None:
    """Write ``result`` to ``out`` atomically and print it on one line starting with ``prefix``."""
    write_text_atomic(out, json.dumps(result, indent=2, sort_keys=True))
    print(prefix + json.dumps(result, sort_keys=True), flush=True)
