"""Sub-commands of `glamor`: each module here has `register(subparsers)`; cli.py finds them all.

Handlers import heavy libraries (torch, facenet) lazily so `glamor --help` stays instant.
"""
