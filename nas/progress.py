"""One progress bar for long work: tqdm on stderr, or a stand-in with the same methods that shows nothing."""

from __future__ import annotations

import sys
from typing import Any


class _Hidden:
    """What a bar that is turned off does: nothing, through the methods callers use."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, unit: str = "it", *, enabled: bool = True, initial: int = 0, leave: bool = False,
                 tty_only: bool = False):
    """A tqdm bar on stderr (``tty_only``: shown only when stderr is a terminal, as for the inner loops
    of a search's workers), or a stand-in that shows nothing when not ``enabled``."""
    if not enabled:
        return _Hidden()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=min(initial, total), desc=desc, unit=unit, file=sys.stderr, leave=leave,
                dynamic_ncols=True, disable=None if tty_only else False)
