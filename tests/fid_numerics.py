"""How exactly FID's eigenvalue path can be computed when a covariance is singular: the tolerance tests use.

``frechet_distance`` takes Tr sqrt(S1 S2) as the sum of sqrt(eigenvalues) of S1^1/2 S2 S1^1/2. With fewer images
than dimensions that matrix has d - r eigenvalues that are exactly 0 (r: its rank). ``eigh`` is backward stable:
it returns the eigenvalues of a matrix within about d * eps * lambda_max of the true one, so a zero comes out as
round-off of that size, of either sign, depending on the BLAS/LAPACK build and the CPU. Clipped at 0, a positive
one adds sqrt(d * eps * lambda_max) to the trace: the square root turns a 1e-16 round-off into a 1e-8 error.
Hence a singular FID is exact only to about 2 (d - r) sqrt(d eps lambda_max), on any machine; the nuclear-norm
path (``fid_of`` with features, an SVD without square roots of round-off) is exact to about d * eps.
"""

from __future__ import annotations

import numpy as np

from dcdgan.metrics.fid import psd_sqrt


def singular_fid_tolerance(sigma1: np.ndarray, sigma2: np.ndarray, rank: int) -> float:
    """Absolute bound on the round-off of ``frechet_distance`` for covariances whose product has ``rank``."""
    root = psd_sqrt(sigma1)
    largest = float(np.linalg.eigvalsh(root @ sigma2 @ root).max())
    d = len(sigma1)
    return 2 * (d - rank) * float(np.sqrt(d * np.finfo(np.float64).eps * largest))
