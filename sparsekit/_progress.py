"""The progress convention of every long operation (``convert``, ``iterative_prune``,
``iterative_prune_channels``, ``save_compressed``): a keyword ``progress`` that is

* ``False`` (the default): silent;
* ``True``: a tqdm bar on stderr;
* a callable ``progress(done, total, name)``: called after each unit of work (a layer, a step,
  a tensor) with the count done so far (1 .. total), the total and the unit's name.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Union

Progress = Union[bool, Callable[[int, int, str], None]]


def _silent(name: str) -> None:
    pass


@contextlib.contextmanager
def progress_steps(progress: Progress, total: int, desc: str) -> Iterator[Callable[[str], None]]:
    """Yields ``step(name)``, to be called once each of the ``total`` units of work is done. The
    argument is checked on entry, before any work."""
    if progress is False or progress is None:
        yield _silent
    elif progress is True:
        try:
            from tqdm import tqdm
        except ImportError as exc:  # pragma: no cover - tqdm is a dependency
            raise ImportError("progress=True draws a tqdm bar: pip install tqdm") from exc
        with tqdm(total=total, desc=desc, unit="") as bar:
            def step(name: str) -> None:
                bar.set_postfix_str(name, refresh=False)
                bar.update(1)

            yield step
    elif callable(progress):
        done = 0

        def step(name: str) -> None:
            nonlocal done
            done += 1
            progress(done, total, name)

        yield step
    else:
        raise TypeError(f"progress must be False, True or a callable(done, total, name), got {progress!r}")
