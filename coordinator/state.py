"""The coordinator's state dir: where one federation keeps everything it needs.

State dir layout (everything one federation needs, nothing any user sent but sums)::

    tls/                   CA and server certificate (federation/tls.py), for SuperLink + BaseStore
    keys/signing_key.pem   Ed25519, signs the base manifest (clients pin signing_key.pem.pub)
    keys/sealing_key.pem   X25519, opens sealed metrics of small cohorts
    federation.json        where the bases are served, their versions: read by the ServerApp
    superlink/             the SuperLink's FLWR_HOME, database and log
    flwr/config.toml       the flwr CLI's connection to our SuperLink (its FLWR_HOME)
    app/pyproject.toml     the Flower app submitted with ``flwr run`` (generated)
    results/run-<id>.json  the cohort's summed statistics and metric table, per run
    dp_budget.json         every DP round's privacy cost (coordinator/dp_budget.py)
    rounds.json            every round a long-running coordinator ran (coordinator/round_log.py)
    operator.json          while running: the Operator service's address and token (0600)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from oppu.shared.atomic import write_text_atomic
from oppu.shared.errors import OppuError


@dataclass(frozen=True)
class FederationInfo:
    """What the ServerApp needs from the coordinator process (``federation.json``)."""

    base_dir: str
    base_version: str
    base_address: str
    base_key_pem: str
    superlink_address: str
    insecure: bool
    bases: dict[str, str] = field(default_factory=dict)
    """Base name (plain, rag-kJ, profile-kJ) -> version of every served base."""

    @classmethod
    def read(cls, state_dir: str | Path) -> FederationInfo:
        path = StateDir(state_dir).info
        if not path.is_file():
            raise OppuError(f"{path} is missing: start the federation with "
                            "`oppu-coordinator start` (it writes this file).")
        data = json.loads(path.read_text())
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class StateDir:
    """Paths inside one coordinator state dir (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.tls = self.root / "tls"
        self.signing_key = self.root / "keys" / "signing_key.pem"
        self.sealing_key = self.root / "keys" / "sealing_key.pem"
        self.info = self.root / "federation.json"
        self.superlink_home = self.root / "superlink"
        self.flwr_home = self.root / "flwr"
        self.app_dir = self.root / "app"
        self.results = self.root / "results"
        self.dp_budget = self.root / "dp_budget.json"

    def result_path(self, run_id: int | str) -> Path:
        return self.results / f"run-{run_id}.json"

    def write_info(self, info: FederationInfo) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.info, json.dumps(asdict(info), indent=2))
