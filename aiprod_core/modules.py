"""Standard layers that skip their random initialisation when built on the meta device.

Every model in the core is constructed on the meta device and then receives its weights from a file
(``load_state_dict(assign=True)``). ``nn.Linear`` still runs its Kaiming initialisation on those meta tensors,
which goes through PyTorch's Python decompositions: about 0.3 ms per layer, a quarter of a second for a 24-block
transformer, all of it thrown away. These subclasses keep the state-dict keys, ``isinstance`` checks and
behaviour of their parents and only skip that work on meta tensors (a real-device construction is initialised
as usual). No global patching, so construction stays thread-safe.
"""

from __future__ import annotations

from torch import nn

__all__ = ["Linear"]


class Linear(nn.Linear):
    """``nn.Linear`` whose ``reset_parameters`` does nothing on the meta device."""

    def reset_parameters(self) -> None:
        if self.weight.is_meta:
            return
        super().reset_parameters()
