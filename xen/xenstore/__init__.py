"""A xenstore daemon inside the VMM (the VMM is the privileged domain 0).

* ``store``: the node tree, paths, permissions, the node operations;
* ``transactions``: the private view of a transaction and its commit;
* ``watches``: watches and who hears about a change;
* ``daemon``: connections and the request handler (``XenstoreDaemon.handle``);
* ``ring``: the guest's ring page (``XenstoreRing.process``);
* ``populate``: the nodes a toolstack (xl/libxl) writes for a new domU.

Sources: xen-project/xen docs/misc/xenstore.txt, docs/misc/xenstore-ring.txt,
xen/include/public/io/xs_wire.h (declared in xen/abi/xenstore.py), tools/xenstored/.
"""
