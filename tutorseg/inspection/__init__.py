"""Step 1, inspect: what a dataset holds, and every problem in it, reported at once.

- ``checks``: :func:`inspect_dataset`, which reads each case and collects problems (case, what, why, fix).
- ``report``: :class:`DatasetReport` and :class:`CaseSummary`, what the checks return.
"""

from tutorseg.data.lazy import lazy_exports

_EXPORTS = {"inspect_dataset": "checks", "DatasetReport": "report", "CaseSummary": "report"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
