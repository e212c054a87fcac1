"""Batch normalization."""

import numpy as np

from .. import checks, parallel
from ..parameter import Parameter
from ..products import row_sums
from ..windows import as_matrix
from .base import Layer


class _BatchNorm(Layer):
    """Normalise each channel over the batch (and spatial) axes, then scale and shift.

    ``y = weight * x_hat + bias``, ``x_hat = (x - mean) / sqrt(var + eps)``.
    Training: batch statistics (biased variance), and running statistics updated as PyTorch
    does, ``running = (1 - momentum) * running + momentum * batch`` with the unbiased variance.
    Evaluation: the running statistics.

    Backward in training mode, with ``g = weight * dL/dy`` and means over the ``m`` values of
    a channel (the statistics depend on x too)::

        dL/dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sqrt(var + eps)

    Synchronized over the ranks of a data-parallel run (``npconvnet.distributed``), when ``fit``
    sets ``process_group``: the batch is the union of the ranks' shards, and the means above
    are over all of it. The count and the per-channel sums are summed over the ranks, which
    gives the mean; then the sums of squares about that mean, which give the variance (the
    same two passes as on one process); the shards of one batch inside ``fit`` take the two
    sums in one exchange where the running mean is near (``_synchronized_statistics``).
    Backward sums ``sum(g)`` and ``sum(g * x_hat)`` likewise. The parameters' gradients stay
    this rank's part (the gradient all-reduce adds the parts).
    """

    samplewise = True
    buffer_names = ("running_mean", "running_var")
    input_ndims = ()
    layout = ""
    #: The ``npconvnet.distributed.Communicator`` whose ranks hold the rest of the batch, set
    #: by a distributed ``fit`` while it trains; None: this process's batch is the whole batch.
    process_group = None

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        owner = type(self).__name__
        self.num_features = checks.integer(owner, "num_features", num_features, at_least=1)
        self.eps = checks.number(owner, "eps", eps, greater_than=0)
        self.momentum = checks.number(owner, "momentum", momentum, at_least=0, at_most=1)
        self.weight = Parameter(np.ones(num_features, np.float32))
        self.bias = Parameter(np.zeros(num_features, np.float32))
        self.running_mean = np.zeros(num_features, np.float32)
        self.running_var = np.ones(num_features, np.float32)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x, self.input_ndims, self.num_features, self.layout)
        channel = (1, -1) + (1,) * (x.ndim - 2)             # broadcasts a (C,) vector over x
        if not self.training:
            return self._evaluate(x, channel)
        if self.process_group is not None:
            centered = self._workspace("centered", x.shape, x.dtype, lambda: np.empty_like(x))
            count, mean, var = self._synchronized_statistics(x, centered, channel)
        else:
            count = x.size // self.num_features
            if count < 2:
                raise ValueError(f"{self!r}: training needs more than one value per channel, got "
                                 f"input shape {x.shape} (use eval() for single samples)")
            centered = self._workspace("centered", x.shape, x.dtype, lambda: np.empty_like(x))

            def statistics(channels):
                mean = _channel_sum(x[:, channels]) / count
                part = np.subtract(x[:, channels], mean.reshape(channel), out=centered[:, channels])
                return mean, _channel_dot(part, part) / count
            # Each thread takes whole channels: the statistics are those of the whole batch.
            mean, var = (np.concatenate(parts) for parts in zip(*parallel.run(statistics, parallel.channel_parts(x))))
        self.running_mean = ((1 - self.momentum) * self.running_mean
                             + self.momentum * mean).astype(self.running_mean.dtype)
        self.running_var = ((1 - self.momentum) * self.running_var
                            + self.momentum * var * count / (count - 1)).astype(self.running_var.dtype)
        inv_std = (1 / np.sqrt(var + self.eps)).astype(x.dtype)
        # y = x_hat * weight + bias with x_hat = centered * inv_std, the two factors folded into one.
        out = np.empty_like(centered)
        parallel.channelwise(_scale_and_shift, centered, (self.weight.data * inv_std).reshape(channel),
                             self.bias.data.reshape(channel), out)
        self._remember(out, centered=centered, inv_std=inv_std, channel=channel, batch_statistics=True,
                       count=count)
        return out

    def _synchronized_statistics(self, x, centered, channel):
        """``(count, mean, var)`` of the whole batch, whose shards are on the ranks of
        ``process_group``, with ``centered = x - mean`` written for backward.

        Each exchange makes every rank wait for the slowest, so the statistics take one where
        they can (:meth:`_statistics_about_running_mean`); where they cannot, and over MPI,
        whose sums are not promised to be the same bits on every rank (the ranks must all
        choose alike), the two passes of one process (:meth:`_two_pass_statistics`)."""
        if getattr(self.process_group, "identical_sums", False):
            statistics = self._statistics_about_running_mean(x, centered, channel)
            if statistics is not None:
                return statistics
        return self._two_pass_statistics(x, centered, channel)

    def _statistics_about_running_mean(self, x, centered, channel):
        """``(count, mean, var)`` from one exchange of the sums of ``x - shift`` and of its
        squares about the running mean, the shift (every shard's layer holds the first shard's
        running mean at the start of a step: ``identical_sums`` says so too): ``mean = shift +
        offset``, ``var = mean of the squares - offset**2``. While the shift is within a
        standard deviation of the mean (``offset**2 <= var``) the subtraction loses at most a
        bit of float32; where it is not (the first steps, or data far from the running mean),
        or the squares overflowed, None."""
        size = self.num_features
        # A non-finite running mean (after a diverged batch) would make every sum non-finite.
        shift = np.nan_to_num(self.running_mean, nan=0.0, posinf=0.0, neginf=0.0).astype(x.dtype)

        def shifted_sums(channels):
            part = np.subtract(x[:, channels], shift[channels].reshape(channel), out=centered[:, channels])
            return _channel_sum(part), _channel_dot(part, part)
        # Far from the shift the squares may overflow: that only says to take the two passes.
        with np.errstate(over="ignore", invalid="ignore"):
            sums, squares = (np.concatenate(parts).astype(np.float64)
                             for parts in zip(*parallel.run(shifted_sums, parallel.channel_parts(x))))
            totals = self.process_group.allreduce_sum(np.concatenate([sums, squares, [x.size // size]]))
            count = self._whole_count(totals[-1], x)
            offset = totals[:size] / count
            var = totals[size:2 * size] / count - offset**2
            if not np.all((offset**2 <= var) & np.isfinite(var)):
                return None
        parallel.channelwise(np.subtract, centered, offset.astype(x.dtype).reshape(channel), centered)
        return count, (shift + offset).astype(x.dtype), var.astype(x.dtype)

    def _two_pass_statistics(self, x, centered, channel):
        """``(count, mean, var)`` as one process takes them: the sums, exchanged, give the
        mean; then the sums of squares about it, exchanged, the variance. The sums travel in
        float64, which holds the count exactly; on one rank the results are those of the
        one-process statistics bit for bit (a quotient rounded from float64 to float32 is the
        float32 quotient)."""
        parts = parallel.channel_parts(x)
        sums = np.concatenate(parallel.run(lambda channels: _channel_sum(x[:, channels]), parts))
        totals = self.process_group.allreduce_sum(np.append(sums.astype(np.float64),
                                                            x.size // self.num_features))
        count = self._whole_count(totals[-1], x)
        mean = (totals[:-1] / count).astype(x.dtype)

        def squares(channels):
            part = np.subtract(x[:, channels], mean[channels].reshape(channel), out=centered[:, channels])
            return _channel_dot(part, part)
        squares = np.concatenate(parallel.run(squares, parts))
        var = (self.process_group.allreduce_sum(squares.astype(np.float64)) / count).astype(x.dtype)
        return count, mean, var

    def _whole_count(self, total, x):
        """The values per channel in the whole batch, ``total`` of the ranks' counts; more than one."""
        count = int(total)
        if count < 2:
            raise ValueError(f"{self!r}: training needs more than one value per channel in the whole "
                             f"batch, got {count} (this rank's input shape {x.shape})")
        return count

    def _evaluate(self, x, channel):
        """With the running statistics the layer is one affine map per channel,
        ``y = x * scale + shift`` (two passes over x). Only x is kept: a backward pass, rare in
        evaluation, recomputes x_hat from it."""
        inv_std = (1 / np.sqrt(self.running_var + self.eps)).astype(x.dtype)
        scale = self.weight.data * inv_std
        shift = self.bias.data - self.running_mean * scale
        out = np.empty_like(x)
        parallel.channelwise(_scale_and_shift, x, scale.reshape(channel).astype(x.dtype),
                             shift.reshape(channel).astype(x.dtype), out)
        self._remember(out, x=x, mean=self.running_mean, inv_std=inv_std,
                       channel=channel, batch_statistics=False)
        return out

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        saved = self._recall(grad_output)
        channel = saved.channel
        if saved.batch_statistics:
            centered = saved.centered
        else:
            centered = saved.x - saved.mean.reshape(channel).astype(saved.x.dtype)
        # x_hat = centered * inv_std: its factor is applied to the per-channel sums, not to x.
        sums = parallel.run(lambda channels: (_channel_sum(grad_output[:, channels]),
                                              _channel_dot(grad_output[:, channels], centered[:, channels])),
                            parallel.channel_parts(grad_output))
        self.bias.grad, self.weight.grad = (np.concatenate(parts) for parts in zip(*sums))
        self.weight.grad *= saved.inv_std
        # dL/dx = weight / std * (g - mean(g) - x_hat * mean(g * x_hat)), one channel at a time;
        # the per-channel factors are folded together so that each pass touches x only once.
        scale = self.weight.data * saved.inv_std
        grad_input = np.empty_like(grad_output)
        if saved.batch_statistics:
            sum_g, sum_g_x_hat = self.bias.grad, self.weight.grad
            if self.process_group is not None:
                # The means are over the whole batch: its sums, from every rank.
                both = self.process_group.allreduce_sum(np.concatenate([sum_g, sum_g_x_hat]))
                sum_g, sum_g_x_hat = both[:self.num_features], both[self.num_features:]
            count = saved.count
            parallel.channelwise(_input_gradient, grad_output, centered, scale.reshape(channel),
                                 (scale * saved.inv_std * sum_g_x_hat / count).reshape(channel),
                                 (scale * sum_g / count).reshape(channel), grad_input)
        else:
            parallel.channelwise(np.multiply, grad_output, scale.reshape(channel), grad_input)
        return grad_input

    def get_config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}


class BatchNorm2D(_BatchNorm):
    """Batch normalization of images: ``(N, C, H, W) -> (N, C, H, W)``, statistics per channel
    (over N, H and W), as PyTorch's ``BatchNorm2d``: ``y = weight * (x - mean) / sqrt(var + eps)
    + bias``, with the batch's statistics in training and the running ones in evaluation (the
    updates and the backward pass: ``_BatchNorm``).

    Args:
        num_features: C, the channels (features) of the input, an int >= 1.
        eps: added to the variance before the square root, a number > 0; default 1e-5.
        momentum: the weight of each batch in the running statistics, in [0, 1]; default 0.1
            (PyTorch's convention: Keras's ``momentum=0.99`` is ``momentum=0.01`` here).

    Attributes:
        weight, bias: Parameters of shape ``(C,)``, starting at 1 and 0.
        running_mean, running_var: ``(C,)`` arrays, starting at 0 and 1, saved with the model.

    Shape:
        - Input: ``(N, C, H, W)``, floating point.
        - Output: ``(N, C, H, W)``, the input's shape.

    Example::

        >>> norm = BatchNorm2D(2)
        >>> x = np.zeros((2, 2, 3, 3))
        >>> x[:, 1] = 4.0                                   # channel 1 holds 4 and 6, channel 0 0 and 2
        >>> x[1] += 2.0
        >>> y = norm.forward(x)
        >>> y.mean(axis=(0, 2, 3)), y.std(axis=(0, 2, 3)).round(4)
        (array([0., 0.]), array([1., 1.]))
        >>> norm.running_mean                               # 0.9 * 0 + 0.1 * the batch means
        array([0.1, 0.5], dtype=float32)
    """

    input_ndims = (4,)
    layout = "(N, C, H, W)"


class BatchNorm1D(_BatchNorm):
    """Batch normalization of features: ``(N, C)`` or ``(N, C, L)``, statistics per feature
    (over N and L), as PyTorch's ``BatchNorm1d``: ``y = weight * (x - mean) / sqrt(var + eps)
    + bias``, with the batch's statistics in training and the running ones in evaluation (the
    updates and the backward pass: ``_BatchNorm``).

    Args:
        num_features: C, the channels (features) of the input, an int >= 1.
        eps: added to the variance before the square root, a number > 0; default 1e-5.
        momentum: the weight of each batch in the running statistics, in [0, 1]; default 0.1
            (PyTorch's convention: Keras's ``momentum=0.99`` is ``momentum=0.01`` here).

    Attributes:
        weight, bias: Parameters of shape ``(C,)``, starting at 1 and 0.
        running_mean, running_var: ``(C,)`` arrays, starting at 0 and 1, saved with the model.

    Shape:
        - Input: ``(N, C)`` or ``(N, C, L)``, floating point.
        - Output: the input's shape.

    Example::

        >>> norm = BatchNorm1D(3)
        >>> y = norm.forward(np.array([[1.0, 10.0, -2.0], [3.0, 30.0, 2.0]]))
        >>> y.round(4)
        array([[-1., -1., -1.],
               [ 1.,  1.,  1.]])
        >>> norm.running_var.round(4)                       # 0.9 * 1 + 0.1 * the unbiased variances
        array([ 1.1, 20.9,  1.7], dtype=float32)
    """

    input_ndims = (2, 3)
    layout = "(N, C) or (N, C, L)"


def _scale_and_shift(x, scale, shift, out):
    np.multiply(x, scale, out=out)
    out += shift


def _input_gradient(grad_output, centered, scale, centered_factor, shift, out):
    """``out = grad_output * scale - centered * centered_factor - shift``, with ``centered``
    (not needed after this) taking its product in place."""
    np.multiply(grad_output, scale, out=out)
    out -= np.multiply(centered, centered_factor, out=centered)
    out -= shift


def _channel_rows(x):
    """``(C, m)``: one row per channel holding its ``m`` values (a view of a batch-last batch)."""
    return as_matrix(x) if x.ndim == 4 else np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)


def _channel_sum(x):
    """``sum over every axis but 1 of x``."""
    return row_sums(_channel_rows(x))


def _channel_dot(a, b):
    """``sum over every axis but 1 of a * b``: one dot product per channel, without the
    product array."""
    return np.matmul(_channel_rows(a)[:, None, :], _channel_rows(b)[:, :, None]).reshape(-1)
