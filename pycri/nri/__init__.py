"""NRI, containerd's Node Resource Interface: plugins that watch and adjust pods and containers.

Layers, bottom up (each usable on its own):

* ``api.proto`` / ``api_pb2``: NRI's messages and services, wire-identical to containerd/nri's
  ``pkg/api/api.proto``; ``ttrpc.proto`` / ``ttrpc_pb2``: ttrpc's Request/Response envelope.
* :mod:`pycri.nri.ttrpc`: ttrpc framing and call state, sans-IO.
* :mod:`pycri.nri.mux`: NRI's multiplexer (two ttrpc connections on one socket), sans-IO.
* :mod:`pycri.nri.channel`: the asyncio driver of both over a socket.
* :mod:`pycri.nri.owners` and :mod:`pycri.nri.result`: merging plugins' adjustments, with
  upstream's conflict rules (pure).
* :mod:`pycri.nri.plugin` and :mod:`pycri.nri.adaptation`: the runtime side, which the pod and
  container services call (:class:`Adaptation`).
* :mod:`pycri.nri.stub`: the plugin side, to write NRI plugins in Python (and to test with).
"""

from pycri.nri.adaptation import Adaptation, Options, PluginInfo, SyncCallback, SyncFn
from pycri.nri.plugin import NRIError, UpdateFn

__all__ = ["Adaptation", "NRIError", "Options", "PluginInfo", "SyncCallback", "SyncFn", "UpdateFn"]
