"""The chain fast path: plain chains of conv/linear stages (LeNet) scored from cached stage
activations and a hand-written backward (:mod:`.chain_engine`, with :mod:`.winners` and
:mod:`.head`); same decisions as the general path."""
