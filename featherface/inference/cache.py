"""A small least-recently-used cache keyed by network input size (priors, anchor grids)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Generic, TypeVar

__all__ = ["PRIOR_CACHE_SIZE", "SizeCache"]

#: Input sizes whose priors a detector keeps (least recently used dropped first). WIDER FACE val alone has
#: hundreds of distinct image heights; an unbounded cache would keep ~0.5 MB per size for the whole run.
PRIOR_CACHE_SIZE = 16

T = TypeVar("T")


class SizeCache(Generic[T]):
    """``cache(height, width)``: ``make(height, width)``, computed once per size and kept for the ``capacity``
    most recently used sizes."""

    def __init__(self, make: Callable[[int, int], T], capacity: int = PRIOR_CACHE_SIZE) -> None:
        self.make = make
        self.capacity = capacity
        self._items: OrderedDict[tuple[int, int], T] = OrderedDict()

    def __call__(self, height: int, width: int) -> T:
        key = (height, width)
        if key in self._items:
            self._items.move_to_end(key)
        else:
            self._items[key] = self.make(height, width)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return self._items[key]

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, size: object) -> bool:
        return size in self._items
