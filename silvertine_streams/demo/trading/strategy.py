"""A moving-average crossover strategy: market data in, signals out."""

from __future__ import annotations

import math
from collections import deque

from silvertine_streams.demo.trading.feed import mid_price
from silvertine_streams.events import MarketDataEvent, SignalEvent, SignalType

__all__ = ["MovingAverageCrossover"]

# Running sums drift by an ulp or so per update; resumming this often keeps the
# drift far below a price tick at a cost of one fsum per this many ticks.
_RESUM_EVERY = 1024


class _Averages:
    """The fast and slow windows of one symbol, with running sums."""

    __slots__ = ("fast", "slow", "fast_sum", "slow_sum", "side", "updates")

    def __init__(self, fast: int, slow: int) -> None:
        self.fast: deque[float] = deque(maxlen=fast)
        self.slow: deque[float] = deque(maxlen=slow)
        self.fast_sum = 0.0
        self.slow_sum = 0.0
        self.side = 0  # +1 fast above slow, -1 below, 0 not yet known
        self.updates = 0

    def push(self, value: float) -> None:
        fast, slow = self.fast, self.slow
        if len(fast) == fast.maxlen:
            self.fast_sum -= fast[0]
        if len(slow) == slow.maxlen:
            self.slow_sum -= slow[0]
        fast.append(value)
        slow.append(value)
        self.fast_sum += value
        self.slow_sum += value
        self.updates += 1
        if self.updates % _RESUM_EVERY == 0:
            self.fast_sum = math.fsum(fast)
            self.slow_sum = math.fsum(slow)


class MovingAverageCrossover:
    """Signal when the fast simple moving average of the mid crosses the slow one.

    Per symbol, the averages cover the last ``fast`` and ``slow`` mids. Once
    the slow window is full, the first comparison only sets which side the
    fast average is on; each later change of side is a crossing: above → LONG,
    below → SHORT. Touching (averages equal to within rounding) is not a
    crossing. Each tick costs O(1).

    ``strength`` is the distance of the averages relative to the slow one,
    divided by ``strength_scale`` and clipped to [-1, 1]: positive for LONG,
    negative for SHORT. ``target_price`` is the tick's mid; ``reason`` says
    which way the averages crossed.

    Attributes:
        fast: length of the fast window.
        slow: length of the slow window.
        strategy_id: ``strategy_id`` of the signals.
        source: ``source`` of the signals.
        strength_scale: relative distance that counts as full strength.
    """

    __slots__ = ("fast", "slow", "strategy_id", "source", "strength_scale", "_state")

    def __init__(
        self,
        fast: int = 5,
        slow: int = 20,
        strategy_id: str = "ma-cross",
        source: str = "demo-strategy",
        strength_scale: float = 0.001,
    ) -> None:
        """Set up the strategy.

        Raises:
            ValueError: not ``1 <= fast < slow``, or ``strength_scale <= 0``.
        """
        if not 1 <= fast < slow:
            raise ValueError(f"need 1 <= fast < slow, got fast={fast}, slow={slow}")
        if not strength_scale > 0:
            raise ValueError(f"strength_scale must be positive, got {strength_scale}")
        self.fast = fast
        self.slow = slow
        self.strategy_id = strategy_id
        self.source = source
        self.strength_scale = strength_scale
        self._state: dict[str, _Averages] = {}

    def on_tick(self, md: MarketDataEvent) -> SignalEvent | None:
        """Take one tick; return a signal if the averages of its symbol crossed."""
        state = self._state.get(md.symbol)
        if state is None:
            state = self._state[md.symbol] = _Averages(self.fast, self.slow)
        mid = mid_price(md)
        state.push(mid)
        if len(state.slow) < self.slow:
            return None
        fast_ma = state.fast_sum / self.fast
        slow_ma = state.slow_sum / self.slow
        # Below this the difference is rounding in the running sums, not a move.
        noise = slow_ma * 1e-12
        diff = fast_ma - slow_ma
        side = 1 if diff > noise else -1 if diff < -noise else 0
        if side == 0 or side == state.side:
            return None
        previous, state.side = state.side, side
        if previous == 0:
            return None
        raw = diff / (slow_ma * self.strength_scale)
        strength = min(1.0, raw) if side > 0 else max(-1.0, raw)
        return SignalEvent(
            symbol=md.symbol,
            strategy_id=self.strategy_id,
            signal_type=SignalType.LONG if side > 0 else SignalType.SHORT,
            strength=strength,
            reason=f"fast MA({self.fast}) crossed {'above' if side > 0 else 'below'} "
            f"slow MA({self.slow})",
            target_price=mid,
            source=self.source,
            metadata={"fast_ma": fast_ma, "slow_ma": slow_ma, "tick_event_id": md.event_id},
        )

    def averages(self, symbol: str) -> tuple[float, float] | None:
        """Return ``(fast, slow)`` averages of ``symbol``, or None until the slow window fills."""
        state = self._state.get(symbol)
        if state is None or len(state.slow) < self.slow:
            return None
        return state.fast_sum / self.fast, state.slow_sum / self.slow
