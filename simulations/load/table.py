"""The load test's report as a table for people (rich, on stderr); tools read the JSON."""

from __future__ import annotations

from typing import Any


def print_table(report: dict[str, Any]) -> None:
    """The report as a rich table on stderr, then each failure with its log tail."""
    from rich.table import Table

    from oppu.shared.cli_support import console

    t, m = report["times_s"], report["memory_mb"]

    def sec(key: str) -> str:
        value = t.get(key)
        return "n/a" if value is None else f"{value:.1f} s"

    def mb(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.0f} MB"

    table = Table(title=f"Load test: {report['clients']} clients, {report['aggregation']}"
                  + (f", at most {report['max_clientapps']} ClientApps at once"
                     if report["max_clientapps"] else ""))
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("clients joined", f"{report['joined']} / {report['clients']}"),
        ("clients served (aggregated)", str(report["served"])),
        ("failures", str(report["failures"])),
        ("coordinator start (TLS, BaseStore, SuperLink, keys)", sec("coordinator_start_s")),
        ("launch -> first SuperNode connected", sec("launch_to_first_connected_s")),
        ("launch -> all SuperNodes connected", sec("launch_to_all_connected_s")),
        ("submit -> run started (flwr run)", sec("run_started_s")),
        ("submit -> first client result", sec("submit_to_first_result_s")),
        ("submit -> last client result", sec("submit_to_last_result_s")),
        ("submit -> last client reply (audit, 1 s)", sec("submit_to_last_reply_s")),
        ("round wall time (submit -> cohort result)", sec("round_wall_s")),
        ("ServerApp time", "n/a" if report["server_app_s"] is None
         else f"{report['server_app_s']:.1f} s"),
        ("stop: SuperNodes / coordinator",
         f"{sec('stop_nodes_s')} / {sec('stop_coordinator_s')}"),
        ("total", sec("total_s")),
        ("peak RSS, whole process tree", mb(m["peak_tree"])),
        ("  coordinator (this process + SuperLink)", mb(m["coordinator_peak"])),
        ("  per SuperNode at rest (+ SuperExec)", mb(m["node_idle_median"])),
        ("  per ClientApp, peak (max)", mb(m["clientapp_peak_max"])),
        ("  per client, whole run ((tree - coordinator) / N)", mb(m["client_share"])),
        ("  ClientApp processes / most at once",
         f"{m['clientapp_processes']} / {m['concurrent_clientapps_peak']}"),
        ("ClientApp CPU per client, all its messages",
         "n/a" if report["cpu_s"]["clientapps_per_client"] is None
         else f"{report['cpu_s']['clientapps_per_client']:.1f} s"),
        ("largest N for memory available now",
         str(report["budget"].get("max_clients_estimate_now",
                                  report["budget"]["max_clients_estimate"]))),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for failure in report["failure_details"]:
        console.print(f"[bold red]{failure['client']}[/] ({failure['stage']}): "
                      f"{failure['error']}", highlight=False)
        if failure.get("log_tail"):
            console.print(failure["log_tail"][-1500:], highlight=False, markup=False)
