"""The general path: any traced graph scored with plain autograd by replaying its fx graph
(:mod:`.replay`), kept exact across removals from the values at the graph's cuts (:mod:`.cuts`,
:mod:`.evaluation`); the oracle's measurement (:mod:`.masked`) and the probes (:mod:`.probes`).
:mod:`.graph_engine` builds on all of them."""
