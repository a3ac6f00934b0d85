"""How a cohort's statistics reach the coordinator: SecAgg+, sealed, or chosen by size.

Under SecAgg+ the server only ever holds the sum, but with two clients the sum reveals the
other client's vector; a smaller cohort therefore seals each vector to the coordinator's key
instead. ``auto`` picks between them from the number of clients that joined.
"""

from __future__ import annotations

SECAGG = "secagg"
SEALED = "sealed"
AUTO = "auto"
AGGREGATIONS = (AUTO, SECAGG, SEALED)
MIN_SECAGG_CLIENTS = 3
"""With two clients a sum reveals the other client's vector: SecAgg+ needs three or more."""


def choose_aggregation(requested: str, clients: int) -> str:
    """``auto`` means SecAgg+ from three clients on, sealed metrics below."""
    if requested not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {requested!r}.")
    if requested == AUTO:
        return SECAGG if clients >= MIN_SECAGG_CLIENTS else SEALED
    if requested == SECAGG and clients < MIN_SECAGG_CLIENTS:
        raise ValueError(f"SecAgg+ needs at least {MIN_SECAGG_CLIENTS} clients (min-clients "
                         f"is {clients}); use aggregation='auto' or 'sealed'.")
    return requested
