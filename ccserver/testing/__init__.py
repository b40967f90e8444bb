"""Helpers for ccserver's own test suite (and for anyone testing against ccserver).

:mod:`ccserver.testing.ferretdb` runs a throw-away FerretDB server, the real MongoDB-protocol
database the MongoDB backend is tested against.
"""
