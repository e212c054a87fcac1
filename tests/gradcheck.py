"""The one finite-difference gradient check that every layer's and loss's tests use."""

import numpy as np

from npconvnet.rng import manual_seed


def numerical_gradient(function, array, eps=1e-6):
    """Central differences ``(f(a + eps) - f(a - eps)) / 2 eps`` of a scalar ``function()``
    with respect to every entry of ``array``, which is perturbed in place and restored."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        original = array[index]
        array[index] = original + eps
        plus = function()
        array[index] = original - eps
        minus = function()
        array[index] = original
        grad[index] = (plus - minus) / (2 * eps)
    return grad


def check_layer_gradients(layer, x, seed=0, rtol=1e-5, atol=1e-7):
    """Compare ``layer.backward`` with finite differences, in float64, for the input and for
    every parameter, using the scalar ``L = sum(forward(x) * G)`` with a random ``G``.

    The global generator is reseeded before each forward, so stochastic layers (dropout)
    draw the same mask every time.
    """
    layer.astype(np.float64)
    x = np.array(x, dtype=np.float64)

    def forward():
        manual_seed(seed)
        return layer.forward(x)

    upstream = np.random.default_rng(seed).standard_normal(forward().shape)
    forward()
    grad_input = layer.backward(upstream)
    analytic = {name: p.grad.copy() for name, p in layer.named_parameters()}

    def loss():
        return float(np.sum(forward() * upstream))

    np.testing.assert_allclose(grad_input, numerical_gradient(loss, x), rtol=rtol, atol=atol,
                               err_msg=f"input gradient of {layer!r}")
    for name, parameter in layer.named_parameters():
        np.testing.assert_allclose(analytic[name], numerical_gradient(loss, parameter.data),
                                   rtol=rtol, atol=atol, err_msg=f"gradient of {name} in {layer!r}")


def check_loss_gradient(loss_fn, output, target, rtol=1e-5, atol=1e-8):
    """Compare ``loss_fn.backward()`` with finite differences of ``loss_fn(output, target)``."""
    output = np.array(output, dtype=np.float64)
    loss_fn(output, target)
    analytic = loss_fn.backward()
    numeric = numerical_gradient(lambda: loss_fn(output, target), output)
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol)
