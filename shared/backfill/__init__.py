"""``leadflow import``: historical events loaded through ingest (docs/architecture.md §5.11).

:mod:`.formats` reads the files and :mod:`.plan` checks and orders what they hold, both
pure; :mod:`.run` sends a plan through the two seams it declares, which :mod:`.client`
implements over ingest's and the pipeline's HTTP APIs.
"""
