"""The audit mod: every reply a client sends, appended in full to the user's own log.

``audit-log`` in the node config turns it on, so a user can check exactly what left the
machine (and how far a SecAgg+ round got before a client dropped out).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

from flwr.app import Context, Message

from oppu.shared.federation.keys import NodeConfigKey


def audit_mod(msg: Message, context: Context, call_next) -> Message:
    """Append what this client sends back (content and all) to the node's audit log."""
    target = context.node_config.get(NodeConfigKey.AUDIT_LOG)
    stage = _secagg_stage(msg)  # read first: the mods below may consume the instruction
    try:
        reply = call_next(msg, context)
    except Exception as exc:  # Flower turns it into an error reply carrying this text
        if target:
            _audit(Path(str(target)), msg, context, None, f"{type(exc).__name__}: {exc}",
                   stage)
        raise
    if target:
        _audit(Path(str(target)), msg, context, reply,
               reply.error.reason if reply.has_error() else None, stage)
    return reply


def _audit(path: Path, msg: Message, context: Context, reply: Message | None,
           error: str | None, stage: str | None = None) -> None:
    content = b""
    if reply is not None and reply.has_content():
        from flwr.common.serde import recorddict_to_proto

        content = recorddict_to_proto(reply.content).SerializeToString()
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "run_id": context.run_id, "message_type": msg.metadata.message_type,
             "group_id": msg.metadata.group_id, "stage": stage,
             "records": sorted(reply.content.keys()) if content else [],
             "error": error, "content_b64": base64.b64encode(content).decode()}
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def _secagg_stage(msg: Message) -> str | None:
    """The SecAgg+ stage this reply answers (setup, share_keys, ...); None outside SecAgg+.

    Lets a user (or a test) see how far a round got: e.g. that keys were shared before a
    client dropped out.
    """
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

    if not msg.has_content() or RECORD_KEY_CONFIGS not in msg.content.config_records:
        return None
    stage = msg.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE)
    return str(stage) if stage is not None else None
