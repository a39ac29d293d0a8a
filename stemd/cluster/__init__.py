"""Cluster mode: worker actors on the nodes of a Ray cluster, seen by the dispatcher as slots.

The head (``stemd run``) keeps the watcher, the job database, the dispatcher and the
outbox. Each node that joins the Ray cluster gets worker actors (one per GPU, CPU slots
from its cores and memory); an actor wraps the same ``Worker`` as a local worker process.
Ray is imported only inside this package, and only when ``[cluster] engine = "ray"``.
See docs/cluster.md.
"""
