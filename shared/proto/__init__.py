"""oppu's wire schemas, generated from protos/ (see scripts/gen_protos.py).

``oppu.shared.proto.v1`` holds the ``oppu.v1`` messages and the ``BaseStore`` service.
"""
