"""Summaries of fitted models: a text table for a projector, HTML for
Jupyter.

A :class:`Summary` has a title, a header of labelled values in two
columns (as statsmodels lays out its regression results), optionally a
table with one row per parameter or quantity, and notes.  Its text is at
most 72 characters wide with rounded numbers; ``repr`` is the text, so a
summary left at the end of a notebook cell or typed at the prompt shows
itself, and ``_repr_html_`` gives Jupyter the same as HTML tables.  The
numbers behind it are its attributes (``summary.coef``,
``summary.p_value``, ...).
"""
import html
import math
import textwrap

import numpy as np

__all__ = ["Summary", "format_columns", "format_number", "format_p_values",
           "normal_quantile", "normal_sf2"]

WIDTH = 72


def format_number(value, digits=4):
    """value rounded to `digits` significant digits, plainly written
    (scientific only below 1e-4 or from 1e6 on); ints as they are."""
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if abs(int(value)) >= 100_000 else \
            str(int(value))
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0.0:
        return "0"
    if 1e-4 <= abs(value) < 10 ** digits:
        return f"{value:.{digits}g}"
    if 10 ** digits <= abs(value) < 1e9:  # a log-likelihood of many data
        return f"{value:.1f}"
    return f"{value:.{digits - 1}e}"


def format_columns(*columns, digits=4):
    """Strings of columns of numbers, all with one number of decimals:
    enough for `digits` significant digits of the largest entry (or all
    in scientific notation, for entries all below 1e-4 or some from 1e6
    on)."""
    columns = [np.asarray(c, dtype=np.float64) for c in columns]
    finite = np.concatenate([np.abs(c[np.isfinite(c)]) for c in columns])
    largest = float(finite.max()) if finite.size else 0.0
    if largest and (largest < 1e-4 or largest >= 1e6):
        spec = f".{digits - 1}e"
    else:
        decimals = 0 if largest == 0.0 else int(min(max(
            digits - 1 - math.floor(math.log10(largest)), 0), 6))
        spec = f".{decimals}f"
    return [[format(v, spec) if math.isfinite(v) else format_number(v)
             for v in c] for c in columns]


def format_p_values(values):
    return ["nan" if not math.isfinite(p) else "<0.001" if p < 0.001 else
            f"{p:.3f}" for p in np.asarray(values, dtype=np.float64)]


def normal_sf2(z):
    """Two-sided p-values of standard normal statistics, ``P(|Z| > |z|)
    = erfc(|z| / sqrt 2)``."""
    z = np.abs(np.asarray(z, dtype=np.float64))
    out = np.full(z.shape, np.nan)
    finite = ~np.isnan(z)
    out[finite] = [math.erfc(v / math.sqrt(2.0)) for v in z[finite]]
    return out


def normal_quantile(q):
    """The standard normal quantile of q in (0, 1), by bisection on
    math.erfc (to the last bit; no SciPy needed)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"a probability in (0, 1) is needed, got {q!r}")
    if q < 0.5:
        return -normal_quantile(1.0 - q)
    upper_tail = 1.0 - q
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * math.erfc(mid / math.sqrt(2.0)) > upper_tail:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 2 * math.ulp(hi):
            break
    return 0.5 * (lo + hi)


def _shorten(text, width):
    return text if len(text) <= width else text[:width - 3] + "..."


class Summary:
    """A fitted model's summary: ``print(summary)`` for the text,
    Jupyter shows the HTML.

    Parameters
    ----------
    title : str
    left, right : list of (label, value)
        The header, in two columns; values are numbers (rounded here) or
        text.
    columns : list of str, optional
        The table's column names (after the row names).
    rows : list of (name, list of str), optional
        The table's rows, already formatted.
    notes : list of str
    omitted : int
        Rows left out of the table (said under it).
    numbers : dict
        Set as attributes, for code that wants the numbers.
    """

    def __init__(self, title, left, right=(), columns=None, rows=(),
                 notes=(), omitted=0, numbers=None):
        self.title = title
        self.left = [(label, self._value(value)) for label, value in left]
        self.right = [(label, self._value(value)) for label, value in right]
        self.columns = list(columns) if columns else []
        self.rows = list(rows)
        self.notes = list(notes)
        self.omitted = int(omitted)
        for key, value in (numbers or {}).items():
            setattr(self, key, value)

    @staticmethod
    def _value(value):
        return value if isinstance(value, str) else format_number(value)

    # -- text --------------------------------------------------------------

    def _header_lines(self):
        half = WIDTH // 2
        lines = []
        for i in range(max(len(self.left), len(self.right))):
            cells = []
            for side, size in ((self.left, half - 2), (self.right, half)):
                if i < len(side):
                    label, value = side[i]
                    label = _shorten(label + ":", size - len(value) - 1) \
                        if len(label) + len(value) + 2 > size else label + ":"
                    cells.append(label + " " * max(
                        size - len(label) - len(value), 1) + value)
                else:
                    cells.append(" " * size)
            lines.append((cells[0] + "  " + cells[1]).rstrip())
        return lines

    def _table_lines(self):
        if not self.columns:
            return []
        name_width = min(max([len(name) for name, _ in self.rows] + [4]), 24)
        widths = [max(len(c), *(len(r[1][j]) for r in self.rows)) + 2
                  if self.rows else len(c) + 2
                  for j, c in enumerate(self.columns)]
        lines = [" " * name_width + "".join(
            c.rjust(w) for c, w in zip(self.columns, widths))]
        lines.append("-" * WIDTH)
        for name, cells in self.rows:
            lines.append(_shorten(name, name_width).ljust(name_width)
                         + "".join(c.rjust(w) for c, w in zip(cells, widths)))
        if self.omitted:
            lines.append(f"... {self.omitted} more rows (summary(max_rows="
                         "None) shows them all)")
        return lines

    def __str__(self):
        rule = "=" * WIDTH
        lines = [self.title.center(WIDTH).rstrip(), rule]
        lines += self._header_lines()
        table = self._table_lines()
        if table:
            lines += [rule] + table
        lines.append(rule)
        for note in self.notes:
            lines += textwrap.wrap(note, WIDTH, subsequent_indent="  ")
        return "\n".join(lines)

    def __repr__(self):
        return str(self)

    # -- HTML --------------------------------------------------------------

    def _repr_html_(self):
        esc = html.escape
        cell = 'style="text-align:{};padding:1px 8px"'
        parts = [f"<div><p><b>{esc(self.title)}</b></p>",
                 '<table style="border-collapse:collapse">']
        for i in range(max(len(self.left), len(self.right))):
            parts.append("<tr>")
            for side in (self.left, self.right):
                if i < len(side):
                    label, value = side[i]
                    parts.append(f"<th {cell.format('left')}>{esc(label)}"
                                 f"</th><td {cell.format('right')}>"
                                 f"{esc(value)}</td>")
                else:
                    parts.append("<th></th><td></td>")
            parts.append("</tr>")
        parts.append("</table>")
        if self.columns:
            parts.append('<table style="border-collapse:collapse;'
                         'margin-top:6px"><tr><th></th>')
            parts += [f"<th {cell.format('right')}>{esc(c)}</th>"
                      for c in self.columns]
            parts.append("</tr>")
            for name, cells in self.rows:
                parts.append(f"<tr><th {cell.format('left')}>{esc(name)}"
                             "</th>")
                parts += [f"<td {cell.format('right')}>{esc(c)}</td>"
                          for c in cells]
                parts.append("</tr>")
            parts.append("</table>")
            if self.omitted:
                parts.append(f"<p>... {self.omitted} more rows "
                             "(summary(max_rows=None) shows them all)</p>")
        for note in self.notes:
            parts.append(f"<p style=\"font-size:90%\">{esc(note)}</p>")
        parts.append("</div>")
        return "".join(parts)
