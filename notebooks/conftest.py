"""nbval, run as Jupyter runs a cell.

nbval sends each cell with ``store_history=False``. IPython decides whether a trailing ``;`` silences a
cell's value by reading the last *stored* input (``DisplayHook.quiet``), so under nbval ``plot(...);``
prints its return value, which it never does in Jupyter, and the stored output cannot match. Cells
here run with history, as in JupyterLab; nbval ignores execution counts when comparing.
"""
from nbval.kernel import RunningKernel


def _execute_cell_input(self, cell_input, allow_stdin=None):
    return self.kc.execute(cell_input, store_history=True, allow_stdin=allow_stdin, stop_on_error=False)


RunningKernel.execute_cell_input = _execute_cell_input
