"""The nn-rpc server: preloaded models served over gRPC in WasmEdge's protocol
(``wasi_ephemeral_nn.proto``), for ``wasinn rpc-server`` (:mod:`wasinn.cli.rpc`).

The client side, which forwards a guest's calls, sits in the ABI layer
(:mod:`wasinn.abi.ephemeral_rpc`, :mod:`wasinn.abi.nnrpc_client`), beside the message codec
both ends share (:mod:`wasinn.abi._nnrpc_wire`). Only these code paths import grpcio (the
``rpc`` extra).
"""
