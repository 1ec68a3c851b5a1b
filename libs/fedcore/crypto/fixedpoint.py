"""Fixed-point encoding of float arrays into Paillier plaintexts.

Paillier encrypts integers modulo n, so a real array x is carried as integer mantissas
m_i with one shared base-2 exponent e:

    x_i ~= m_i * 2**e,        m_i = round(x_i * 2**-e)

Sharing the exponent across an array is what lets encrypted arrays be added and
multiplied element by element without aligning every element separately (python-paillier
gives each number its own base-16 exponent instead). Exponents are base 2 so that a
scalar's mantissa, which becomes an exponent of a modular power, carries no more bits
than the precision asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

#: Precision of a float64 significand: encoding with 53 bits keeps the largest element exact.
FLOAT_PRECISION = 53
#: Mantissas below this magnitude are held in int64 arrays (fast path); above it in Python ints.
_INT64_SAFE = 1 << 62


@dataclass(frozen=True)
class FixedPoint:
    """An array of integer mantissas sharing one base-2 exponent: value = mantissa * 2**exponent.

    ``mantissas`` is a numpy array of any shape, dtype int64 when every |m| < 2**62 and
    dtype object (Python ints) otherwise.
    """

    mantissas: np.ndarray
    exponent: int

    @classmethod
    def encode(
        cls,
        values: npt.ArrayLike,
        *,
        precision: int = FLOAT_PRECISION,
        exponent: int | None = None,
        trim: bool = False,
    ) -> FixedPoint:
        """Encode a float array with one exponent.

        Without ``exponent``, e = E - precision where max|x| = f * 2**E, 0.5 <= f < 1
        (math.frexp), so the largest element keeps ``precision`` significant bits and every
        element has absolute error <= 2**(e-1). With ``exponent``, that e is used as given.
        ``trim`` then raises e while every mantissa is even, which makes the mantissas (and
        so the cost of using them as exponents) as short as the values allow, e.g. 0.25
        becomes 1 * 2**-2.
        """
        array = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(array)):
            raise ValueError("cannot encode NaN or infinity")
        if precision < 1:
            raise ValueError(f"precision must be >= 1 bit, got {precision}")
        largest = float(np.max(np.abs(array))) if array.size else 0.0
        if exponent is None:
            exponent = (math.frexp(largest)[1] if largest else 0) - precision
        if largest == 0.0 or math.frexp(largest)[1] - exponent <= 62:  # max|m| <= 2^62
            mantissas: np.ndarray = np.rint(np.ldexp(array, -exponent)).astype(np.int64)
        else:
            flat = [_exact_round(float(x), exponent) for x in array.ravel()]
            mantissas = _as_int_array(flat).reshape(array.shape)
        encoded = cls(mantissas, exponent)
        return encoded.trimmed() if trim else encoded

    @classmethod
    def from_ints(cls, mantissas: Any, exponent: int) -> FixedPoint:
        """Wrap integer mantissas (a list, a numpy int array or Python ints of any size)."""
        return cls(_as_int_array(mantissas), exponent)

    def decode(self) -> np.ndarray:
        """value_i = m_i * 2**e as float64, correctly rounded (inf where it overflows)."""
        if self.mantissas.dtype == np.int64:
            with np.errstate(over="ignore"):
                return np.ldexp(self.mantissas.astype(np.float64), self.exponent)
        flat = [_int_to_float(int(m), self.exponent) for m in self.mantissas.ravel()]
        return np.array(flat, dtype=np.float64).reshape(self.mantissas.shape)

    def max_abs(self) -> int:
        """max |m_i| as a Python int (0 for an empty array)."""
        if self.mantissas.size == 0:
            return 0
        return int(np.max(np.abs(self.mantissas)))

    def tolist(self) -> list[int]:
        """The mantissas, flattened, as Python ints."""
        return [int(m) for m in self.mantissas.ravel().tolist()]

    def trimmed(self) -> FixedPoint:
        """The same values with the largest exponent that keeps every mantissa an integer."""
        shift = _common_trailing_zeros(self.mantissas)
        if shift == 0:
            return self
        if self.mantissas.dtype == np.int64:
            return FixedPoint(self.mantissas >> shift, self.exponent + shift)
        return FixedPoint(_as_int_array([m >> shift for m in self.tolist()]).reshape(self.mantissas.shape),
                          self.exponent + shift)

    def __len__(self) -> int:
        return len(self.mantissas)


def _as_int_array(values: Any) -> np.ndarray:
    """An int64 array when every value fits comfortably, else an object array of Python ints."""
    ints = [int(v) for v in np.asarray(values, dtype=object).ravel()]
    shape = np.shape(values)
    if all(-_INT64_SAFE < v < _INT64_SAFE for v in ints):
        return np.array(ints, dtype=np.int64).reshape(shape)
    array = np.empty(len(ints), dtype=object)
    array[:] = ints
    return array.reshape(shape)


def _exact_round(x: float, exponent: int) -> int:
    """round(x * 2**-exponent) computed exactly on the float's integer ratio (half away from zero)."""
    numerator, denominator = abs(x).as_integer_ratio()  # denominator is a power of two
    if exponent <= 0:
        numerator <<= -exponent
    else:
        denominator <<= exponent
    magnitude = (2 * numerator + denominator) // (2 * denominator)
    return -magnitude if x < 0 else magnitude


def _int_to_float(m: int, exponent: int) -> float:
    """m * 2**exponent rounded once to float64: keep 64 bits plus a sticky bit, then ldexp."""
    magnitude = abs(m)
    excess = magnitude.bit_length() - 64
    if excess > 0:
        sticky = 1 if magnitude & ((1 << excess) - 1) else 0
        magnitude = (magnitude >> excess) | sticky
        exponent += excess
    try:
        value = math.ldexp(float(magnitude), exponent)
    except OverflowError:
        value = math.inf
    return -value if m < 0 else value


def _common_trailing_zeros(mantissas: np.ndarray) -> int:
    """The number of trailing zero bits shared by all non-zero mantissas (0 if all are zero)."""
    if mantissas.dtype == np.int64:
        combined = int(np.bitwise_or.reduce(np.abs(mantissas).ravel())) if mantissas.size else 0
    else:
        combined = 0
        for m in mantissas.ravel().tolist():
            combined |= abs(int(m))
    if combined == 0:
        return 0
    return (combined & -combined).bit_length() - 1
