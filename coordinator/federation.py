"""The coordinator's side of a federation: state dir, SuperLink process, run submission, results.

State dir layout (everything one federation needs, nothing any user sent but sums)::

    tls/                   CA and server certificate (shared/tls.py), for SuperLink + BaseStore
    keys/signing_key.pem   Ed25519, signs the base manifest (clients pin signing_key.pem.pub)
    keys/sealing_key.pem   X25519, opens sealed metrics of small cohorts
    federation.json        where the base is served, its version: read by the ServerApp
    superlink/             the SuperLink's FLWR_HOME, database and log
    flwr/config.toml       the flwr CLI's connection to our SuperLink (its FLWR_HOME)
    app/pyproject.toml     the Flower app submitted with ``flwr run`` (generated)
    results/run-<id>.json  the cohort's summed statistics and metric table, per run
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from oppu.shared.atomic import write_text_atomic
from oppu.shared.errors import OppuError
from oppu.shared.federation import RunKey, flower_env, launch, stop, wait_for_port
from oppu.shared.federation.tls import CA_CERT, SERVER_CERT, SERVER_KEY

log = logging.getLogger(__name__)

CONNECTION = "oppu"
"""Name of our SuperLink in the flwr CLI's config.toml."""
DEFAULT_SUPERLINK_PORT = 9092
DEFAULT_BASE_PORT = 9095
APP_NAME = "oppu-federation"
SERVERAPP = "oppu.coordinator.server_app:app"
CLIENTAPP = "oppu.client.client_app:app"


@dataclass(frozen=True)
class FederationInfo:
    """What the ServerApp needs from the coordinator process (``federation.json``)."""

    base_dir: str
    base_version: str
    base_address: str
    base_key_pem: str
    superlink_address: str
    insecure: bool

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

    def result_path(self, run_id: int | str) -> Path:
        return self.results / f"run-{run_id}.json"

    def write_info(self, info: FederationInfo) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.info, json.dumps(asdict(info), indent=2))


# ---- results -------------------------------------------------------------------------------
@dataclass
class CohortResult:
    """What a round produced: only sums over the cohort, never one client's numbers."""

    run_id: str
    round: int
    task: str
    aggregation: str
    clients: int
    stat_names: list[str]
    sums: list[float]
    metrics: dict[str, float]
    rejected: int = 0
    """Replies that came back but were refused (unsealable, impossible statistics)."""
    failures: int = 0
    """Clients asked that never contributed: an error reply, no reply within the timeout, or
    a dropout mid-protocol (SecAgg+)."""
    base_version: str = ""
    seconds: float = 0.0
    config: dict = field(default_factory=dict)
    variants: dict[str, dict[str, float]] = field(default_factory=dict)
    """With a suite: each variant's metrics (the cohort's Table 1); ``metrics`` is flat."""
    finished_at: str = field(
        default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    asked: int = 0
    """Clients the round was sent to (0: not recorded, results written before it existed)."""

    def sum_stats(self) -> dict[str, float]:
        return dict(zip(self.stat_names, self.sums, strict=True))

    def to_json(self) -> str:
        from oppu.shared.metrics import json_safe

        return json.dumps(json_safe(asdict(self)), indent=2)

    @classmethod
    def from_json(cls, text: str) -> CohortResult:
        data = json.loads(text)
        data["metrics"] = _none_to_nan(data["metrics"])
        data["variants"] = {v: _none_to_nan(m) for v, m in data.get("variants", {}).items()}
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _none_to_nan(values: Mapping[str, float | None]) -> dict[str, float]:
    return {k: (math.nan if v is None else v) for k, v in values.items()}


def write_result(state: StateDir, result: CohortResult) -> Path:
    path = state.result_path(result.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, result.to_json())
    return path


def read_result(state: StateDir, run_id: int | str) -> CohortResult | None:
    path = state.result_path(run_id)
    return CohortResult.from_json(path.read_text()) if path.is_file() else None


def format_table(result: CohortResult) -> str:
    """The cohort's metric table as plain text (what ``start`` prints and the ServerApp logs)."""
    of = f" of {result.asked}" if result.asked > result.clients else ""
    lines = [f"Cohort metrics, run {result.run_id} round {result.round} ({result.task}): "
             f"{result.clients}{of} clients aggregated with {result.aggregation}"
             + (f", {result.rejected} rejected" if result.rejected else "")
             + (f", {result.failures} failed or dropped out" if result.failures else "")]
    if result.variants:
        return "\n".join(lines + _variant_rows(result.variants))
    width = max([len(k) for k in result.metrics] + [6])
    lines.append(f"  {'metric':<{width}}  value")
    for name, value in result.metrics.items():
        lines.append(f"  {name:<{width}}  {_shown(name, value)}")
    return "\n".join(lines)


def _shown(name: str, value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.0f}" if name == "count" else f"{value:.4f}"


def _variant_rows(variants: Mapping[str, Mapping[str, float]]) -> list[str]:
    """One line per variant, one column per metric (``count`` last)."""
    names = [m for m in next(iter(variants.values())) if m != "count"] + ["count"]
    width = max([len(v) for v in variants] + [7])
    rows = [f"  {'variant':<{width}}  " + "  ".join(f"{n:>8}" for n in names)]
    for variant, values in variants.items():
        rows.append(f"  {variant:<{width}}  "
                    + "  ".join(f"{_shown(n, values.get(n, math.nan)):>8}" for n in names))
    return rows


# ---- processes -----------------------------------------------------------------------------
def superlink_command(state: StateDir, *, host: str, port: int, insecure: bool,
                      simulation: bool = False, node_auth: bool = False,
                      fab_gate: bool = False) -> list[str]:
    """``flower-superlink``; with ``simulation`` it runs virtual SuperNodes on Ray itself.

    ``node_auth``: only SuperNodes whose keys were registered (``enroll``) may connect
    (Flower's ``--enable-supernode-auth``, which needs TLS). ``fab_gate``: start it through
    oppu's FAB gate, so its ServerApp processes run only FABs signed by this state dir's key.
    """
    cmd = ["flower-superlink", "--disable-runtime-dependency-installation",
           "--host", host, "--port", str(port),
           "--database", str(state.superlink_home / "state.db")]
    if simulation:
        cmd.append("--simulation")
    if node_auth:
        if insecure or simulation:
            raise OppuError("SuperNode authentication needs TLS and real SuperNodes: drop "
                            "--insecure (or turn node authentication off).")
        cmd.append("--enable-supernode-auth")
    if insecure:
        cmd.append("--insecure")
    else:
        cmd += ["--ssl-certfile", str(state.tls / SERVER_CERT),
                "--ssl-keyfile", str(state.tls / SERVER_KEY),
                "--ssl-ca-certfile", str(state.tls / CA_CERT)]
    if not fab_gate:
        return cmd
    from oppu.shared.federation.fab_trust import launch_command
    from oppu.shared.federation.signing import public_key_path

    return launch_command(cmd[0], cmd[1:], trusted_key=public_key_path(state.signing_key))


def start_superlink(state: StateDir, *, host: str, port: int, insecure: bool,
                    simulation: bool = False, timeout: float = 60.0, node_auth: bool = False,
                    fab_gate: bool = False) -> subprocess.Popen:
    """Start ``flower-superlink`` (own process group) and wait until its port answers."""
    state.superlink_home.mkdir(parents=True, exist_ok=True)
    probe = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    with contextlib.suppress(OSError), socket.create_connection((probe, port), timeout=1.0):
        raise OppuError(f"Port {port} is already in use on {probe}; pick another with --port.")
    proc = launch(superlink_command(state, host=host, port=port, insecure=insecure,
                                    simulation=simulation, node_auth=node_auth,
                                    fab_gate=fab_gate),
                  log_path=state.superlink_home / "superlink.log",
                  env=flower_env(state.superlink_home))
    try:
        wait_for_port(probe, port, timeout,
                      proc=proc, what="SuperLink",
                      log_path=state.superlink_home / "superlink.log")
    except BaseException:
        stop(proc)
        raise
    return proc


def write_flwr_connection(state: StateDir, address: str, *, insecure: bool) -> Path:
    """The flwr CLI's config.toml, pointing ``CONNECTION`` at our SuperLink."""
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
             f'address = "{address}"']
    if insecure:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = '{state.tls / CA_CERT}'")
    path = state.flwr_home / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string is a JSON string for our values


FAB_VALIDITY_S = 86400.0
"""How long a submitted FAB stays runnable beyond the round's own timeout (replay bound)."""


def write_app(state: StateDir, run_config: Mapping[str, object]) -> Path:
    """A minimal Flower app (just its pyproject.toml) naming oppu's two apps.

    Generated rather than taken from a source checkout, so an installed oppu can submit runs
    and the FAB stays a few hundred bytes (the code itself is the installed package). It
    carries an expiry and an empty signature slot, filled at submission (``submit_run``).
    """
    from importlib.metadata import PackageNotFoundError, version

    from oppu.shared.federation.fab_trust import FAB_EXPIRES_KEY, FAB_SIGNATURE_KEY

    try:
        oppu_version = version("oppu")
    except PackageNotFoundError:
        oppu_version = "0.0.0"
    lines = ["[project]", f'name = "{APP_NAME}"', f'version = "{oppu_version}"',
             'description = "oppu federation round: private adapters, cohort metrics"',
             'license = "Apache-2.0"', "", "[tool.flwr.app]", 'publisher = "oppu"', "",
             "[tool.flwr.app.components]", f'serverapp = "{SERVERAPP}"',
             f'clientapp = "{CLIENTAPP}"', "", "[tool.flwr.app.config]"]
    timeout = run_config.get(RunKey.TIMEOUT, 0.0)
    expires = time.time() + FAB_VALIDITY_S + (float(timeout) if isinstance(
        timeout, (int, float)) else 0.0)
    config = {RunKey.STATE_DIR: str(state.root), **run_config,
              FAB_EXPIRES_KEY: int(expires), FAB_SIGNATURE_KEY: ""}
    lines += [f'"{key}" = {_toml_value(value)}' for key, value in config.items()]
    path = state.app_dir / "pyproject.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "\n".join(lines) + "\n")
    return state.app_dir


def _flwr(state: StateDir, *args: str, timeout: float = 120.0) -> str:
    proc = subprocess.run(["flwr", *args], env=flower_env(state.flwr_home), text=True,
                          capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise OppuError(f"`flwr {' '.join(args)}` failed ({proc.returncode}):\n"
                        f"{(proc.stdout + proc.stderr)[-2000:]}")
    return proc.stdout


def _json_tail(text: str) -> dict:
    """The JSON object flwr prints with --format json (after any warnings)."""
    start = text.find("{")
    if start < 0:
        raise OppuError(f"flwr printed no JSON: {text[-500:]}")
    return json.loads(text[start:])


def fab_signature_override(state: StateDir, app_dir: Path) -> list[str]:
    """``--run-config`` arguments carrying the signature over the FAB ``flwr run`` will send.

    Empty for an app without the signature slot or a state dir without a signing key.
    """
    import tomllib

    from oppu.shared.federation.fab_trust import FAB_SIGNATURE_KEY, build_fab, sign_fab
    from oppu.shared.federation.signing import load_signing_key

    config = tomllib.loads((app_dir / "pyproject.toml").read_text())
    if FAB_SIGNATURE_KEY not in config.get("tool", {}).get("flwr", {}).get("app", {}).get(
            "config", {}) or not state.signing_key.is_file():
        return []
    signature = sign_fab(build_fab(app_dir), load_signing_key(state.signing_key))
    return ["--run-config", f'{FAB_SIGNATURE_KEY}="{signature}"']


def submit_run(state: StateDir, app_dir: Path | None = None,
               federation_config: Mapping[str, object] | None = None) -> str:
    """``flwr run <app> oppu``, the FAB signed with the state dir's key; returns the run id.

    ``federation_config`` goes to ``--federation-config`` (a simulation SuperLink's
    ``num-supernodes``, ``client-resources-num-cpus``, ``client-resources-num-gpus``).
    """
    app_dir = app_dir or state.app_dir
    extra = fab_signature_override(state, app_dir)
    if federation_config:
        extra += ["--federation-config",
                  " ".join(f"{k}={_toml_value(v)}" for k, v in federation_config.items())]
    out = _json_tail(_flwr(state, "run", str(app_dir), CONNECTION, *extra, "--format", "json"))
    if not out.get("success") or not out.get("run-id"):
        raise OppuError(f"The SuperLink did not start the run: {out}")
    return str(out["run-id"])


def run_status(state: StateDir, run_id: str) -> str:
    out = _json_tail(_flwr(state, "ls", CONNECTION, "--run-id", run_id, "--format", "json"))
    runs = out.get("runs") or []
    return str(runs[0].get("status", "unknown")) if runs else "unknown"


def run_log(state: StateDir, run_id: str) -> str:
    try:
        return _flwr(state, "log", run_id, CONNECTION, "--show", timeout=60)
    except (OppuError, subprocess.TimeoutExpired) as exc:
        return f"(no log: {exc})"


def wait_for_result(state: StateDir, run_id: str, *, timeout: float,
                    watch: Sequence[subprocess.Popen] = (), poll: float = 2.0,
                    on_poll: Callable[[], None] | None = None) -> CohortResult:
    """Block until the ServerApp wrote the run's result, the run failed, or ``timeout``.

    ``on_poll`` runs between checks (e.g. to advance a progress bar).
    """
    deadline = time.monotonic() + timeout
    checks = 0
    while time.monotonic() < deadline:
        if on_poll is not None:
            on_poll()
        result = read_result(state, run_id)
        if result is not None:
            return result
        for proc in watch:
            if proc.poll() is not None:
                raise OppuError(f"The SuperLink exited ({proc.returncode}) during the run; "
                                f"see {state.superlink_home / 'superlink.log'}.")
        checks += 1
        if checks % 5 == 0:
            status = run_status(state, run_id)
            if status.startswith("finished"):
                result = read_result(state, run_id)
                if result is not None:
                    return result
                raise OppuError(f"Run {run_id} ended ({status}) without a result. Its log:\n"
                                f"{run_log(state, run_id)[-4000:]}")
        time.sleep(poll)
    raise OppuError(f"Run {run_id} did not finish within {timeout:.0f} s.")


# ---- enrolled SuperNode keys (node authentication) -----------------------------------------
ENROLLED_DIR = "enrolled"
"""``keys/enrolled/<name>.pub``: the SuperNode public keys this coordinator accepts."""


def enrolled_dir(state: StateDir) -> Path:
    return state.root / "keys" / ENROLLED_DIR


def enrolled_keys(state: StateDir) -> dict[str, bytes]:
    """Name -> OpenSSH public key line, for every enrolled SuperNode key."""
    from oppu.shared.federation.node_auth import PUBLIC_SUFFIX, read_public_key

    folder = enrolled_dir(state)
    if not folder.is_dir():
        return {}
    return {p.name.removesuffix(PUBLIC_SUFFIX): read_public_key(p)
            for p in sorted(folder.glob(f"*{PUBLIC_SUFFIX}"))}


def enroll_key(state: StateDir, public_key: str | Path | bytes, *,
               name: str | None = None) -> tuple[str, str]:
    """Accept a SuperNode's public key: returns (name, fingerprint). Idempotent per key."""
    from oppu.shared.federation.node_auth import (
        PUBLIC_SUFFIX,
        check_node_name,
        default_node_name,
        fingerprint,
        read_public_key,
    )

    line = read_public_key(public_key)
    name = check_node_name(name or default_node_name(line))
    for other, other_line in enrolled_keys(state).items():
        if other_line == line and other != name:
            raise OppuError(f"This key is already enrolled as {other!r}.")
        if other == name and other_line != line:
            raise OppuError(f"{name!r} is enrolled with another key; remove it first "
                            f"(`oppu-coordinator enroll --remove {name}`).")
    path = enrolled_dir(state) / f"{name}{PUBLIC_SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, f"{line.decode()} {name}\n")
    return name, fingerprint(line)


def remove_key(state: StateDir, name: str) -> bool:
    """Forget an enrolled key (the SuperLink drops it at the next ``sync_registrations``)."""
    from oppu.shared.federation.node_auth import PUBLIC_SUFFIX, check_node_name

    path = enrolled_dir(state) / f"{check_node_name(name)}{PUBLIC_SUFFIX}"
    if not path.is_file():
        return False
    path.unlink()
    return True


def sync_registrations(state: StateDir) -> dict[str, int]:
    """Make the running SuperLink's registered keys equal the enrolled ones.

    Registers each enrolled key it does not hold and unregisters named nodes no longer
    enrolled (``coordinator/node_registry.py``, one Control API connection for all keys);
    returns {name: node id}. A key revoked earlier cannot come back in that database.
    """
    import sys

    enrolled = {name: line.decode() for name, line in enrolled_keys(state).items()}
    proc = subprocess.run([sys.executable, "-m", "oppu.coordinator.node_registry", CONNECTION],
                          input=json.dumps(enrolled), env=flower_env(state.flwr_home),
                          text=True, capture_output=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise OppuError(f"Could not update the SuperLink's SuperNode keys:\n"
                        f"{(proc.stdout + proc.stderr)[-2000:]}")
    result = _json_tail(proc.stdout)
    if result["removed"]:
        log.info("Unregistered SuperNodes no longer enrolled: %s", ", ".join(result["removed"]))
    if result["revoked"]:
        names = ", ".join(result["revoked"])
        raise OppuError(f"Enrolled key(s) {names} were revoked in this SuperLink's database "
                        "and cannot be registered again: remove them (`oppu-coordinator "
                        "enroll --remove NAME`) and have the client make a new key "
                        "(`oppu-client keygen --force`).")
    return {name: int(node_id) for name, node_id in result["nodes"].items()}


def superlink_running(state: StateDir) -> bool:
    """Whether the SuperLink this state dir's flwr connection names answers (for ``enroll``)."""
    import tomllib

    path = state.flwr_home / "config.toml"
    if not path.is_file():
        return False
    address = tomllib.loads(path.read_text())["superlink"][CONNECTION]["address"]
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
            return True
    except OSError:
        return False


# ---- one coordinator: BaseStore + SuperLink + runs -----------------------------------------
class Coordinator:
    """Everything ``oppu-coordinator start`` runs, as one object (tests use it directly).

    ``start()`` prepares keys and certificates in the state dir, serves the base over the
    BaseStore (TLS unless ``insecure``), writes ``federation.json`` and starts the SuperLink
    (registering the enrolled SuperNode keys); ``run_round()`` submits the signed Flower app
    and waits for the cohort's result; ``stop()`` stops whatever was started. Use it as a
    context manager so Ctrl-C stops everything.

    ``node_auth`` (default: on with TLS and real SuperNodes) admits only enrolled SuperNode
    keys (``enroll``); ``fab_gate`` (default: on unless ``simulation``) lets the SuperLink
    run only FABs this coordinator signed; ``fleet_proxy`` (default: on unless
    ``simulation``) keeps the SuperLink on loopback and exposes only its Fleet API on
    ``host:port`` (``coordinator/fleet_proxy.py``: Flower's Control API has no authentication).
    """

    def __init__(self, state_dir: str | Path, base_dir: str | Path, *, host: str = "0.0.0.0",
                 public_host: str = "localhost", port: int = DEFAULT_SUPERLINK_PORT,
                 base_port: int = DEFAULT_BASE_PORT, insecure: bool = False,
                 base_interceptors: Sequence = (), simulation: bool = False,
                 node_auth: bool | None = None, fab_gate: bool | None = None,
                 fleet_proxy: bool | None = None):
        self.state = StateDir(state_dir)
        self.base_dir = Path(base_dir).expanduser().resolve()
        self.host, self.public_host = host, public_host
        self.port, self.base_port = port, base_port
        self.insecure = insecure
        self.simulation = simulation
        self.node_auth = (not insecure and not simulation) if node_auth is None else node_auth
        if self.node_auth and (insecure or simulation):
            raise OppuError("SuperNode authentication needs TLS and real SuperNodes: drop "
                            "--insecure, or start with --no-node-auth.")
        self.fab_gate = (not simulation) if fab_gate is None else fab_gate
        self.fleet_proxy = (not simulation) if fleet_proxy is None else fleet_proxy
        self._superlink_port = port
        self.proxy = None
        self._interceptors = tuple(base_interceptors)
        self.base_server = None
        self.superlink: subprocess.Popen | None = None
        self._active_run: str | None = None

    @property
    def superlink_address(self) -> str:
        """Where the operator's ``flwr`` CLI and the ServerApp reach the SuperLink."""
        if self.fleet_proxy:
            return f"127.0.0.1:{self._superlink_port}"
        local = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"{local}:{self.port}"

    @property
    def client_address(self) -> str:
        """What clients pass to ``oppu-client join --coordinator``."""
        return f"{self.public_host}:{self.port}"

    def start(self) -> Coordinator:
        from oppu.coordinator.base_server import BaseStoreServer
        from oppu.shared.federation.sealing import load_or_create_sealing_key
        from oppu.shared.federation.signing import load_or_create_signing_key, public_key_pem
        from oppu.shared.federation.tls import ensure_tls_material

        tls = None if self.insecure else ensure_tls_material(self.state.tls,
                                                             hosts=[self.public_host])
        signing = load_or_create_signing_key(self.state.signing_key)
        load_or_create_sealing_key(self.state.sealing_key)
        self.base_server = BaseStoreServer(self.base_dir, signing, host=self.host,
                                           port=self.base_port, tls=tls,
                                           interceptors=self._interceptors).start()
        self.state.write_info(FederationInfo(
            base_dir=str(self.base_dir), base_version=self.base_server.manifest.version,
            base_address=f"{self.public_host}:{self.base_server.port}",
            base_key_pem=public_key_pem(signing.public_key()).decode(),
            superlink_address=self.client_address, insecure=self.insecure))
        if self.fleet_proxy:
            from oppu.coordinator.fleet_proxy import FleetProxy
            from oppu.shared.federation import free_port

            self._superlink_port = free_port()
            self.proxy = FleetProxy(host=self.host, port=self.port,
                                    upstream=self.superlink_address,
                                    tls_dir=None if self.insecure else self.state.tls).start()
        write_flwr_connection(self.state, self.superlink_address, insecure=self.insecure)
        self.superlink = start_superlink(
            self.state, host="127.0.0.1" if self.fleet_proxy else self.host,
            port=self._superlink_port, insecure=self.insecure, simulation=self.simulation,
            node_auth=self.node_auth, fab_gate=self.fab_gate)
        if self.node_auth:
            sync_registrations(self.state)
        return self

    def enroll(self, public_key: str | Path | bytes, *, name: str | None = None) -> str:
        """Accept a SuperNode key (and register it now if the SuperLink runs); its name."""
        name, _ = enroll_key(self.state, public_key, name=name)
        if self.superlink is not None and not self.simulation:
            try:
                sync_registrations(self.state)
            except OppuError:
                remove_key(self.state, name)
                raise
        return name

    def run_round(self, run_config: Mapping[str, object], *, timeout: float = 3600.0,
                  on_submit=None, federation_config: Mapping[str, object] | None = None,
                  on_poll: Callable[[], None] | None = None) -> CohortResult:
        """Submit one round with ``run_config`` (round fields + ``RunKey``s) and wait."""
        if self.superlink is None:
            raise OppuError("Start the coordinator before running a round.")
        run_id = submit_run(self.state, write_app(self.state, run_config), federation_config)
        self._active_run = run_id
        if on_submit is not None:
            on_submit(run_id)
        result = wait_for_result(self.state, run_id, timeout=timeout, watch=[self.superlink],
                                 on_poll=on_poll)
        self._active_run = None
        return result

    def stop(self) -> None:
        if self._active_run is not None and self.superlink is not None:
            # Interrupted mid-run: end it in the SuperLink's database too.
            with contextlib.suppress(OppuError, subprocess.TimeoutExpired):
                _flwr(self.state, "stop", self._active_run, CONNECTION, timeout=20)
            self._active_run = None
        if self.superlink is not None:
            stop(self.superlink)
            self.superlink = None
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        if self.base_server is not None:
            self.base_server.stop()
            self.base_server = None

    def __enter__(self) -> Coordinator:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
