"""One coordinator: BaseStore, SuperLink and rounds, started and stopped as one object.

``oppu-coordinator start``, the simulations and the tests all run a federation through
``Coordinator``; the pieces it starts live in ``base_server``, ``fleet_proxy``,
``superlink`` and ``enrollment``, and what it writes in the state dir (``state``).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from oppu.coordinator.enrollment import enroll_key, sync_registrations
from oppu.coordinator.results import CohortResult
from oppu.coordinator.state import FederationInfo, StateDir
from oppu.coordinator.superlink import (
    CONNECTION,
    flwr_cli,
    start_superlink,
    submit_run,
    wait_for_result,
    write_app,
    write_flwr_connection,
)
from oppu.shared.errors import OppuError
from oppu.shared.federation.keys import DEFAULT_ROUND_TIMEOUT
from oppu.shared.federation.processes import free_port, stop
from oppu.shared.llm.base_artifact import BaseManifest, read_manifest
from oppu.shared.personal.bases import PLAIN, base_of_manifest, parse_base_name

DEFAULT_SUPERLINK_PORT = 9092
DEFAULT_BASE_PORT = 9095


def served_bases(manifests: Sequence[BaseManifest]) -> dict[str, str]:
    """Base name (plain, rag-kJ, profile-kJ) -> version of each served base; two bases of
    one prompt family are refused (a round could not say which one a variant runs on)."""
    bases: dict[str, str] = {}
    for manifest in manifests:
        name = base_of_manifest(manifest.variant, manifest.training).name
        if len(manifests) > 1:  # one base serves every variant, whatever its manifest says
            try:
                parse_base_name(name)
            except ValueError as exc:
                raise OppuError(f"Base {manifest.version[:12]} (variant {manifest.variant!r}, "
                                f"k {manifest.training.get('k')}): {exc} Adapt it with "
                                "`oppu-coordinator adapt --variant plain|rag|profile`.") from None
        if bases.get(name, manifest.version) != manifest.version:
            raise OppuError(f"Two {name} bases were given ({bases[name][:12]} and "
                            f"{manifest.version[:12]}); serve one per prompt family.")
        bases[name] = manifest.version
    return bases


class Coordinator:
    """Everything ``oppu-coordinator start`` runs, as one object (tests use it directly).

    ``start()`` prepares keys and certificates in the state dir, serves the base over the
    BaseStore (TLS unless ``insecure``; ``base_dir`` is the default base, ``extra_bases`` the
    other prompt families' a suite runs on), writes ``federation.json`` and starts the SuperLink
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
                 fleet_proxy: bool | None = None, extra_bases: Sequence[str | Path] = ()):
        self.state = StateDir(state_dir)
        self.base_dir = Path(base_dir).expanduser().resolve()
        self.extra_bases = tuple(Path(b).expanduser().resolve() for b in extra_bases)
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
        self._current: list[BaseManifest] = []
        self._base_key_pem = ""
        """The served base of each prompt family, the default first (what rounds name)."""

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
                                           interceptors=self._interceptors,
                                           extra=self.extra_bases).start()
        self._current = list(self.base_server.manifests)
        self._base_key_pem = public_key_pem(signing.public_key()).decode()
        self._write_info()
        if self.fleet_proxy:
            from oppu.coordinator.fleet_proxy import FleetProxy

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

    def _write_info(self) -> None:
        """``federation.json`` for the bases served now (the ServerApp reads it each round)."""
        self.state.write_info(FederationInfo(
            base_dir=str(self.base_dir), base_version=self._current[0].version,
            base_address=f"{self.public_host}:{self.base_server.port}",
            base_key_pem=self._base_key_pem, superlink_address=self.client_address,
            insecure=self.insecure, bases=served_bases(self._current)))

    @property
    def bases(self) -> dict[str, str]:
        """Base name -> version of each base the next round runs on."""
        return served_bases(self._current)

    def publish(self, base_dir: str | Path) -> tuple[str, str]:
        """Serve a new base version from the next round on: it replaces the served base of its
        prompt family (or joins as a new family); (name, version). The BaseStore verifies the
        artifact before anything changes; clients fetch and verify it at their next round."""
        if self.base_server is None:
            raise OppuError("Start the coordinator before publishing a base.")
        directory = Path(base_dir).expanduser().resolve()
        manifest = read_manifest(directory)
        if manifest is None:
            raise OppuError(f"{directory} is not a base artifact (no manifest): make one with "
                            "`oppu-coordinator adapt`.")
        name = base_of_manifest(manifest.variant, manifest.training).name
        names = [base_of_manifest(m.variant, m.training).name for m in self._current]
        if name in names:
            at: int | None = names.index(name)
        else:  # a lone base serves every variant: a new plain one takes its place
            at = 0 if len(names) == 1 and name == PLAIN else None
        current = [*self._current, manifest] if at is None else [
            manifest if i == at else m for i, m in enumerate(self._current)]
        served_bases(current)  # two bases of one family, or an unnamed one: refused
        self.base_server.add(directory, default=at == 0)  # re-hashed: a damaged one refused
        self._current = current
        if at == 0:
            self.base_dir = directory
        self._write_info()
        return name, manifest.version

    def nodes(self) -> list[dict]:
        """Every node the SuperLink knows, with Flower's status (``online`` while it
        heartbeats); none before ``start``."""
        from oppu.coordinator.enrollment import node_statuses

        return [] if self.superlink is None else node_statuses(self.state)

    def online_nodes(self) -> int:
        return sum(node.get("status") == "online" for node in self.nodes())

    def enroll(self, public_key: str | Path | bytes, *, name: str | None = None) -> str:
        """Accept a SuperNode key (and register it now if the SuperLink runs); its name."""
        name, _ = enroll_key(self.state, public_key, name=name)
        if self.superlink is not None and not self.simulation:
            sync_registrations(self.state)
        return name

    def run_round(self, run_config: Mapping[str, object], *, timeout: float = DEFAULT_ROUND_TIMEOUT,
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
                flwr_cli(self.state, "stop", self._active_run, CONNECTION, timeout=20)
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
