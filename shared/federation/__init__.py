"""What coordinator and clients agree on over Flower, one concern per module.

- ``keys``: record names, run/sim/node/round config keys, the app components, defaults.
- ``aggregation_modes``: SecAgg+ or sealed metrics, and how ``auto`` picks one.
- ``round_config``: ``RoundConfig``, the round's checked instructions as a ConfigRecord.
- ``secagg_encoding``: SecAgg+ parameters; statistics in and sums out of its quantization.
- ``node_config``: a SuperNode's ``--node-config`` string.
- ``processes``: starting and stopping the local Flower processes (SuperLink, SuperNode).

The remaining modules hold the trust machinery: ``tls``, ``signing``, ``sealing``,
``node_auth`` and ``fab_trust``. A base's signed manifest lives in
``oppu.shared.llm.base_artifact``: the per-user pipeline reads its version too.
"""
