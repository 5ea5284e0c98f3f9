"""What developers run, never a container: the local broker from Maven jars, the
whole system as processes (``make run``), the demo and its synthetic stream.

The runtime package is :mod:`shared`; nothing in :mod:`shared` or :mod:`services`
imports from here except the ``leadflow`` command's developer subcommands.
"""
