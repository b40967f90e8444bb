"""Scheduling: deciding where waiting tasks run.

The decisions (fit check, spread/binpack, data-container reuse) live in
:mod:`ccserver.scheduling.placement` as a pure function, free of Docker, the database and the
reactor, so that they can be tested exhaustively and benchmarked on simulated clusters.  The
service around them applies the decisions (store writes, Docker calls).
"""
