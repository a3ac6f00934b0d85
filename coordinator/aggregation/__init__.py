"""How the ServerApp collects a round's statistics: one module per aggregation mode.

Each mode (``secagg``, ``sealed``) implements ``base.Aggregator`` and is registered under its
name from ``oppu.shared.federation.aggregation_modes`` in ``registry.AGGREGATORS``; adding a
mode is one new module here plus one line there.
"""
