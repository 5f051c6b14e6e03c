"""Peak memory of tensors allocated while a function runs (CPU or GPU), counted per storage.

``torch.cuda.max_memory_allocated`` exists only on a GPU; on the CPU the process's
resident size is dominated by imports and the allocator's caching. :class:`TensorMemory`
counts what the code itself holds: every tensor an operator returns inside the ``with``
block is tracked by its storage until the last tensor on it is freed, so the peak is the
largest sum of live storages the computation needed (storages made before the block, such
as weights, are not counted). Used by ``tests/test_tiling.py`` and
``benchmarks/predict_speed.py``.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class TensorMemory(TorchDispatchMode):
    """``with TensorMemory() as m: ...`` then ``m.peak`` (bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._refs: dict[int, list[int]] = {}  # storage pointer -> [bytes, live tensors]

    def _release(self, key: int) -> None:
        entry = self._refs.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = None
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if not key or not size:
                continue
            entry = self._refs.get(key)
            if entry is None:
                if inputs is None:
                    inputs = {a.untyped_storage().data_ptr() for a in tree_flatten((args, kwargs))[0]
                              if isinstance(a, torch.Tensor) and a.device.type != "meta"}
                if key in inputs:
                    continue  # a view of, or an in-place op on, a tensor made before the block
                self._refs[key] = entry = [size, 0]
                self.current += size
                self.peak = max(self.peak, self.current)
            entry[1] += 1
            weakref.finalize(t, self._release, key)
        return out
