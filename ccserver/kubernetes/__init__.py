"""Kubernetes clusters as nodes: each configured cluster is one node to ccserver's placement,
its tasks run as Jobs (see docs/kubernetes.rst)."""
