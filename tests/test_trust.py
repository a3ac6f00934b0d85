"""Trust (SECURITY.md): who may connect, what code runs, what never reaches a log.

- Node authentication: the SuperLink admits only SuperNodes whose keys were enrolled; an
  unenrolled key, or none, is turned away by Flower itself (``--enable-supernode-auth``).
- App bundles (FABs): oppu's gate (``oppu.shared.federation.fab_trust``) sits inside the Flower
  processes that would run a FAB. The coordinator refuses runs it did not sign (anyone who
  reaches the SuperLink's port can submit one: Flower 1.42's Control API has no
  authentication); a SuperNode refuses a FAB with code, unsigned, or signed by another key.
- Key files are owner-only and refused otherwise; no private key or passphrase is logged.

The end-to-end parts start a real SuperLink over TLS on loopback; a hostile FAB is a tiny
Flower app whose ServerApp/ClientApp would drop a marker file if they ever ran.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_federation import (
    FAST_ROUND,
    FederationRun,
    base_artifact,
    make_history,
    sealed_federation,
)

from oppu.client.cli.join import auth_refusal, supernode_command
from oppu.coordinator.coordinator import Coordinator
from oppu.coordinator.enrollment import enroll_key, enrolled_keys, remove_key
from oppu.coordinator.state import StateDir
from oppu.coordinator.superlink import (
    CONNECTION,
    fab_signature_override,
    flwr_cli,
    json_tail,
    run_status,
    write_app,
)
from oppu.shared.errors import OppuError
from oppu.shared.federation.fab_trust import (
    FAB_SIGNATURE_KEY,
    OPPU_COMPONENTS,
    FabRefused,
    build_fab,
    check_fab,
    sign_fab,
)
from oppu.shared.federation.keys import RoundKey, RunKey
from oppu.shared.federation.node_auth import (
    check_node_key,
    fingerprint,
    generate_node_key,
    load_or_create_node_key,
    node_key_path,
    read_public_key,
)
from oppu.shared.federation.processes import flower_env, free_port, launch, stop
from oppu.shared.federation.signing import generate_signing_key, load_signing_key, public_key_path

BIN = Path(sys.executable).parent


# ---- key files (fast) ----------------------------------------------------------------------
def _make_node_key(root: Path) -> Path:
    return generate_node_key(node_key_path(root)).private


def _make_signing_key(root: Path) -> Path:
    generate_signing_key(root / "signing_key.pem")
    return root / "signing_key.pem"


def _make_sealing_key(root: Path) -> Path:
    from oppu.shared.federation.sealing import generate_sealing_key

    generate_sealing_key(root / "sealing_key.pem")
    return root / "sealing_key.pem"


def _make_tls_key(root: Path) -> Path:
    from oppu.shared.federation.tls import ensure_tls_material

    ensure_tls_material(root / "tls")
    return root / "tls" / "server.key"


def _load_tls(path: Path) -> None:
    from oppu.shared.federation.tls import ensure_tls_material

    ensure_tls_material(path.parent)


def _load_sealing(path: Path) -> None:
    from oppu.shared.federation.sealing import load_sealing_key

    load_sealing_key(path)


KEY_KINDS: dict[str, tuple[Callable[[Path], Path], Callable[[Path], object]]] = {
    "node auth": (_make_node_key, check_node_key),
    "signing": (_make_signing_key, load_signing_key),
    "sealing": (_make_sealing_key, _load_sealing),
    "tls": (_make_tls_key, _load_tls),
}


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_private_keys_are_written_0600_and_refused_when_others_can_read(kind, tmp_path):
    make, load = KEY_KINDS[kind]
    path = make(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    load(path)  # accepted as written
    for mode in (0o640, 0o604):
        path.chmod(mode)
        with pytest.raises(OppuError, match="readable by other users"):
            load(path)


def test_join_refuses_a_node_key_others_can_read(tmp_path: Path):
    key = _make_node_key(tmp_path)
    key.chmod(0o644)
    with pytest.raises(OppuError, match="chmod 600"):
        supernode_command("localhost:1", history=tmp_path / "h.jsonl", data_dir=tmp_path,
                          port=1, ca=tmp_path / "ca.pem", auth_key=key)


def test_node_keys_are_what_flower_loads(tmp_path: Path):
    """Flower's own loaders (SuperNode private key, `flwr supernode register`) accept them."""
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    key = generate_node_key(node_key_path(tmp_path))
    private = load_ssh_private_key(key.private.read_bytes(), None)
    assert try_load_public_key(key.public) == public_key_to_bytes(private.public_key())
    assert key.fingerprint == fingerprint(key.public)
    again, created = load_or_create_node_key(tmp_path)
    assert not created and again.fingerprint == key.fingerprint


def test_only_ecdsa_public_keys_on_nist_curves_are_accepted(tmp_path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    ed = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    with pytest.raises(OppuError, match="NIST"):
        read_public_key(ed)
    key = _make_node_key(tmp_path)
    with pytest.raises(OppuError, match="private key"):
        read_public_key(key)


def test_enrollment_is_idempotent_refuses_conflicts_and_can_be_revoked(tmp_path: Path):
    state = StateDir(tmp_path / "state")
    alice = generate_node_key(tmp_path / "alice" / "key")
    bob = generate_node_key(tmp_path / "bob" / "key")
    assert enroll_key(state, alice.public, name="alice") == ("alice", alice.fingerprint)
    assert enroll_key(state, alice.public, name="alice")[0] == "alice"
    with pytest.raises(OppuError, match="already enrolled as 'alice'"):
        enroll_key(state, alice.public, name="alice2")
    with pytest.raises(OppuError, match="another key"):
        enroll_key(state, bob.public, name="alice")
    with pytest.raises(OppuError, match="Invalid node name"):
        enroll_key(state, bob.public, name="../bob")
    assert enroll_key(state, bob.public)[0].startswith("node-")
    assert set(enrolled_keys(state)) == {"alice", enroll_key(state, bob.public)[0]}
    assert remove_key(state, "alice") and "alice" not in enrolled_keys(state)


# ---- FAB checks (fast) ---------------------------------------------------------------------
@pytest.fixture
def signed_app(tmp_path: Path):
    """oppu's generated app, its FAB, and the override ``submit_run`` would send."""
    state = StateDir(tmp_path / "state")
    key = generate_signing_key(state.signing_key)
    app_dir = write_app(state, {RoundKey.TASK: "LaMP_2N", RoundKey.HOLDOUT: 2,
                                RunKey.TIMEOUT: 60.0})
    override = fab_signature_override(state, app_dir)
    return state, key, app_dir, build_fab(app_dir), override


def _overrides(args: list[str]) -> dict:
    """What Flower's SuperLink stores from ``--run-config`` (Flower's own parser)."""
    from flwr.common.config import parse_config_args

    return parse_config_args([args[1]]) if args else {}


def test_the_coordinators_signed_fab_passes_and_survives_flowers_config_parser(signed_app):
    _, key, app_dir, fab, override = signed_app
    config = check_fab(fab, _overrides(override), key.public_key())
    assert config["tool"]["flwr"]["app"]["components"] == OPPU_COMPONENTS
    assert _overrides(override)[FAB_SIGNATURE_KEY] == sign_fab(fab, key)
    assert build_fab(app_dir) == fab  # deterministic: `flwr run` submits these very bytes


def test_component_names_match_the_coordinators():
    from oppu.shared.federation.keys import CLIENTAPP, SERVERAPP

    assert OPPU_COMPONENTS == {"serverapp": SERVERAPP, "clientapp": CLIENTAPP}
    # The gate and the coordinator share the constants; the checked-in app must name them too.
    import tomllib

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    components = tomllib.loads(pyproject.read_text())["tool"]["flwr"]["app"]["components"]
    assert components == OPPU_COMPONENTS


def _rebuilt(fab: bytes, extra: dict[str, bytes] | None = None,
             edit: Callable[[bytes], bytes] = lambda data: data) -> bytes:
    """The FAB re-zipped with ``edit`` applied to its pyproject and ``extra`` files added."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(fab)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            dst.writestr(item, edit(data) if item == "pyproject.toml" else data)
        for name, data in (extra or {}).items():
            dst.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize("case, match", [
    ("unsigned", "unsigned"),
    ("other key", "does not verify"),
    ("tampered", "does not verify"),
    ("code", "carries files"),
    ("override", "only the signature"),
    ("expired", "has passed"),
    ("garbage", "not base64"),
])
def test_the_gate_refuses(case, match, signed_app, tmp_path):
    _, key, _, fab, override = signed_app
    overrides = _overrides(override)
    trusted = key.public_key()
    if case == "unsigned":
        overrides = {}
    elif case == "other key":
        trusted = generate_signing_key(tmp_path / "other.pem").public_key()
    elif case == "tampered":
        fab = _rebuilt(fab, edit=lambda d: d.replace(b'"holdout" = 2', b'"holdout" = 1'))
    elif case == "code":
        fab = _rebuilt(fab, {"evil.py": b"import os\n"})
        overrides = {FAB_SIGNATURE_KEY: sign_fab(fab, key)}  # signed, but it carries code
    elif case == "override":
        overrides = {**overrides, RoundKey.HOLDOUT: 1.0}
    elif case == "garbage":
        overrides = {FAB_SIGNATURE_KEY: "not base64!"}
    now = time.time() + (10 * 86400 if case == "expired" else 0)
    with pytest.raises(FabRefused, match=match):
        check_fab(fab, overrides, trusted, now=now)


def test_without_a_pinned_key_code_and_overrides_are_still_refused(signed_app):
    fab = signed_app[3]
    check_fab(fab, {}, None)  # unsigned but code-free: accepted when nothing is pinned
    with pytest.raises(FabRefused, match="carries files"):
        check_fab(_rebuilt(fab, {"a/b.py": b""}), {}, None)
    with pytest.raises(FabRefused, match="only the signature"):
        check_fab(fab, {RoundKey.LABELS: "x"}, None)


# ---- end to end: a real SuperLink over TLS on loopback -------------------------------------
def _wait_for(predicate: Callable[[], object], timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _evil_app(root: Path, marker: Path) -> Path:
    """A Flower app with code: its ServerApp sends every node a message, its ClientApp would
    write ``marker``; the ServerApp records the replies it got beside the marker."""
    app = root / "evil-app"
    app.mkdir(parents=True)
    (app / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [project]
        name = "evil"
        version = "1.0.0"
        license = "Apache-2.0"

        [tool.hatch.build.targets.wheel]
        packages = ["."]

        [tool.flwr.app]
        publisher = "mallory"

        [tool.flwr.app.components]
        serverapp = "evil:server"
        clientapp = "evil:client"

        [tool.flwr.app.config]
        rounds = 1
        """))
    (app / "evil.py").write_text(textwrap.dedent(f"""\
        import json, time
        from pathlib import Path
        from flwr.app import ConfigRecord, Message, RecordDict
        from flwr.clientapp import ClientApp
        from flwr.serverapp import ServerApp

        MARKER = Path({str(marker)!r})
        server = ServerApp()
        client = ClientApp()

        @server.main()
        def main(grid, context):
            MARKER.with_suffix(".server").write_text("the ServerApp ran")
            nodes = []
            for _ in range(60):
                nodes = list(grid.get_node_ids())
                if nodes:
                    break
                time.sleep(1)
            out = [Message(RecordDict({{"c": ConfigRecord({{"x": 1}})}}), dst_node_id=n,
                           message_type="train") for n in nodes]
            replies = list(grid.send_and_receive(out, timeout=60))
            MARKER.with_suffix(".replies").write_text(json.dumps(
                [r.error.reason if r.has_error() else "content" for r in replies]))

        @client.train()
        def train(msg, context):
            MARKER.write_text("the ClientApp ran")
            return Message(RecordDict(), reply_to=msg)
        """))
    return app


def _third_party_home(root: Path, address: str, ca: Path) -> Path:
    """A flwr CLI config with nothing but the address and the public CA certificate."""
    home = root / "mallory-flwr"
    home.mkdir(parents=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "x"\n\n[superlink.x]\naddress = "{address}"\n'
        f"root-certificates = '{ca}'\n")
    return home


def _flwr_as(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "flwr"), *args], env=flower_env(home), text=True,
                          capture_output=True, timeout=120)


def _supernode(coordinator: Coordinator, data: Path, **kwargs) -> subprocess.Popen:
    data.mkdir(parents=True, exist_ok=True)
    history = data / "history.jsonl"
    history.write_text("".join(json.dumps(i) + "\n" for i in make_history(0)))
    ca = None if coordinator.insecure else coordinator.state.tls / "ca.pem"
    cmd = supernode_command(coordinator.client_address, history=history, data_dir=data,
                            port=free_port(), ca=ca, insecure=coordinator.insecure,
                            audit_log=data / "sent.jsonl", device="cpu", **kwargs)
    return launch(cmd, log_path=data / "supernode.log",
                  env=flower_env(data / "flwr", {"OPPU_HOME": str(data / "home"),
                                                 "OMP_NUM_THREADS": "1"}))


def _log(data: Path) -> str:
    path = data / "supernode.log"
    return path.read_text(errors="replace") if path.is_file() else ""


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory):
    """A coordinator as `start` runs it: TLS, node authentication, FAB gate; one enrolled
    SuperNode connected, an unenrolled one and a keyless one turned away."""
    root = tmp_path_factory.mktemp("trust")
    coordinator = Coordinator(root / "coordinator", base_artifact(), host="127.0.0.1",
                              port=free_port(), base_port=0)
    assert coordinator.node_auth and coordinator.fab_gate
    enrolled, _ = load_or_create_node_key(root / "alice")
    stranger, _ = load_or_create_node_key(root / "mallory")
    coordinator.enroll(enrolled.public, name="alice")
    started = time.perf_counter()
    with coordinator:
        nodes = {"alice": _supernode(coordinator, root / "alice", auth_key=enrolled.private,
                                     coordinator_key=public_key_path(
                                         coordinator.state.signing_key)),
                 "mallory": _supernode(coordinator, root / "mallory",
                                       auth_key=stranger.private),
                 "keyless": _supernode(coordinator, root / "keyless")}
        try:
            _wait_for(lambda: all(nodes[n].poll() is not None for n in ("mallory", "keyless"))
                      and "Activated" in (root / "coordinator" / "superlink" /
                                          "superlink.log").read_text(errors="replace"),
                      90, "the refused SuperNodes to exit and alice to activate")
            yield coordinator, root, nodes
        finally:
            for proc in nodes.values():
                stop(proc)
    print(f"guarded coordinator fixture: {time.perf_counter() - started:.0f} s")


@pytest.mark.slow
def test_an_enrolled_supernode_is_admitted_and_others_are_refused(guarded):
    coordinator, root, nodes = guarded
    assert nodes["alice"].poll() is None, _log(root / "alice")[-2000:]
    listed = json_tail(flwr_cli(coordinator.state, "supernode", "list", CONNECTION,
                              "--format", "json"))["nodes"]
    assert [n["status"] for n in listed] == ["online"]  # alice only: nothing else registered
    for name in ("mallory", "keyless"):
        assert nodes[name].returncode != 0
        refusal = auth_refusal(_log(root / name))
        assert refusal, _log(root / name)[-2000:]
    assert "Failed to activate SuperNode" in _log(root / "mallory")
    assert "must be registered via the CLI" in _log(root / "keyless")
    superlink_log = (root / "coordinator" / "superlink" / "superlink.log").read_text()
    assert "No SuperNode found with the given public key" in superlink_log


@pytest.mark.slow
def test_clients_reach_only_the_fleet_api(guarded, tmp_path: Path):
    """Flower's Control API needs no credentials (only the public CA here); on the public
    port oppu's proxy refuses it, so nobody can register a key or submit a run there."""
    coordinator, _, nodes = guarded
    home = _third_party_home(tmp_path, coordinator.client_address,
                             coordinator.state.tls / "ca.pem")
    key = generate_node_key(tmp_path / "mallory-key")
    for args in (["supernode", "register", str(key.public), "x"], ["ls", "x"],
                 ["run", str(_evil_app(tmp_path, tmp_path / "pwned")), "x"]):
        refused = _flwr_as(home, *args)
        assert refused.returncode != 0 and "403" in refused.stdout + refused.stderr, args
    assert coordinator.proxy.refused >= 3
    assert nodes["alice"].poll() is None  # the Fleet API through the proxy still works


@pytest.mark.slow
def test_a_run_the_coordinator_did_not_sign_never_runs_there(guarded, tmp_path: Path):
    """Someone who reaches the SuperLink itself (loopback: a local user; or any client when
    the proxy is off) can submit a run without credentials. oppu's gate in flwr-serverapp
    refuses the unsigned FAB before any of its code is unpacked: neither its ServerApp nor
    (through it) any ClientApp runs."""
    coordinator, _, nodes = guarded
    marker = tmp_path / "pwned"
    home = _third_party_home(tmp_path, coordinator.superlink_address,
                             coordinator.state.tls / "ca.pem")
    submitted = _flwr_as(home, "run", str(_evil_app(tmp_path, marker)), "x", "--format", "json")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    run_id = str(json_tail(submitted.stdout)["run-id"])
    status = _wait_for(lambda: (s := run_status(coordinator.state, run_id)).startswith(
        "finished") and s, 60, "the run to end")
    assert status == "finished:failed"
    assert not marker.with_suffix(".server").exists() and not marker.exists()
    assert "FabRefused" in flwr_cli(coordinator.state, "log", run_id, CONNECTION, "--show")
    assert nodes["alice"].poll() is None


@pytest.mark.slow
def test_a_key_enrolled_while_running_gets_in_and_a_removed_one_is_cut_off(guarded):
    """`oppu-coordinator enroll` against a running coordinator registers the key at once;
    `--remove` unregisters it, Flower then rejects that node's signed requests, and the
    running SuperLink keeps that key out: enrolled again, it is admitted from the next start
    (``test_service`` restarts a coordinator with such a key)."""
    coordinator, root, nodes = guarded
    bob, _ = load_or_create_node_key(root / "bob")
    state = ["--state-dir", str(coordinator.state.root)]
    out = _cli("oppu-coordinator", "enroll", str(bob.public), "--name", "bob", *state,
               home=root / "home")
    assert "running SuperLink is up to date" in out, out
    node = _supernode(coordinator, root / "bob", auth_key=bob.private)
    try:
        _wait_for(lambda: "SuperNode ID" in _log(root / "bob"), 60, "bob to be admitted")
        out = _cli("oppu-coordinator", "enroll", "--remove", "bob", *state, home=root / "home")
        assert "running SuperLink is up to date" in out, out
        _wait_for(lambda: node.poll() is not None, 60, "bob to be cut off")
    finally:
        stop(node)
    out = _cli("oppu-coordinator", "enroll", str(bob.public), "--name", "bob", *state,
               home=root / "home")
    assert out.count("admitted again from the coordinator's next start") == 1, out
    assert nodes["alice"].poll() is None
    assert set(enrolled_keys(coordinator.state)) == {"alice", "bob"}
    # Leave the module's coordinator as the other tests expect it.
    _cli("oppu-coordinator", "enroll", "--remove", "bob", *state, home=root / "home")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory):
    """A coordinator that turned its own safeguards off (it may ship code): only the
    client's gate stands between its FABs and the user's machine."""
    root = tmp_path_factory.mktemp("hostile")
    coordinator = Coordinator(root / "coordinator", base_artifact(), host="127.0.0.1",
                              port=free_port(), base_port=0, node_auth=False, fab_gate=False)
    with coordinator:
        yield coordinator, root


@pytest.mark.slow
def test_a_supernode_refuses_a_fab_with_code(hostile):
    coordinator, root = hostile
    marker = root / "pwned"
    node = _supernode(coordinator, root / "user")
    try:
        submitted = json_tail(flwr_cli(coordinator.state, "run", str(_evil_app(root, marker)),
                                     CONNECTION, "--format", "json"))
        replies = _wait_for(lambda: marker.with_suffix(".replies").is_file()
                            and json.loads(marker.with_suffix(".replies").read_text()),
                            90, f"run {submitted['run-id']} to get its replies")
    finally:
        stop(node)
    assert len(replies) == 1 and "FabRefused" in replies[0] and "carries files" in replies[0]
    assert not marker.exists(), "the hostile ClientApp ran on the client"
    assert "FabRefused" in _log(root / "user")


@pytest.mark.slow
def test_a_supernode_refuses_a_fab_signed_by_another_key(hostile, tmp_path: Path):
    coordinator, root = hostile
    other = generate_signing_key(tmp_path / "someone-else.pem")
    node = _supernode(coordinator, root / "pinned",
                      coordinator_key=public_key_path(tmp_path / "someone-else.pem"))
    try:
        with pytest.raises(OppuError, match="without a result"):
            coordinator.run_round({**FAST_ROUND, RunKey.MIN_CLIENTS: 1,
                                   RunKey.AGGREGATION: "sealed", RunKey.TIMEOUT: 120.0},
                                  timeout=120)
    finally:
        stop(node)
    assert "does not verify with the pinned key" in _log(root / "pinned")
    assert not (root / "pinned" / "federation").exists()  # the ClientApp never ran
    del other


# ---- nothing secret in any log -------------------------------------------------------------
def _secret_needles(paths: list[Path]) -> dict[str, bytes]:
    """Distinctive pieces of each private key: its PEM body, each body line past the first
    (which can be format boilerplate), and the secret itself in hex."""
    needles: dict[str, bytes] = {}
    for path in paths:
        body = [line for line in path.read_text().splitlines()
                if line and not line.startswith("-----")]
        needles[f"{path.name} body"] = "".join(body).encode()
        for i, line in enumerate(body[1:], start=1):
            if len(line) >= 24:
                needles[f"{path.name} line {i}"] = line.encode()
        needles[f"{path.name} secret hex"] = _secret_hex(path).encode()
    return needles


def _secret_hex(path: Path) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    data = path.read_bytes()
    key = (serialization.load_ssh_private_key(data, None) if b"OPENSSH" in data[:40]
           else serialization.load_pem_private_key(data, None))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"{key.private_numbers().private_value:x}"
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption()).hex()


def _scan(root: Path, needles: dict[str, bytes], skip: set[Path]) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path in skip or path.stat().st_size > 50_000_000:
            continue
        data = path.read_bytes()
        found += [f"{name} in {path}" for name, needle in needles.items() if needle in data]
    return found


def _private_keys(root: Path) -> list[Path]:
    keys = [p for p in root.rglob("*") if p.is_file() and p.suffix in (".pem", ".key", "")
            and b"PRIVATE KEY" in p.read_bytes()[:64]]
    return sorted(keys)


@pytest.mark.slow
def test_no_private_key_reaches_any_log_or_file_of_a_real_round(tmp_path_factory):
    """A real round (the sealed two-client run of test_federation, node authentication,
    Fleet proxy and FAB gate on): none of the files it left (SuperLink and SuperNode logs,
    run results, the SuperLink's files, the flwr CLI's home, client records,
    ``sent.jsonl``) holds any piece of any private key."""
    run: FederationRun = sealed_federation(tmp_path_factory)
    root = run.clients[0].data_dir.parent
    keys = _private_keys(root)
    kinds = {p.name for p in keys}
    assert {"ca.key", "server.key", "signing_key.pem", "sealing_key.pem",
            "supernode_key"} <= kinds, kinds
    assert run.result.clients == 2  # both enrolled SuperNodes took part
    leaks = _scan(root, _secret_needles(keys), set(keys))
    assert not leaks, leaks


def _cli(*args: str, home: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OPPU_HOME": str(home),
                                            "COLUMNS": "200", **(env or {})})
    return proc.stdout + proc.stderr


def test_the_cli_never_prints_a_private_key_or_the_passphrase(tmp_path: Path):
    """keygen and enroll print public material only; a wrong adapter passphrase is refused
    without echoing either passphrase."""
    from test_crypto import FAST_N, make_plain

    from oppu.client.crypto import encrypt_dir

    home = tmp_path / "home"
    out = _cli("oppu-client", "keygen", "--user", "alice", home=home)
    private = home / "users" / "alice" / "node_auth" / "supernode_key"
    out += _cli("oppu-coordinator", "enroll", str(private.with_name("supernode_key.pub")),
                "--name", "alice", home=home)
    out += _cli("oppu-coordinator", "enroll", "--list", home=home)
    assert "alice  SHA256:" in out and fingerprint(private.with_name("supernode_key.pub")) in out
    right, wrong = "tangerine-Quokka-1947 rightful", "wrong-Quokka-2023 pass phrase"
    adapter = home / "users" / "alice" / "adapters" / "LaMP_2N"
    adapter.mkdir(parents=True)
    make_plain(adapter)
    encrypt_dir(adapter, right, scrypt_n=FAST_N)
    out += _cli("oppu-client", "ask", "hello", "--task", "LaMP_2N", "--user", "alice",
                "--passphrase-env", "OPPU_TEST_PASS", home=home, env={"OPPU_TEST_PASS": wrong})
    assert "wrong passphrase" in out
    needles = _secret_needles([private])
    needles.update({"right passphrase": right.encode(), "wrong passphrase": wrong.encode()})
    leaked = [name for name, needle in needles.items() if needle in out.encode()]
    assert not leaked, leaked
    assert not _scan(home, needles, {private}), "a passphrase or key was written to a file"


def test_start_tells_the_operator_how_clients_join_and_get_enrolled(tmp_path: Path):
    from oppu.coordinator.commands.start import join_instructions

    text = join_instructions(Coordinator(tmp_path / "s", tmp_path, port=9100))
    assert "--coordinator localhost:9100 --coordinator-key signing_key.pem.pub --ca ca.pem" \
        in text
    assert "oppu-coordinator enroll KEY.pub" in text and "--no-node-auth" not in text
    text = join_instructions(Coordinator(tmp_path / "s", tmp_path, insecure=True))
    assert "--insecure --no-node-auth" in text and "enroll" not in text
