"""The one place that builds a worker: components (typed by their Protocols), each agent's
transport-neutral handler bound to its catalogue topics on the faust app, timers and HTTP servers.

Layering: ``worker`` sits above ``agents`` (whose handlers it binds) and ``streams`` (the faust
adapter); only the ``eddy`` command imports it.
"""
