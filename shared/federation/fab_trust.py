"""Which Flower app bundles (FABs) oppu lets Flower run: only oppu's own, signed by the coordinator.

Flower 1.42 has FAB verification, but only for apps from Flower Hub:
``flower-supernode --trusted-entities FILE`` (YAML ``{key_id: 'ssh-ed25519 ...'}``) makes the
SuperNode check ``fab.verifications`` (``flwr/supernode/start_client_internal.py``,
``_verify_fab``), and the SuperLink fills those in only when it downloads an app from Flower
Hub (``flwr/superlink/servicer/control/control_handlers.py``: ``_get_remote_fab`` /
``_format_verification``). A FAB sent with ``flwr run <dir>`` is stored with empty
verifications (``start_run``: ``verification_dict = {}``; the CLI sends ``Fab(hash, bytes,
{})`` too), so a SuperNode with trusted entities refuses every such FAB ("App verification
is not supported by the connected SuperLink") and one without them runs any FAB.

oppu therefore checks FABs itself, in the processes that would run them. The SuperLink and
SuperNode are started through :func:`main`
(``python -m oppu.shared.federation.fab_trust launch ...``),
which puts gate scripts for ``flwr-serverapp`` and ``flwr-clientapp`` first on ``PATH``
(Flower's SuperExec starts those by name). The gate runs Flower's own ServerApp/ClientApp
process, but before Flower unpacks the FAB it requires (:func:`check_fab`):

1. only ``pyproject.toml`` and Flower's ``.info/CONTENT`` in the bundle (no code: the apps
   run from the installed ``oppu`` package), naming exactly oppu's two components;
2. no run-config overrides but the signature, so everything the apps read is signed;
3. an expiry (in the signed config) that has not passed, bounding replays;
4. with a pinned key: an Ed25519 signature by the coordinator's signing key over the
   bundle's SHA-256, in the run-config key ``oppu-fab-signature``.

A refused FAB never reaches ``install_from_fab``; the process fails, and Flower reports the
message as failed (ClientApp) or the run as failed (ServerApp).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shlex
import sys
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import tomllib

from oppu.shared.errors import OppuError
from oppu.shared.federation.keys import CLIENTAPP, SERVERAPP
from oppu.shared.federation.signing import PublicKeyLike, SignatureError, verify

FAB_SIGNATURE_KEY = "oppu-fab-signature"
"""Run-config key: base64 Ed25519 signature over the FAB (a ``flwr run --run-config`` override)."""
FAB_EXPIRES_KEY = "oppu-fab-expires"
"""Run-config key inside the signed FAB: unix time after which gates refuse it."""
SIGNATURE_CONTEXT = b"oppu-fab-signature-v1\n"
"""Signed bytes are this prefix + sha256(FAB), so the key signs nothing else by accident."""
ALLOWED_FILES = frozenset({"pyproject.toml", ".info/CONTENT"})
OPPU_COMPONENTS = {"serverapp": SERVERAPP, "clientapp": CLIENTAPP}
GATE_ENV = "OPPU_FAB_GATE"
"""Set to ``1`` in every process below a gated SuperLink/SuperNode."""
TRUSTED_KEY_ENV = "OPPU_FAB_TRUSTED_KEY"
"""Path of the pinned Ed25519 public key (PEM); empty: checks 1-3 only."""
GATED_APPS = {"flwr-clientapp": ("flwr.supernode.runtime.run_clientapp",
                                 "flwr.supernode.cli", "flwr_clientapp"),
              "flwr-serverapp": ("flwr.superlink.runtime.run_serverapp",
                                 "flwr.superlink.cli", "flwr_serverapp")}
"""App process -> (module whose ``install_from_fab`` is gated, CLI module, main function)."""
LAUNCHABLE = {"flower-superlink": ("flwr.superlink.cli", "flower_superlink"),
              "flower-supernode": ("flwr.supernode.cli", "flower_supernode")}
GATE_BIN = "oppu-fab-gate"
"""Folder (under FLWR_HOME) with the gate scripts."""


class FabRefused(OppuError):
    """A FAB oppu will not run; the message says which rule it broke."""


def signed_message(fab: bytes) -> bytes:
    return SIGNATURE_CONTEXT + hashlib.sha256(fab).digest()


def sign_fab(fab: bytes, key) -> str:
    """The value for ``oppu-fab-signature``: base64 of ``key``'s signature over the FAB."""
    return base64.b64encode(key.sign(signed_message(fab))).decode()


def build_fab(app_dir: str | Path) -> bytes:
    """The FAB ``flwr run <app_dir>`` submits (Flower builds it deterministically)."""
    from flwr.cli.build import build_fab_from_disk

    return build_fab_from_disk(Path(app_dir))


def fab_config(fab: bytes) -> dict:
    """The bundle's parsed ``pyproject.toml``, after checking it holds nothing else."""
    try:
        with zipfile.ZipFile(io.BytesIO(fab)) as bundle:
            names = set(bundle.namelist())
            extra = sorted(names - ALLOWED_FILES)
            if extra:
                raise FabRefused(f"the FAB carries files oppu never sends ({', '.join(extra[:5])}"
                                 f"{' ...' if len(extra) > 5 else ''}): oppu runs only its "
                                 "installed code, so an app bundle with code is refused.")
            config = tomllib.loads(bundle.read("pyproject.toml").decode())
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FabRefused(f"the FAB is not a readable Flower app bundle: {exc}") from exc
    components = config.get("tool", {}).get("flwr", {}).get("app", {}).get("components", {})
    if components != OPPU_COMPONENTS:
        raise FabRefused(f"the FAB names components {components}, not oppu's "
                         f"{OPPU_COMPONENTS}.")
    return config


def check_fab(fab: bytes, override_config: Mapping[str, object],
              trusted_key: PublicKeyLike | None, *, now: float | None = None) -> dict:
    """Raise :class:`FabRefused` unless oppu may run this FAB; returns its pyproject."""
    config = fab_config(fab)
    extra = sorted(set(override_config) - {FAB_SIGNATURE_KEY})
    if extra:
        raise FabRefused(f"the run overrides {', '.join(extra)}: only the signature may be "
                         "given outside the signed FAB.")
    run_config = config["tool"]["flwr"]["app"].get("config", {})
    expires = run_config.get(FAB_EXPIRES_KEY)
    if not isinstance(expires, (int, float)) or expires < (time.time() if now is None else now):
        raise FabRefused(f"the FAB has no valid {FAB_EXPIRES_KEY} or it has passed ({expires}):"
                         " a replayed or hand-made run.")
    if trusted_key is None:
        return config
    signature = str(override_config.get(FAB_SIGNATURE_KEY) or "")
    if not signature:
        raise FabRefused("the FAB is unsigned; this node runs only FABs signed by the "
                         "coordinator's pinned key.")
    try:
        raw = base64.b64decode(signature, validate=True)
    except ValueError as exc:
        raise FabRefused(f"the FAB signature is not base64: {exc}") from exc
    try:
        verify(trusted_key, signed_message(fab), raw, what="the FAB (Flower app bundle)")
    except SignatureError as exc:
        raise FabRefused(str(exc)) from exc
    return config


# ---- the gate inside Flower's processes ----------------------------------------------------
def gate_env(trusted_key: str | Path | None) -> dict[str, str]:
    """What a gated process needs in its environment (inherited by Flower's children)."""
    return {GATE_ENV: "1", TRUSTED_KEY_ENV: str(Path(trusted_key).resolve()) if trusted_key else ""}


def write_gate_scripts(bin_dir: Path, python: str = sys.executable) -> Path:
    """``flwr-clientapp`` and ``flwr-serverapp`` scripts that run the gate, in ``bin_dir``."""
    from oppu.shared.atomic import write_text_atomic

    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in GATED_APPS:
        path = bin_dir / name
        write_text_atomic(path, f"#!/bin/sh\nexec {shlex.quote(python)} -m "
                                f"oppu.shared.federation.fab_trust app {name} \"$@\"\n")
        path.chmod(0o755)
    return bin_dir


def gated_app_argv(program: str = "flwr-clientapp") -> list[str]:
    """The gate's own command for ``program``: what a wrapper that stands in for
    ``flwr-clientapp`` on PATH (e.g. a concurrency limiter) must exec instead of the real
    binary, or it would bypass the check. The gate's settings come from the environment."""
    if program not in GATED_APPS:
        raise ValueError(f"no gate for {program!r}; one of {sorted(GATED_APPS)}")
    return [sys.executable, "-m", "oppu.shared.federation.fab_trust", "app", program]


def launch_command(program: str, args: Sequence[str], *,
                   trusted_key: str | Path | None) -> list[str]:
    """Command line that runs ``program`` (``flower-superlink``/``-supernode``) gated."""
    if program not in LAUNCHABLE:
        raise ValueError(f"cannot gate {program!r}; one of {sorted(LAUNCHABLE)}")
    key = ["--trusted-key", str(Path(trusted_key).resolve())] if trusted_key else []
    return [sys.executable, "-m", "oppu.shared.federation.fab_trust", "launch", program, *key, "--",
            *args]


def _launch(program: str, trusted_key: str | None, args: list[str]) -> None:
    """Run Flower's ``program`` in this process with the gate scripts first on PATH (and
    oppu's fixes to Flower in place, ``flower_patches``)."""
    if trusted_key and not Path(trusted_key).is_file():
        raise SystemExit(f"oppu: no pinned coordinator key at {trusted_key}")
    home = Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr")
    bin_dir = write_gate_scripts(home / GATE_BIN)
    os.environ.update(gate_env(trusted_key))
    os.environ["PATH"] = str(bin_dir) + os.pathsep + os.environ.get("PATH", "")
    if program == "flower-supernode":
        from oppu.shared.federation.flower_patches import patch_supernode

        patch_supernode()
    module, function = LAUNCHABLE[program]
    sys.argv = [program, *args]
    getattr(__import__(module, fromlist=[function]), function)()


def _app(program: str, args: list[str]) -> None:
    """Run Flower's ``program`` (a ServerApp/ClientApp process) with the FAB check in place."""
    if os.environ.get(GATE_ENV) != "1":
        raise SystemExit(f"oppu: {program} gate started outside a gated SuperLink/SuperNode.")
    runtime_name, cli_module, function = GATED_APPS[program]
    runtime = __import__(runtime_name, fromlist=["install_from_fab"])
    install_gate(runtime, os.environ.get(TRUSTED_KEY_ENV) or None)
    sys.argv = [program, *args]
    getattr(__import__(cli_module, fromlist=[function]), function)()


def install_gate(runtime, trusted_key: str | None) -> None:
    """Wrap ``runtime``'s ``run_from_proto`` (to see the run's overrides) and
    ``install_from_fab`` (to check the FAB before a byte of it is unpacked)."""
    seen: dict[str, Mapping[str, object]] = {}
    run_from_proto: Callable = runtime.run_from_proto
    install_from_fab: Callable = runtime.install_from_fab

    def capture_run(proto):
        run = run_from_proto(proto)
        seen["override_config"] = dict(run.override_config)
        return run

    def checked_install(fab_content: bytes, *args, **kwargs):
        if "override_config" not in seen:
            raise FabRefused("the gate did not see the run before its FAB; refusing.")
        check_fab(fab_content, seen["override_config"], trusted_key)
        return install_from_fab(fab_content, *args, **kwargs)

    runtime.run_from_proto = capture_run
    runtime.install_from_fab = checked_install


def main(argv: Sequence[str] | None = None) -> None:
    """``launch PROGRAM [--trusted-key PEM] -- ARGS...`` or ``app PROGRAM ARGS...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] == "launch" and argv[1] in LAUNCHABLE:
        rest, key = argv[2:], None
        if rest[:1] == ["--trusted-key"]:
            key, rest = rest[1], rest[2:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        _launch(argv[1], key, rest)
    elif len(argv) >= 2 and argv[0] == "app" and argv[1] in GATED_APPS:
        _app(argv[1], argv[2:])
    else:
        raise SystemExit("usage: python -m oppu.shared.federation.fab_trust launch "
                         f"{{{','.join(LAUNCHABLE)}}} [--trusted-key PEM] -- ARGS... | app "
                         f"{{{','.join(GATED_APPS)}}} ARGS...")


if __name__ == "__main__":
    main()
