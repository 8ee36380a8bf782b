"""The pure coordination core: the product's rules as plain functions over typed values.

Purely computational: no I/O, no clock (every function that needs the time takes
``now``), no kopf, no kubernetes client. The operator feeds it what it observed and
writes back what it returns; ``coordinator check`` runs the same functions on files.
"""
