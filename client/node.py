"""The client's private node settings (``--node-config``) and the round's base, fetched."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context

from oppu.shared.federation.keys import NodeConfigKey
from oppu.shared.federation.round_config import RoundConfig


@dataclass(frozen=True)
class NodeSettings:
    """The client's private settings, from ``--node-config`` (never sent anywhere)."""

    history_path: Path
    data_dir: Path
    ca_path: Path | None
    insecure: bool
    base_address: str
    coordinator_key: Path | None
    base_cache: Path | None
    audit_log: Path | None
    device: str

    @classmethod
    def from_context(cls, context: Context) -> NodeSettings:
        from oppu.shared.paths import user_dir

        node = context.node_config

        def path(key: str) -> Path | None:
            value = str(node.get(key, "") or "")
            return Path(value).expanduser() if value else None

        history = path(NodeConfigKey.HISTORY_PATH)
        if history is None:
            raise ValueError(f"This SuperNode has no {NodeConfigKey.HISTORY_PATH} in its node "
                             "config; start it with `oppu-client join --history FILE`.")
        return cls(history_path=history, data_dir=path(NodeConfigKey.DATA_DIR) or user_dir(),
                   ca_path=path(NodeConfigKey.CA_PATH),
                   insecure=bool(node.get(NodeConfigKey.INSECURE)),
                   base_address=str(node.get(NodeConfigKey.BASE_ADDRESS, "") or ""),
                   coordinator_key=path(NodeConfigKey.COORDINATOR_KEY),
                   base_cache=path(NodeConfigKey.BASE_CACHE),
                   audit_log=path(NodeConfigKey.AUDIT_LOG),
                   device=str(node.get(NodeConfigKey.DEVICE, "auto")))


def fetch_round_base(round_cfg: RoundConfig, node: NodeSettings, version: str = "") -> Path:
    """One of the round's bases (default: ``base_version``), from the local cache or the
    coordinator's BaseStore, verified."""
    from oppu.client.base_fetch import fetch_base
    from oppu.shared.errors import OppuError

    address = node.base_address or round_cfg.base_address
    key = node.coordinator_key if node.coordinator_key is not None else round_cfg.base_key
    if not address or not key:
        raise OppuError("The round names no base address or coordinator key.")
    root_cert = node.ca_path.read_bytes() if node.ca_path is not None else None
    wanted = version or round_cfg.base_version
    result = fetch_base(address, coordinator_public_key=key, cache_root=node.base_cache,
                        root_cert=None if node.insecure else root_cert,
                        insecure=node.insecure, progress=False, version=version)
    if wanted and result.version != wanted:
        raise OppuError(f"The coordinator serves base {result.version[:12]} but the round "
                        f"asks for {wanted[:12]}.")
    return result.path
