"""The finite-difference stencils: the gradient and its adjoint are adjoint (dot test)."""

import numpy as np
import pytest

from bigxanes.kernels.stencils import gradient, gradient_adjoint, laplacian


@pytest.mark.parametrize("shape", [(3, 17, 12), (2, 7, 9, 5), (2, 1, 6), (1, 4, 1, 3)])
def test_gradient_adjoint_dot(shape):
    """⟨∇x, y⟩ = ⟨x, ∇ᵀy⟩ to round-off for arbitrary x and y (2-D and 3-D, size-1 axes)."""
    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    nd = len(shape) - 1
    x = rng.standard_normal(shape)
    y = rng.standard_normal((nd,) + shape)
    lhs = float(np.sum(gradient(x, nd) * y))
    rhs = float(np.sum(x * gradient_adjoint(y, nd)))
    scale = float(np.sqrt(np.sum(gradient(x, nd) ** 2) * np.sum(y * y))) + 1e-300
    assert abs(lhs - rhs) <= 1e-12 * scale


@pytest.mark.parametrize("shape", [(2, 9, 11), (1, 5, 6, 7)])
def test_laplacian_is_minus_adjoint_of_gradient(shape):
    x = np.random.default_rng(3).standard_normal(shape)
    nd = len(shape) - 1
    np.testing.assert_allclose(
        laplacian(x, nd), -gradient_adjoint(gradient(x, nd), nd), rtol=0, atol=1e-12
    )
