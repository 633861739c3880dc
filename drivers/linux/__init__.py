"""The Linux layer: what every driver needs to put an interface into a pod and take it out.

Both drivers build on it (the kernel driver for every end, the VPP driver for the pod side of a
kernel-interface end); it knows nothing about either, nor about actors:

- :mod:`.netns`: network namespaces by inode, netlink sockets inside them without forking;
- :mod:`.node`: the node namespace (the worker's own) as a pinned fd;
- :mod:`.links`: one netlink step with error mapping, link look-ups, idempotent deletes;
- :mod:`.addressing`: addresses, routes and neighbours of one end, each with its undo;
- :mod:`.ends`: make room for an end (refuse foreign names, drop our stale ones), remove an
  end idempotently, open the sockets of several pods at once;
- :mod:`.undo`: the undo stack a failed apply unwinds;
- :mod:`.egress`, :mod:`.stats`, :mod:`.sweep`: the egress interface, interface counters,
  deleting orphans.
"""
