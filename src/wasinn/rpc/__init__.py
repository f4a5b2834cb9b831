"""nn-rpc: WASI-NN over gRPC in WasmEdge's protocol (``wasi_ephemeral_nn.proto``).

``server`` serves preloaded models (``wasinn rpc-server``); ``client`` forwards a guest's
calls to such a server (``wasinn run --nn-rpc-uri``) through
:class:`wasinn.abi.ephemeral_rpc.RemoteEphemeralNN`; ``_wire`` is the message codec. The CLI is
:mod:`wasinn.cli.rpc`. Only these code paths import grpcio (the ``rpc`` extra).
"""
