"""The coordinator's SuperLink and the ``flwr`` CLI: start it, submit signed runs, watch them.

``flower-superlink`` runs in its own process group (``oppu.shared.federation.processes``);
runs are submitted with ``flwr run`` against the connection this module writes into the
state dir's ``flwr/config.toml``, as a generated app whose FAB is signed with the state dir's
key (the SuperLink's FAB gate and every client check that signature).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from oppu.coordinator.results import CohortResult, read_result
from oppu.coordinator.state import StateDir
from oppu.shared.atomic import write_text_atomic
from oppu.shared.errors import OppuError
from oppu.shared.federation.keys import CLIENTAPP, SERVERAPP, RunKey
from oppu.shared.federation.processes import flower_env, launch, stop, wait_for_port
from oppu.shared.federation.tls import CA_CERT, SERVER_CERT, SERVER_KEY

CONNECTION = "oppu"
"""Name of our SuperLink in the flwr CLI's config.toml."""
APP_NAME = "oppu-federation"


def superlink_command(state: StateDir, *, host: str, port: int, insecure: bool,
                      simulation: bool = False, node_auth: bool = False,
                      fab_gate: bool = False) -> list[str]:
    """``flower-superlink``; with ``simulation`` it runs virtual SuperNodes on Ray itself.

    Its state is Flower's default, in memory: what must outlive it lives in oppu's state dir
    (enrolled keys, results, ``rounds.json``, base versions in ``federation.json``) and a
    start restores it (``sync_registrations`` registers every enrolled key anew); SuperNodes
    of a restarted SuperLink get in again by starting over (``oppu.client.rejoin``).

    ``node_auth``: only SuperNodes whose keys were registered (``enroll``) may connect
    (Flower's ``--enable-supernode-auth``, which needs TLS). ``fab_gate``: start it through
    oppu's FAB gate, so its ServerApp processes run only FABs signed by this state dir's key.
    """
    cmd = ["flower-superlink", "--disable-runtime-dependency-installation",
           "--host", host, "--port", str(port)]
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


def flwr_cli(state: StateDir, *args: str, timeout: float = 120.0) -> str:
    proc = subprocess.run(["flwr", *args], env=flower_env(state.flwr_home), text=True,
                          capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise OppuError(f"`flwr {' '.join(args)}` failed ({proc.returncode}):\n"
                        f"{(proc.stdout + proc.stderr)[-2000:]}")
    return proc.stdout


def json_tail(text: str) -> dict:
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
    out = json_tail(flwr_cli(state, "run", str(app_dir), CONNECTION, *extra, "--format", "json"))
    if not out.get("success") or not out.get("run-id"):
        raise OppuError(f"The SuperLink did not start the run: {out}")
    return str(out["run-id"])


def run_status(state: StateDir, run_id: str) -> str:
    out = json_tail(flwr_cli(state, "ls", CONNECTION, "--run-id", run_id, "--format", "json"))
    runs = out.get("runs") or []
    return str(runs[0].get("status", "unknown")) if runs else "unknown"


def run_log(state: StateDir, run_id: str) -> str:
    try:
        return flwr_cli(state, "log", run_id, CONNECTION, "--show", timeout=60)
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
